"""The report's words in the reader's language: metric labels, table headers, verdicts and headings (en, zh).

    ui = report_lang(data)                  # "zh" when the run's data.lang is zh
    label("rougeL", data, ui)               # "ROUGE-L（字）" / "ROUGE-L (characters)"
    word("speed", ui)                       # "速度"

The interface language is the run's `data.lang` (the language its prompts and references are written in);
a report without a config falls back to the metric language. For a Chinese run the plain ROUGE rows carry
their unit (characters by default, jieba words with eval.zh_tokens=word) and the other unit's rows theirs,
so the two ROUGE variants can never be confused. Plots keep English labels (no CJK font is assumed).
"""

from __future__ import annotations

UNIT = {"char": ("characters", "字"), "word": ("jieba words", "jieba 分词")}
ZH_METRICS = {
    "bleu": "BLEU-4（字，语料级）", "bleu4_sentence": "BLEU-4（字，逐句平均）", "chrf": "chrF",
    "semantic": "语义相似度", "perplexity": "参考文本困惑度", "length_ratio": "长度比（生成/参考）",
    "distinct1": "Distinct-1", "distinct2": "Distinct-2", "repeat3": "重复三元组 %",
    "faithfulness": "有依据的句子 %（对照输入）", "invented": "含虚构数字/名称的句子 %",
}
WORDS = {
    "metric": "指标", "base": "基座模型", "tuned": "微调后", "tuned - base": "微调 - 基座", "95% CI": "95% 置信区间",
    "verdict": "结论", "score": "得分", "better": "更好", "worse": "更差", "no significant change": "无显著变化",
    "significantly higher": "显著升高", "significantly lower": "显著降低", "speed": "速度", "notes": "说明",
    "examples": "示例", "input": "输入", "reference": "参考", "before_after": "微调前后", "curves": "训练曲线",
    "side_by_side": "逐条对照", "config": "配置与版本", "evaluation": "评测", "unsupported": "输入不支持的句子",
    "not_in_input": "输入中没有", "none": "无",
}
EN_WORDS = {"speed": "Speed", "notes": "Notes", "examples": "Examples", "input": "Input", "reference": "Reference",
            "before_after": "Before / after", "curves": "Training curves", "side_by_side": "Side by side",
            "config": "Configuration and versions", "evaluation": "Evaluation",
            "unsupported": "unsupported by the input", "not_in_input": "not in the input", "none": "none"}


def report_lang(data: dict) -> str:
    """'zh' when the run's data.lang is zh (or, without a config, the metrics were Chinese), else 'en'."""
    lang = ((data.get("config") or {}).get("data") or {}).get("lang")
    return "zh" if (lang or data.get("lang")) == "zh" else "en"


def word(key: str, ui: str) -> str:
    """A fixed word of the report (header, verdict, heading) in the interface language."""
    if ui == "zh":
        return WORDS.get(key, key)
    return EN_WORDS.get(key, key)


def label(name: str, data: dict, ui: str) -> str:
    """A metric's row label: for Chinese metrics with the tokenisation unit, in the interface language."""
    m = data["metrics"][name]
    if data.get("lang") != "zh":
        return m["label"]
    main = ((data.get("config") or {}).get("eval") or {}).get("zh_tokens", "char")
    base, _, unit = name.partition("_")
    if base.startswith("rouge") and unit in ("", "char", "word"):
        en, zh = UNIT[unit or main]
        head = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}[base]
        return f"{head}（{zh}）" if ui == "zh" else f"{head} ({en})"
    if ui == "zh":
        return ZH_METRICS.get(name, m["label"])
    return "BLEU-4 (corpus, characters)" if name == "bleu" else m["label"]


def summary_zh(data: dict, groups: dict[str, list[str]]) -> str:
    """The one-line verdict in Chinese (groups: better/worse/other/same -> labels)."""
    n = data["n"]
    if not data["base"]:
        return f"{data['model']} 在 {n} 个样本上的得分（95% bootstrap 区间）；没有可对比的基座模型。"
    parts = [f"在 {n} 个留出样本上，微调 - 基座的配对 bootstrap 95% 置信区间：",
             f"显著更好：{'、'.join(groups['better']) or '无'}；", f"显著更差：{'、'.join(groups['worse']) or '无'}；"]
    if groups["other"]:
        parts.append(f"有显著变化（无优劣方向）：{'、'.join(groups['other'])}；")
    parts.append(f"无显著差异：{'、'.join(groups['same']) or '无'}。")
    return "".join(parts)
