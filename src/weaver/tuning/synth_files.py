"""The files of a `weaver data synth` run, written so that a killed run resumes where it stopped.

    files = SynthFiles("synth.jsonl")     # + synth.rejected.jsonl, synth.summary.json
    files.start(settings)                 # refuses to mix two runs' settings in one file
    done, kept_texts = files.finished("output")   # kept_texts: one per kept row
    files.append(kept_rows, rejected_rows)   # one line per finished input, appended and fsynced
    summary = files.write_summary(settings, total_inputs)

A run killed mid-write leaves at most a torn last line, which the next start cuts off (its input is redone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from weaver.data.synthetic import SYNTHETIC
from weaver.errors import ConfigError, DataError
from weaver.files import atomic_write_text
from weaver.tuning.synth_filters import FILTERS, SynthSettings

RESUMABLE = ("model", "inputs", "task", "lang", "mode", "k", "temperature", "top_p", "max_new_tokens",
             "min_logprob", "min_agreement", "max_copy", "min_words", "max_words", "max_repeat", "dedup",
             "keep_truncated", "seed")
"""Settings a resumed run must share with the run that wrote the files."""


def _stem(path: Path) -> Path:
    return path.with_name(path.name[: -len(path.suffix)] if path.suffix else path.name)


class SynthFiles:
    """OUT (kept records), its .rejected.jsonl and .summary.json siblings."""

    def __init__(self, out: str | os.PathLike):
        self.kept = Path(out)
        stem = _stem(self.kept)
        self.rejected = stem.with_name(stem.name + ".rejected.jsonl")
        self.summary = stem.with_name(stem.name + ".summary.json")

    def start(self, settings: dict) -> None:
        """Record the settings; refuse files a run with other settings wrote.

        Raises:
            ConfigError: OUT exists with another run's settings.
        """
        if self.summary.is_file() and (self.kept.exists() or self.rejected.exists()):
            before = json.loads(self.summary.read_text(encoding="utf-8")).get("settings", {})
            changed = [k for k in RESUMABLE if before.get(k) != settings.get(k)]
            if changed:
                raise ConfigError(f"{self.kept} was written with other settings ({', '.join(changed)}: "
                                  f"{', '.join(repr(before.get(k)) for k in changed)}): resume with the same ones, "
                                  "or write to a new --out")
        elif self.kept.exists() and self.kept.stat().st_size:
            raise ConfigError(f"{self.kept} exists and is not a `weaver data synth` output (no {self.summary.name}): "
                              "choose a new --out")
        self.kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.summary, json.dumps({"status": "running", "settings": settings}, indent=2) + "\n")

    def _rows(self, path: Path) -> list[dict]:
        """The complete lines of path (a torn last line, from a kill mid-write, is cut off)."""
        if not path.is_file():
            return []
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        rows = []
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON line ({exc.msg}); this file was edited: write to a new "
                                "--out") from None
        return rows

    def finished(self, text_field: str) -> tuple[set[str], list[str]]:
        """(ids of the inputs already done, the kept texts the near-duplicate filter compares against)."""
        kept = self._rows(self.kept)
        done = {r["meta"][SYNTHETIC]["source_id"] for r in kept} | {r["id"] for r in self._rows(self.rejected)}
        return done, [r[text_field] for r in kept]

    def append(self, kept: list[dict], rejected: list[dict]) -> None:
        """Append one line per finished input and fsync, so a kill loses at most the chunk in flight."""
        for path, rows in ((self.kept, kept), (self.rejected, rejected)):
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                fh.flush()
                os.fsync(fh.fileno())

    def write_summary(self, settings: dict, total: int) -> dict:
        """Counts per filter and the scores' spread over every finished input, from the files; written atomically."""
        kept, rejected = self._rows(self.kept), self._rows(self.rejected)
        reasons = [r["rejected"] for r in rejected]
        s = SynthSettings(**{k: v for k, v in settings.items() if k in SynthSettings.__dataclass_fields__})
        filters, left = {}, len(kept) + len(rejected)
        for name in FILTERS:
            removed = reasons.count(name)
            filters[name] = {"threshold": s.thresholds()[name], "checked": left, "removed": removed}
            left -= removed
        scores = [r["meta"][SYNTHETIC]["scores"] for r in kept] + [r["scores"] for r in rejected]
        spread = {}
        for key in ("logprob", "agreement", "words"):
            values = [x[key] for x in scores if isinstance(x.get(key), (int, float)) and np.isfinite(x[key])]
            if values:
                p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
                spread[key] = {"p10": round(p10, 4), "p50": round(p50, 4), "p90": round(p90, 4)}
        summary = {"status": "done" if len(kept) + len(rejected) >= total else "partial", "inputs": total,
                   "finished": len(kept) + len(rejected), "kept": len(kept), "rejected": len(rejected),
                   "filters": filters, "scores": spread, "settings": settings,
                   "files": {"kept": str(self.kept), "rejected": str(self.rejected)}}
        atomic_write_text(self.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary
