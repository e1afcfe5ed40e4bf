"""The writer's studio in headless Chromium: every view driven as a writer would, and what lands in the store.

Two servers, one browser: the tiny random model as a tuned run beside its base (drafts really stream; blind
compare), and a scripted backend whose replies carry an XSS payload and a citation (newsroom, ad copy,
support, and the payload staying text everywhere). Skipped like test_page.py when chromium is absent.
"""

from __future__ import annotations

import itertools
import json
import re
import threading

import pytest

from weaver.apps.feedback import FeedbackStore
from weaver.generate.rows import Backend

from .conftest import live_server, wait_for
from .test_page import _wait, browser  # noqa: F401 - the module's browser fixture

KEY = "studio-page-key"
ARTICLE = "Heavy rain closed every school in Leeds on Monday, the council said, and buses stopped at noon."
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
STORIES = ["schools shut as rivers rise", "council cancels monday buses", "families wait for news at noon",
           "teachers plan lessons online", "roads flood across the north", "shops close their doors early"]
QUESTION = "I forgot my Gmail password and lost the phone number tied to it"


class ScriptedBackend(Backend):
    """Replies '<TUNED|BASE> N: <story> XSS [faq-1665].' word by word (N counts replies; stories differ)."""

    counter = itertools.count(1)
    lock = threading.Lock()

    def __init__(self, tokenizer):
        super().__init__(None)
        self.tok = tokenizer

    def plan(self):
        self.model_ids, self.default_model = {"tuned": "tuned", "base": None}, "tuned"

    def load(self):
        self.tokenizer, self.context_window = self.tok, 4096

    def generate(self, rows, params, adapter):
        for row in rows:
            with self.lock:
                k = next(self.counter)
            who = "TUNED" if adapter else "BASE"
            reply = f"{who} {k}: {STORIES[k % len(STORIES)]} {XSS} [faq-1665]."
            for piece in re.findall(r"\S+\s*", reply):
                row.text += piece
                row.completion_tokens += 1
                row.on_text(piece)
            row.finish_reason = "stop"


@pytest.fixture(scope="module")
def tiny(runs, tmp_path_factory):
    from weaver.serve.settings import ServeSettings

    db = tmp_path_factory.mktemp("studio-tiny") / "studio.sqlite"
    settings = ServeSettings(model=str(runs["headline"]), api_key=KEY, threads=1, studio_db=str(db), max_n=4)
    with live_server(settings) as url:
        yield url, db


@pytest.fixture(scope="module")
def scripted(tokenizer, tmp_path_factory):
    from pathlib import Path

    from weaver.apps.retrieval import build_index
    from weaver.serve.settings import ServeSettings

    root = tmp_path_factory.mktemp("studio-scripted")
    build_index(Path(__file__).parents[1] / "apps" / "fixtures" / "support_faq.jsonl", root / "kb.sqlite")
    settings = ServeSettings(model="tuned", api_key=KEY, studio_db=str(root / "studio.sqlite"),
                             support_index=str(root / "kb.sqlite"))
    with live_server(settings, ScriptedBackend(tokenizer)) as url:
        yield url, root / "studio.sqlite"


def _css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _open(driver, url, view="write"):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    _css(driver, "#api-key")[0].send_keys(KEY + Keys.TAB)
    _wait(driver, lambda d: len(Select(_css(d, "#model")[0]).options) >= 2)
    if view != "write":
        _css(driver, f"#tab-{view}")[0].click()


def _set(driver, css, value):
    el = _css(driver, css)[0]
    el.clear()
    el.send_keys(value)


def _store_request(db, predicate, seconds=30):
    """The newest stored request that satisfies predicate (polled: the page records asynchronously)."""
    found = []

    def check():
        store = FeedbackStore(db, create=False) if db.exists() else None
        found[:] = [r for r in (store.history(20) if store else []) if predicate(r)]
        return bool(found)

    assert wait_for(check, seconds), f"the page did not record the expected request; store: {found or check()}"
    return found[0]


def _write(driver, n, blind=False):
    from selenium.webdriver.support.ui import Select

    Select(_css(driver, "#model")[0]).select_by_value("headline")
    Select(_css(driver, "#task")[0]).select_by_value("headline")
    _set(driver, "#field-input", ARTICLE)
    _set(driver, "#n", str(n))
    _set(driver, "#max-tokens", "8")
    if _css(driver, "#blind")[0].is_selected() != blind:
        _css(driver, "#blind")[0].click()
    _css(driver, "#write")[0].click()
    _wait(driver, lambda d: not _css(d, "#write")[0].get_attribute("disabled")
          and "writing" not in d.find_element("id", "candidates").text)


def test_write_choose_edit_regenerate_and_export(browser, tiny, tmp_path):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    from weaver.apps.feedback import export
    from weaver.data.preferences import read_pairs

    url, db = tiny
    _open(browser, url)
    _write(browser, 2)
    cards = _css(browser, "#candidates .candidate")
    assert len(cards) == 2 and all(int(c.find_element("css selector", ".text").get_attribute("data-chunks")) > 1
                                   for c in cards)
    req = _store_request(db, lambda r: r["fields"].get("input") == ARTICLE and not r["blind"])
    texts = [c.find_element("css selector", ".text").text for c in cards]
    assert [d["text"].strip() for d in req["drafts"]] == [t.strip() for t in texts]
    cards[1].find_element("css selector", ".choose").click()
    box = cards[1].find_element("css selector", ".text")
    box.click()
    box.send_keys(Keys.CONTROL, Keys.END)
    box.send_keys(" EDITED")
    _css(browser, "#field-input")[0].click()  # leaving the draft saves the edit
    req = _store_request(db, lambda r: r["id"] == req["id"] and "EDITED" in (r["final"] or ""))
    assert req["chosen"] == 1 and req["edited"]
    assert cards[1].get_attribute("class").count("chosen") and "saved" in cards[1].text
    cards[0].find_element("css selector", ".down").click()
    cards[0].find_element("css selector", ".regen").click()
    req = _store_request(db, lambda r: r["id"] == req["id"] and len(r["drafts"]) == 3 and r["thumbs_down"] == [0])
    export(FeedbackStore(db, create=False), tmp_path)
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert {p.rejected for p in pairs} >= {req["drafts"][0]["text"]} and all("EDITED" in p.chosen
                                                                              for p in pairs)


def test_blind_compare_hides_the_models_and_records_the_winner(browser, tiny, tiny_model_dir):  # noqa: F811
    from weaver.apps.feedback import stats

    url, db = tiny
    _open(browser, url)
    _write(browser, 2, blind=True)
    cards = _css(browser, "#candidates .candidate")
    assert len(cards) == 2 and all(not c.find_element("css selector", ".who").text for c in cards)
    assert "headline" not in _css(browser, "#candidates")[0].text
    req = _store_request(db, lambda r: r["blind"])
    assert sorted((d["model"], d["is_base"]) for d in req["drafts"]) == [("headline", False),
                                                                          (tiny_model_dir.name, True)]
    cards[0].find_element("css selector", ".choose").click()
    req = _store_request(db, lambda r: r["id"] == req["id"] and r["chosen"] == 0)
    shown = cards[0].find_element("css selector", ".who").text
    assert req["drafts"][0]["model"] in shown  # revealed after the pick: the model the store says wrote it
    blind = stats(FeedbackStore(db, create=False))["blind"]
    assert blind["compared"] == 1 and blind["tuned_wins"] == int(not req["drafts"][0]["is_base"])


def test_history_reopens_work_and_the_chinese_interface(browser, tiny):  # noqa: F811
    url, db = tiny
    _open(browser, url, "history")
    items = _wait(browser, lambda d: _css(d, "#history-list .history-item"))
    assert len(items) >= 2 and "Write · headline" in items[0].text
    newest = FeedbackStore(db, create=False).history(1)[0]
    items[0].find_element("css selector", "button.open").click()
    _wait(browser, lambda d: _css(d, "#view-write")[0].is_displayed())
    shown = [c.text for c in _css(browser, "#candidates .candidate .text")]
    assert [s.strip() for s in shown] == [d["text"].strip() for d in newest["drafts"]]
    _css(browser, "#lang")[0].click()
    assert browser.find_element("tag name", "html").get_attribute("lang") == "zh-CN"
    assert _css(browser, "#tab-write")[0].text == "写作" and _css(browser, "#write")[0].text == "生成"
    assert _css(browser, "#candidates .choose")[0].get_attribute("aria-label") == "选用草稿 1"
    assert browser.title == "Weaver 写作工作台"
    browser.refresh()  # the choice is remembered
    _wait(browser, lambda d: _css(d, "#tab-history")[0].text == "历史")
    _css(browser, "#lang")[0].click()
    assert _css(browser, "#tab-write")[0].text == "Write"


def _no_injection(driver):
    assert driver.execute_script("return window.__pwned === undefined")
    assert not _css(driver, "main img") and not _css(driver, "main script")


def test_scripted_write_stays_text_and_the_apps(browser, scripted, tmp_path):  # noqa: F811
    from selenium.webdriver.support.ui import Select

    url, db = scripted
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    _open(browser, url)
    Select(_css(browser, "#task")[0]).select_by_value("continue")
    _set(browser, "#field-input", "Once upon a time")
    _css(browser, "#write")[0].click()
    _wait(browser, lambda d: len(_css(d, "#candidates .candidate")) == 3 and "writing" not in
          d.find_element("id", "candidates").text)
    assert all(XSS in c.text for c in _css(browser, "#candidates .candidate .text"))
    _no_injection(browser)

    # Newsroom: a pasted and an uploaded (.jsonl) article, one card each, a headline picked, the digest downloaded
    _css(browser, "#tab-newsroom")[0].click()
    _set(browser, "#news-paste", ARTICLE)
    upload = tmp_path / "articles.jsonl"
    upload.write_text(json.dumps({"id": "york", "text": "Snow closed the roads around York on Tuesday."}) + "\n")
    _css(browser, "#news-files")[0].send_keys(str(upload))
    _set(browser, "#news-n", "1")
    _css(browser, "#news-run")[0].click()
    _wait(browser, lambda d: len(_css(d, "#news-results .news")) == 2 and _css(d, "#news-downloads")[0].is_displayed())
    radios = _css(browser, "#news-results .news")[0].find_elements("css selector", "input[type=radio]")
    assert len(radios) == 2
    radios[1].click()
    req = _store_request(db, lambda r: r["view"] == "newsroom" and r["chosen"] == 1)
    assert req["task"] == "headline" and req["fields"]["summary"]
    assert {r["fields"]["id"] for r in FeedbackStore(db, create=False).history(5, "newsroom")} == {"pasted-1", "york"}
    _css(browser, "#news-md")[0].click()
    assert wait_for(lambda: (tmp_path / "digest.md").exists(), 20)
    digest = (tmp_path / "digest.md").read_text()
    assert digest.startswith("# News digest") and digest.count("\n## ") == 2
    _no_injection(browser)

    # Ad copy: ranked candidates with their score parts; a pick is kept
    _css(browser, "#tab-adcopy")[0].click()
    _set(browser, "#ad-product", "wool socks")
    _set(browser, "#ad-keywords", "warm, wool")
    _set(browser, "#ad-n", "2")
    _css(browser, "#ad-run")[0].click()
    cards = _wait(browser, lambda d: _css(d, "#ad-results .candidate"))
    assert "#1" in cards[0].text and "score" in cards[0].find_element("css selector", ".parts").text
    cards[0].find_element("css selector", ".choose").click()
    req = _store_request(db, lambda r: r["view"] == "adcopy" and r["chosen"] == 0)
    assert req["fields"] == {"product": "wool socks", "keywords": "warm, wool"}
    _no_injection(browser)


def test_support_cites_opens_the_passage_and_keeps_the_sent_text(browser, scripted):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    url, db = scripted
    _open(browser, url, "support")
    assert _css(browser, "#tab-support")[0].is_displayed()
    _set(browser, "#sup-question", QUESTION)
    _css(browser, "#sup-run")[0].click()
    link = _wait(browser, lambda d: _css(d, "#sup-citations a.citation"))[0]
    assert link.text == "[faq-1665]" and XSS in _css(browser, "#sup-reply")[0].text
    link.click()
    dialog = _css(browser, "#passage")[0]
    _wait(browser, lambda d: dialog.is_displayed())
    assert "faq-1665" in _css(browser, "#passage-title")[0].text and _css(browser, "#passage-text")[0].text
    dialog.find_element("css selector", "button").click()
    reply = _css(browser, "#sup-reply")[0]
    reply.click()
    reply.send_keys(Keys.CONTROL, Keys.END)
    reply.send_keys(" Kind regards, Ann")
    _css(browser, "#sup-send")[0].click()
    req = _store_request(db, lambda r: r["view"] == "support" and (r["final"] or "").endswith("Kind regards, Ann"))
    assert req["task"] == "support_reply" and req["fields"] == {"input": QUESTION}
    assert any(e["kind"] == "sent" for e in req["events"])
    _no_injection(browser)
    # an off-topic message is handed over, shown clearly
    _set(browser, "#sup-question", "What is the boiling point of tungsten in kelvin?")
    _css(browser, "#sup-run")[0].click()
    _wait(browser, lambda d: _css(d, "#sup-handed")[0].is_displayed())
    assert "human" in _css(browser, "#sup-reply")[0].text


def test_sources_panel_marks_the_input_sentences_behind_a_draft_sentence(browser, tiny):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains

    url, _ = tiny
    _open(browser, url)
    _write(browser, 1)
    card = _css(browser, "#candidates .candidate")[0]
    card.find_element("css selector", ".sources").click()
    _wait(browser, lambda d: _css(d, "#candidates .explain .sent"))
    sentence = _css(browser, "#candidates .explain .sent")[0]
    assert not _css(browser, "#candidates .explain mark")
    ActionChains(browser).move_to_element(sentence).perform()  # pointing at a sentence marks its sources
    _wait(browser, lambda d: _css(d, "#candidates .explain mark"))
    marked = [m.text for m in _css(browser, "#candidates .explain mark")]
    assert marked and all(m.strip() and m.strip() in ARTICLE for m in marked)
    ActionChains(browser).move_to_element(card.find_element("css selector", ".label")).perform()
    _wait(browser, lambda d: not _css(d, "#candidates .explain mark"))
    assert card.find_element("css selector", ".sources").get_attribute("aria-expanded") == "true"
