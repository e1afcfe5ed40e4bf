"""The writers' feedback store: requests, their drafts, and what writers chose, edited and rated (SQLite).

    store = FeedbackStore("~/.cache/weaver/studio.sqlite")
    rid = store.add_request(task="headline", model="news", fields={"input": article}, prompt=rendered,
                            drafts=[Draft("Rain closes schools", "news"), Draft("Schools shut", "base")])
    store.add_event(rid, "choose", draft=0)
    store.add_event(rid, "edit", draft=0, text="Rain closes Leeds schools")
    export_pairs_and_sft(store, "feedback/")      # preference pairs + SFT examples, in formats our readers load
    stats(store)                                  # choices per task, tuned-vs-base blind win rate with a 95% CI

Every write is one SQLite transaction (WAL journal, synchronous=FULL), so a kill -9 leaves either the whole
request or none of it. The store never sees an API key; callers pass text that already went through the
safety policy (the server stores the redacted prompt and drafts, never what the policy removed).
An event is one of: `choose` (the writer's pick; the last one counts), `edit` (the edited text of a draft;
the last one is the final), `rate` (1-5), `thumbs_down`, `sent` (support: the final text sent).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from weaver.errors import WeaverError

EVENTS = ("choose", "edit", "rate", "thumbs_down", "sent")
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, created REAL NOT NULL, view TEXT NOT NULL,
    task TEXT NOT NULL, model TEXT, fields TEXT NOT NULL, prompt TEXT, blind INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS drafts (request_id TEXT NOT NULL REFERENCES requests(id), idx INTEGER NOT NULL,
    model TEXT, is_base INTEGER NOT NULL DEFAULT 0, text TEXT NOT NULL, PRIMARY KEY (request_id, idx));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL
    REFERENCES requests(id), draft INTEGER, kind TEXT NOT NULL, text TEXT, value REAL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_request ON events(request_id);
"""


@dataclass
class Draft:
    """One generated draft and the model (adapter id or base) that wrote it."""

    text: str
    model: str | None = None
    is_base: bool = False
    """True when the base model wrote it (no adapter): what blind comparisons count against."""


def default_path() -> Path:
    """$WEAVER_HOME/studio.sqlite (WEAVER_HOME defaults to ~/.cache/weaver)."""
    return Path(os.environ.get("WEAVER_HOME") or Path.home() / ".cache" / "weaver") / "studio.sqlite"


class FeedbackStore:
    """The SQLite store behind the studio and `weaver feedback`."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True):
        self.path = Path(path).expanduser() if path else default_path()
        if not create and not self.path.is_file():
            raise WeaverError(f"feedback store {self.path} does not exist (the studio writes it: weaver serve "
                              "--studio-db FILE)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=FULL")
            self.con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise WeaverError(f"{self.path} is not a Weaver feedback store ({exc})") from None

    def close(self) -> None:
        self.con.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        """Run statements in one transaction: all or nothing."""
        cur = self.con.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                cur.execute(sql, args)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def add_request(self, task: str, drafts: list[Draft], fields: dict, model: str | None = None,
                    prompt: str | None = None, view: str = "write", blind: bool = False) -> str:
        """Store a request and its drafts in one transaction; returns the request id."""
        if not task or not drafts:
            raise WeaverError("a feedback request needs a task and at least one draft")
        rid = uuid.uuid4().hex
        stmts = [("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (rid, time.time(), view, task, model, json.dumps(fields, ensure_ascii=False), prompt, int(blind)))]
        stmts += [("INSERT INTO drafts VALUES (?, ?, ?, ?, ?)", (rid, i, d.model, int(d.is_base), d.text))
                  for i, d in enumerate(drafts)]
        self._tx(stmts)
        return rid

    def add_draft(self, request_id: str, draft: Draft) -> int:
        """Add a draft to a stored request (the writer regenerated one); returns its index.

        Raises:
            WeaverError: unknown request.
        """
        cur = self.con.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            if not cur.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone():
                raise WeaverError(f"unknown request id {request_id!r}")
            index = cur.execute("SELECT COUNT(*) FROM drafts WHERE request_id = ?", (request_id,)).fetchone()[0]
            cur.execute("INSERT INTO drafts VALUES (?, ?, ?, ?, ?)",
                        (request_id, index, draft.model, int(draft.is_base), draft.text))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return index

    def add_event(self, request_id: str, kind: str, draft: int | None = None, text: str | None = None,
                  value: float | None = None) -> None:
        """Record a writer's choice, edit, rating, thumbs-down or sent text.

        Raises:
            WeaverError: unknown request, draft or kind, or a rating outside 1-5.
        """
        if kind not in EVENTS:
            raise WeaverError(f"unknown feedback kind {kind!r}: use one of {', '.join(EVENTS)}")
        if not self.con.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone():
            raise WeaverError(f"unknown request id {request_id!r}")
        if draft is not None and not self.con.execute(
                "SELECT 1 FROM drafts WHERE request_id = ? AND idx = ?", (request_id, draft)).fetchone():
            raise WeaverError(f"request {request_id} has no draft {draft}")
        if kind in ("choose", "edit", "rate", "thumbs_down") and draft is None:
            raise WeaverError(f"a {kind} event names the draft it is about")
        if kind in ("edit", "sent") and not (text or "").strip():
            raise WeaverError(f"a {kind} event needs the text")
        if kind == "rate" and (value is None or not 1 <= value <= 5):
            raise WeaverError("a rating is a number from 1 to 5")
        self._tx([("INSERT INTO events (request_id, draft, kind, text, value, created) VALUES (?, ?, ?, ?, ?, ?)",
                   (request_id, draft, kind, text, value, time.time()))])

    def history(self, limit: int = 50, view: str | None = None) -> list[dict]:
        """The latest requests (of one view, or all), newest first, each with its drafts and final choice."""
        rows = self.con.execute("SELECT id FROM requests WHERE ? IS NULL OR view = ? ORDER BY created DESC, rowid "
                                "DESC LIMIT ?", (view, view, limit)).fetchall()
        return [self.request(r[0]) for r in rows]

    def request(self, request_id: str) -> dict:
        """One request with its drafts, events, chosen draft and final text."""
        row = self.con.execute("SELECT id, created, view, task, model, fields, prompt, blind FROM requests "
                               "WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise WeaverError(f"unknown request id {request_id!r}")
        drafts = [{"index": i, "model": m, "is_base": bool(b), "text": t} for i, m, b, t in self.con.execute(
            "SELECT idx, model, is_base, text FROM drafts WHERE request_id = ? ORDER BY idx", (request_id,))]
        events = [{"kind": k, "draft": d, "text": t, "value": v} for k, d, t, v in self.con.execute(
            "SELECT kind, draft, text, value FROM events WHERE request_id = ? ORDER BY id", (request_id,))]
        chosen = next((e["draft"] for e in reversed(events) if e["kind"] == "choose"), None)
        edits = {e["draft"]: e["text"] for e in events if e["kind"] == "edit"}
        sent = next((e["text"] for e in reversed(events) if e["kind"] == "sent"), None)
        final = sent or (edits.get(chosen) if chosen is not None else None)
        if final is None and chosen is not None:
            final = drafts[chosen]["text"]
        return {"id": row[0], "created": row[1], "view": row[2], "task": row[3], "model": row[4],
                "fields": json.loads(row[5]), "prompt": row[6], "blind": bool(row[7]), "drafts": drafts,
                "events": events, "chosen": chosen, "edited": chosen in edits or sent is not None, "final": final,
                "thumbs_down": sorted({e["draft"] for e in events if e["kind"] == "thumbs_down"})}

    def all_requests(self) -> list[dict]:
        return [self.request(r[0]) for r in self.con.execute("SELECT id FROM requests ORDER BY created")]


def _instruction_input(req: dict) -> tuple[str, str]:
    fields = dict(req["fields"])
    instruction = str(fields.pop("instruction", "") or "")
    text = str(fields.pop("input", "") or "")
    if not text and fields:  # app fields (product, audience, ...) become the input
        text = "\n".join(f"{k}: {v}" for k, v in fields.items() if v not in (None, "", []))
    return instruction, text


def export(store: FeedbackStore, out_dir: str | os.PathLike) -> dict:
    """Write pairs.jsonl ({instruction, input, chosen, rejected, task}) and sft.jsonl ({instruction, input,
    output, task}) from the writers' choices; returns counts and each task's share.

    A pair per (request with a chosen draft, draft not chosen): chosen = the final text (edited, or the pick
    itself), rejected = the other draft. An SFT example per request whose final text was edited.
    """
    from weaver.files import atomic_write_text

    pairs, sft = [], []
    for req in store.all_requests():
        if req["final"] is None:
            continue
        instruction, text = _instruction_input(req)
        for d in req["drafts"]:
            if d["index"] != req["chosen"] and d["text"].strip() and d["text"].strip() != req["final"].strip():
                pairs.append({"id": f"{req['id']}-{d['index']}", "instruction": instruction, "input": text,
                              "chosen": req["final"], "rejected": d["text"], "meta": {"task": req["task"]}})
        if req["edited"]:
            sft.append({"id": req["id"], "instruction": instruction, "input": text, "output": req["final"],
                        "meta": {"task": req["task"]}})
    out = Path(out_dir)
    for name, rows in (("pairs.jsonl", pairs), ("sft.jsonl", sft)):
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tasks = Counter(r["meta"]["task"] for r in pairs + sft)
    total = sum(tasks.values()) or 1
    return {"pairs": len(pairs), "sft": len(sft), "share": {t: round(n / total, 3) for t, n in tasks.items()},
            "out": str(out)}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def stats(store: FeedbackStore) -> dict:
    """Choices per task, and in blind comparisons how often the tuned model's draft was picked over the base's."""
    choices: dict[str, int] = defaultdict(int)
    wins = trials = 0
    for req in store.all_requests():
        if req["chosen"] is None:
            continue
        choices[req["task"]] += 1
        if req["blind"]:
            kinds = {d["is_base"] for d in req["drafts"]}
            if kinds == {True, False}:
                trials += 1
                wins += not req["drafts"][req["chosen"]]["is_base"]
    low, high = wilson(wins, trials)
    return {"choices": dict(choices), "blind": {"compared": trials, "tuned_wins": wins,
                                                "win_rate": wins / trials if trials else None, "ci95": [low, high]}}
