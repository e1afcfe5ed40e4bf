"""The apps in Chinese: the newsroom digest's labels follow --lang zh, ad copy prompts and refusals are Chinese
for a Chinese request (no model: a fake text source returns fixed outputs)."""

from __future__ import annotations

from weaver.apps.adcopy import AdRequest, build_record
from weaver.apps.newsroom import run_newsroom
from weaver.safety import load_policy

ALTERNATIVES = ["暴雨今晚来袭", "市民出行注意安全", "气象台发布预警消息", "明天全市大雨"]
ARTICLE = "北京市气象台今天发布暴雨预警。预计今晚到明天，北京大部分地区有大到暴雨。市民出行请注意安全。"


class FakeSource:
    """Fixed Chinese texts: one summary, one headline, distinct sampled alternative headlines."""

    def __init__(self, lang: str):
        self.lang = lang

    def generate(self, records, task, params):
        if params.n > 1:
            return [ALTERNATIVES[: params.n] for _ in records]
        return [["北京发布暴雨预警" if task == "headline" else "北京今晚到明天有大到暴雨。"] for _ in records]


def _run(tmp_path, lang, grounding=False):
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text(ARTICLE, encoding="utf-8")
    (src / "b.txt").write_bytes(b"\xff\xfe broken")
    out = tmp_path / f"out-{lang}"
    run_newsroom(FakeSource(lang), src, out, n_headlines=2, policy=load_policy(audit_log="off"), progress=False,
                 grounding=grounding)
    return (out / "digest.md").read_text(encoding="utf-8"), (out / "digest.html").read_text(encoding="utf-8")


def test_newsroom_digest_in_chinese_follows_the_source_language(tmp_path):
    md, page = _run(tmp_path, "zh")
    assert md.startswith("# 新闻摘要汇编") and "备选标题：" in md and "## 未处理" in md
    assert "News digest" not in md and "Alternative headlines" not in md
    assert "<html lang=zh>" in page and "<title>新闻摘要汇编</title>" in page and "<h2>未处理</h2>" in page
    md_en, page_en = _run(tmp_path, "en")
    assert md_en.startswith("# News digest") and "Alternative headlines:" in md_en and "<html lang=en>" in page_en


def test_newsroom_grounding_labels_in_chinese(tmp_path):
    md, page = _run(tmp_path, "zh", grounding=True)
    assert "依据（摘要中" in md and ("有依据" in md or "无依据" in md)
    assert "摘要各句的出处" in page and "Sources of each summary sentence" not in page


def test_adcopy_prompt_labels_and_refusal_in_chinese():
    rec = build_record(AdRequest(product="连衣裙", audience="年轻女性", attributes="颜色#白色", lang="zh"))
    assert rec.input.splitlines()[:2] == ["商品: 连衣裙", "目标人群: 年轻女性"] and "颜色: 白色" in rec.input
    policy = load_policy(audit_log="off")
    decision = policy.check_prompt("我的电话是13812345678，请写广告", app="adcopy")
    assert "13812345678" not in decision.text  # PII redacted; a blocked Chinese request is refused in Chinese
    assert policy.terms_zh  # the shipped policy has Chinese terms
    refusal = policy.check_prompt(f"请写一段关于{policy.terms_zh[0]}的广告", app="adcopy")
    assert refusal.blocked and refusal.text.startswith("抱歉") and "屏蔽内容" in refusal.text
