"""Newsroom on 5 real XSum articles with the tiny model: outputs, resumability, unreadable inputs."""

from __future__ import annotations

import json

import pytest

from weaver.apps.newsroom import read_articles, run_newsroom
from weaver.apps.source import LocalSource
from weaver.safety import load_policy


class CountingBackend:
    """Wraps a backend and counts generate calls (and prompts) so re-runs can be checked."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def generate(self, records, task, params):
        self.calls += 1
        return self.inner.generate(records, task, params)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return LocalSource(str(tiny_model_dir))


@pytest.fixture
def articles(tmp_path, shared_data):
    rows = [json.loads(x) for x in (shared_data / "news_summ_xsum" / "test.jsonl").read_text().splitlines()[:5]]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, row in enumerate(rows):
        # short articles keep the tiny model fast; the text is real
        (folder / f"{i:02d}-{row['id']}.txt").write_text(" ".join(row["input"].split()[:60]), encoding="utf-8")
    return folder


def test_all_outputs_written_and_rerun_recomputes_nothing(backend, articles, tmp_path):
    out = tmp_path / "out"
    policy = load_policy(audit_log="off")
    counting = CountingBackend(backend)
    first = run_newsroom(counting, articles, out, n_headlines=2, policy=policy, max_new_tokens=8, progress=False)
    assert len(first.done) == 5 and not first.failed and not first.skipped
    assert counting.calls == 5 * 3  # summary, headline, sampled alternatives per article
    files = sorted((out / "articles").glob("*.json"))
    assert len(files) == 5
    for f in files:
        entry = json.loads(f.read_text())
        assert isinstance(entry["summary"], str) and isinstance(entry["headline"], str)
        assert len(entry["alternatives"]) <= 2
        assert len(set(entry["alternatives"])) == len(entry["alternatives"])
    digest = (out / "digest.md").read_text()
    ids = [a.id for a in read_articles(articles)]
    positions = [digest.index(i) for i in ids]
    assert positions == sorted(positions)  # input order
    html_page = (out / "digest.html").read_text()
    assert html_page.startswith("<!doctype html>") and "<script" not in html_page

    counting.calls = 0
    second = run_newsroom(counting, articles, out, n_headlines=2, policy=policy, max_new_tokens=8, progress=False)
    assert counting.calls == 0 and sorted(second.skipped) == sorted(ids) and not second.done
    assert (out / "digest.md").read_text() == digest

    (articles / f"{ids[0]}.txt").write_text("A changed article about the harbour reopening.", encoding="utf-8")
    third = run_newsroom(counting, articles, out, n_headlines=2, policy=policy, max_new_tokens=8, progress=False)
    assert third.done == [ids[0]] and counting.calls == 3  # only the changed article is recomputed


def test_unreadable_files_are_reported_and_the_rest_finish(backend, articles, tmp_path):
    (articles / "03a-broken.txt").write_bytes(b"caf\xe9 au lait \xff\xfe")
    (articles / "x.txt").mkdir()
    result = run_newsroom(backend, articles, tmp_path / "out", n_headlines=0, policy=load_policy(audit_log="off"),
                          max_new_tokens=8, progress=False)
    assert len(result.done) == 5
    assert set(result.failed) == {"03a-broken", "x"}
    assert "UTF-8" in result.failed["03a-broken"] and "directory" in result.failed["x"]
    assert "03a-broken" in (tmp_path / "out" / "digest.md").read_text()


def test_jsonl_input_and_html_escaping(backend, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"id": "n1", "text": "<script>alert(1)</script> Council votes on the budget."}) + "\n"
                   + "not json\n", encoding="utf-8")
    result = run_newsroom(backend, src, tmp_path / "out", n_headlines=0, policy=load_policy(audit_log="off"),
                          max_new_tokens=8, progress=False)
    assert result.done == ["n1"] and list(result.failed) == ["line-2"]
    entry = json.loads((tmp_path / "out" / "articles" / "n1.json").read_text())
    assert entry["alternatives"] == []
    page = (tmp_path / "out" / "digest.html").read_text()
    assert "<script>" not in page and "a.jsonl:2" in page


def test_pii_in_articles_is_redacted_before_the_model(tmp_path):
    seen = []

    class Echo:
        def generate(self, records, task, params):
            seen.extend(r.input for r in records)
            return [[r.input[:40]] * params.n for r in records]

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("Reporter ann@example.com says the bridge is closed; call 415-555-0134.")
    run_newsroom(Echo(), src, tmp_path / "out", n_headlines=1, policy=load_policy(audit_log="off"), progress=False)
    assert seen and all("ann@example.com" not in s and "[EMAIL]" in s for s in seen)
    assert "ann@example.com" not in (tmp_path / "out" / "digest.md").read_text()


def test_digest_grounds_each_summary_sentence(tmp_path):
    class Fixed:
        def generate(self, records, task, params):
            text = ("Schools in Leeds closed early after heavy rain. The mayor won 5 medals in Paris."
                    if task == "summarize" else "Rain closes schools")
            return [[text] * params.n for _ in records]

    src = tmp_path / "a.jsonl"
    article = ("Heavy rain flooded the centre of Leeds on Friday. Schools closed early and 300 homes lost power. "
               "The council said repairs would take a week.")
    src.write_text(json.dumps({"id": "leeds", "text": article}) + "\n", encoding="utf-8")
    run_newsroom(Fixed(), src, tmp_path / "out", n_headlines=0, policy=load_policy(audit_log="off"), progress=False)
    g = json.loads((tmp_path / "out" / "articles" / "leeds.json").read_text())["grounding"]
    first, second = g["sentences"]
    assert first["supported"] and not second["supported"] and g["faithfulness"] == 0.5
    assert first["sources"][0]["text"] in article and set(second["unsupported_entities"]) >= {"5", "Paris"}
    md = (tmp_path / "out" / "digest.md").read_text()
    assert "**UNSUPPORTED**" in md and "not in the article: " in md
    page = (tmp_path / "out" / "digest.html").read_text()
    assert "class=unsup" in page and "Sources of each summary sentence (50% supported)" in page
    run_newsroom(Fixed(), src, tmp_path / "off", n_headlines=0, policy=load_policy(audit_log="off"), progress=False,
                 grounding=False)
    assert "grounding" not in json.loads((tmp_path / "off" / "articles" / "leeds.json").read_text())
