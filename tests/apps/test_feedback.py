"""The studio's feedback store: atomic writes that survive kill -9, export to pairs/SFT files our readers load,
stats with a Wilson interval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from weaver.apps.feedback import Draft, FeedbackStore, export, stats, wilson
from weaver.cli import main
from weaver.errors import WeaverError


def _fill(store):
    a = store.add_request("headline", [Draft("Rain shuts schools", "news"), Draft("Weather news", "tiny", True)],
                          {"input": "Heavy rain closed schools in Leeds."}, model="news", blind=True)
    store.add_event(a, "choose", draft=0)
    store.add_event(a, "edit", draft=0, text="Rain shuts Leeds schools")
    b = store.add_request("headline", [Draft("Snow day", "news"), Draft("Snow closes roads", "tiny", True)],
                          {"input": "Snow closed roads."}, blind=True)
    store.add_event(b, "choose", draft=1)
    c = store.add_request("adcopy", [Draft("Warm socks", "ads"), Draft("Socks", "ads")],
                          {"product": "wool socks", "tone": "cosy"}, view="adcopy")
    store.add_event(c, "choose", draft=0)
    store.add_event(c, "thumbs_down", draft=1)
    store.add_request("headline", [Draft("Unpicked", "news")], {"input": "x"})  # no choice: nothing exported
    return a, b, c


def test_history_export_and_stats(tmp_path):
    store = FeedbackStore(tmp_path / "studio.sqlite")
    a, _, c = _fill(store)
    req = store.request(a)
    assert req["chosen"] == 0 and req["final"] == "Rain shuts Leeds schools" and req["edited"]
    assert store.request(c)["thumbs_down"] == [1] and len(store.history()) == 4
    result = export(store, tmp_path / "out")
    pairs = [json.loads(x) for x in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert result["pairs"] == 3 and result["sft"] == 1 and len(pairs) == 3
    assert pairs[0] == {"id": f"{a}-1", "instruction": "", "input": "Heavy rain closed schools in Leeds.",
                        "chosen": "Rain shuts Leeds schools", "rejected": "Weather news", "meta": {"task": "headline"}}
    assert pairs[2]["input"] == "product: wool socks\ntone: cosy" and pairs[2]["rejected"] == "Socks"
    assert sft == [{"id": a, "instruction": "", "input": "Heavy rain closed schools in Leeds.",
                    "output": "Rain shuts Leeds schools", "meta": {"task": "headline"}}]
    assert result["share"] == {"headline": 0.75, "adcopy": 0.25}
    s = stats(store)
    assert s["choices"] == {"headline": 2, "adcopy": 1}
    assert s["blind"]["compared"] == 2 and s["blind"]["tuned_wins"] == 1 and s["blind"]["win_rate"] == 0.5


def test_sft_export_loads_in_our_reader(tmp_path):
    from weaver.data.readers import read_records

    store = FeedbackStore(tmp_path / "studio.sqlite")
    _fill(store)
    export(store, tmp_path / "out")
    records = read_records(tmp_path / "out" / "sft.jsonl")
    assert [r.output for r in records] == ["Rain shuts Leeds schools"]


def test_bad_events_are_refused_and_write_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "studio.sqlite")
    rid = store.add_request("headline", [Draft("x", "m")], {"input": "y"})
    for kwargs, needle in [({"kind": "like", "draft": 0}, "unknown feedback kind"),
                           ({"kind": "choose", "draft": 5}, "no draft 5"),
                           ({"kind": "edit", "draft": 0, "text": "  "}, "needs the text"),
                           ({"kind": "rate", "draft": 0, "value": 9}, "1 to 5"),
                           ({"kind": "choose"}, "names the draft")]:
        with pytest.raises(WeaverError, match=needle):
            store.add_event(rid, **kwargs)
    with pytest.raises(WeaverError, match="unknown request"):
        store.add_event("nope", "choose", draft=0)
    assert store.request(rid)["events"] == []
    with pytest.raises(WeaverError, match="does not exist"):
        FeedbackStore(tmp_path / "missing.sqlite", create=False)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(WeaverError, match="not a Weaver feedback store"):
        FeedbackStore(tmp_path / "junk.sqlite")


def test_kill_9_during_writes_leaves_whole_requests(tmp_path):
    db = tmp_path / "studio.sqlite"
    script = textwrap.dedent(f"""
        from weaver.apps.feedback import Draft, FeedbackStore
        s = FeedbackStore({str(db)!r})
        i = 0
        while True:
            s.add_request("headline", [Draft("d" * 2000, "m") for _ in range(8)], {{"input": str(i)}})
            i += 1
            if i == 20:
                print("ready", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = FeedbackStore(db)
    requests = store.all_requests()
    assert len(requests) >= 20 and all(len(r["drafts"]) == 8 for r in requests)  # never half a request


def test_cli(tmp_path, capsys):
    store = FeedbackStore(tmp_path / "studio.sqlite")
    _fill(store)
    assert main(["feedback", "export", "--db", str(tmp_path / "studio.sqlite"), "--out", str(tmp_path / "o")]) == 0
    assert "3 preference pairs" in capsys.readouterr().out
    assert main(["feedback", "stats", "--db", str(tmp_path / "studio.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "headline: 2 choices" in out and "tuned chosen 1 of 2 (50%" in out
    assert main(["feedback", "stats", "--db", str(tmp_path / "none.sqlite")]) != 0


def test_wilson_interval():
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
