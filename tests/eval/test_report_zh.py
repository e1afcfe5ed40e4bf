"""A Chinese run's report: both ROUGE units and both character BLEU-4 variants side by side, labels and
headings in Chinese (markdown and HTML), the plain-text table still English with the units named."""

from __future__ import annotations

from weaver.config import EvalConfig
from weaver.eval import metrics as M
from weaver.eval.report import text_table, to_html, to_markdown
from weaver.eval.scoring import compare, score_outputs

PREDS = ["我爱北京天安门", "今天天气很好", "这款上衣简约大方"]
REFS = [["我爱北京"], ["今天的天气不错"], ["这款上衣简约时尚"]]
BASE = ["北京", "天气", "上衣"]


def _data(lang: str = "zh", zh_tokens: str = "char") -> dict:
    cfg = EvalConfig(semantic=False, zh_tokens=zh_tokens)
    systems = {"base": {"scores": score_outputs({"outputs": BASE}, REFS, "zh", cfg)},
               "tuned": {"scores": score_outputs({"outputs": PREDS}, REFS, "zh", cfg)}}
    return {"model": "runs/x", "base": "gemma3-270m", "task": "headline", "lang": "zh", "n": 3,
            "metrics": compare(systems, "zh", 50), "notes": ["说明一"],
            "speed": {"base": {"tokens_per_s": 5.0, "new_tokens": 10, "generate_s": 2.0, "load_s": 1.0,
                               "backend": "transformers"}},
            "decoding": {}, "config": {"data": {"lang": lang}, "eval": {"zh_tokens": zh_tokens}}, "versions": {}}


def test_sentence_bleu4_is_nltk_on_characters_with_smoothing_3():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    got = M.bleu4_sentence(["我爱北京天安门", ""], [["我爱北京", "我爱天安门"], ["x"]])
    want = 100 * sentence_bleu([list("我爱北京"), list("我爱天安门")], list("我爱北京天安门"),
                               smoothing_function=SmoothingFunction().method3)
    assert abs(got[0] - want) < 1e-9 and got[1] == 0.0
    assert M.bleu4_sentence(["完全相同的句子"], [["完全相同的句子"]]) == [100.0]


def test_zh_scores_have_both_rouge_units_and_both_bleu_kinds():
    data = _data()
    m = data["metrics"]
    assert {"rougeL", "rougeL_word", "bleu", "bleu4_sentence"} <= set(m)
    assert m["rougeL"]["tuned"] != m["rougeL_word"]["tuned"]
    en = score_outputs({"outputs": ["a b"]}, [["a b"]], "en", EvalConfig(semantic=False))
    assert "bleu4_sentence" not in en


def test_markdown_and_html_are_in_chinese_for_a_zh_run():
    data = _data()
    md = to_markdown(data, [{"id": "1", "input": "输入", "references": ["参考"], "base": "甲", "tuned": "乙"}], 1)
    wanted = ["# 评测", "| 指标 | 基座模型 | 微调后 |", "ROUGE-L（字）", "ROUGE-L（jieba 分词）",
              "BLEU-4（字，语料级）", "BLEU-4（字，逐句平均）", "## 速度", "## 说明", "## 示例",
              "**输入**", "**参考**", "**微调后**", "在 3 个留出样本上", "每秒 5.0 个新 token"]
    for text in wanted:
        assert text in md, text
    assert "## Speed" not in md and "| metric |" not in md
    page = to_html(data, [], 1, [])
    assert "<html lang='zh'>" in page and "<th>指标</th>" in page and "ROUGE-L（jieba 分词）" in page
    assert "<h2>速度</h2>" in page and "配置与版本" in page and "Configuration and versions" not in page


def test_word_unit_is_named_the_other_way_round():
    data = _data(zh_tokens="word")
    md = to_markdown(data, [], 0)
    assert "| ROUGE-L（jieba 分词） |" in md and "| ROUGE-L（字） |" in md
    assert data["metrics"]["rougeL_char"]["tuned"] != data["metrics"]["rougeL"]["tuned"]


def test_english_interface_for_an_en_run_with_chinese_metrics_and_the_text_table():
    data = _data(lang="en")
    md = to_markdown(data, [], 0)
    assert "## Speed" in md and "ROUGE-L (characters)" in md and "ROUGE-L (jieba words)" in md
    assert "BLEU-4 (corpus, characters)" in md and "BLEU-4 (sentence mean, characters)" in md
    table = text_table(_data())  # the terminal table stays English (CJK misaligns columns) but names units
    assert "ROUGE-L (characters)" in table and "tuned - base" in table
