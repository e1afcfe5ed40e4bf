"""`weaver data check` statistics: counts, token lengths, language mix and notes, duplicates and split overlap.

    stats = check_files({"train": "train.jsonl", "dev": "dev.jsonl"}, DataConfig(task="headline"), tokenizer)
    print(format_stats(stats))

A preference-pairs file (weaver.data.preferences: its first record has chosen and rejected) is read as
pairs: prompts and chosen replies are measured like records and outputs, plus the rejected replies' lengths.
Malformed records are collected per file (see weaver.data.readers); the caller decides whether they
are fatal (`on_error`). Token lengths are measured on the rendered prompt (`render_prompt`, i.e. the
model's chat template) and on the output, in the given tokenizer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from weaver.config import DataConfig
from weaver.data.preferences import PreferencePair, is_pairs_file, read_pair_file
from weaver.data.readers import TOKEN_CHUNK, ReadResult, read_file, token_count
from weaver.data.records import Record, content_key, input_key, language_of
from weaver.data.tasks import render_prompt
from weaver.data.zh_notes import format_notes, language_notes

PERCENTILES = (50, 90, 99)
BATCH = 256
"""Records tokenized together: the tokenizer's memory holds one batch, not the whole file."""


def _percentiles(lengths: list[int]) -> dict[str, int | float]:
    n = np.array(lengths or [0])
    out: dict[str, int | float] = {f"p{p}": int(np.percentile(n, p)) for p in PERCENTILES}
    out["max"] = int(n.max())
    out["mean"] = round(float(n.mean()), 1)
    return out


def record_stats(records: list[Record], data_cfg: DataConfig, tokenizer=None) -> dict[str, Any]:
    """Statistics of one file's good records.

    Args:
        records: the records.
        data_cfg: task/lang settings used to render prompts, and max_seq_len.
        tokenizer: when given, token-length percentiles of prompts and outputs.
    Returns:
        {"records", "languages": {en, zh}, "duplicates", "repeated_inputs", "language_notes" (Chinese script
        and punctuation mix-ups, weaver.data.zh_notes), "tokens"?: {prompt, output}, "over_max_seq_len"?}.
    """
    langs = Counter(language_of(r.input or r.instruction) for r in records)
    stats: dict[str, Any] = {
        "records": len(records),
        "languages": {lang: langs.get(lang, 0) for lang in ("en", "zh")},
        "duplicates": len(records) - len({content_key(r) for r in records}),
        "repeated_inputs": len(records) - len({input_key(r) for r in records}),
        "with_references": sum(1 for r in records if r.references),
        "language_notes": language_notes(records) if langs.get("zh") else [],
    }
    if tokenizer is not None and records:
        p_len, o_len = [], []
        for k in range(0, len(records), BATCH):
            batch = records[k:k + BATCH]
            p_len += token_lengths(tokenizer, [render_prompt(tokenizer, r, data_cfg) for r in batch])
            o_len += token_lengths(tokenizer, [r.output for r in batch])
        stats["tokens"] = {"prompt": _percentiles(p_len), "output": _percentiles(o_len)}
        stats["over_max_seq_len"] = sum(1 for p, o in zip(p_len, o_len) if p + o + 1 > data_cfg.max_seq_len)
    return stats


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Token counts of texts: short ones in one tokenizer call, long ones chunk by chunk (bounded memory)."""
    short = [t for t in texts if len(t) <= TOKEN_CHUNK]
    ids = iter(tokenizer(short, add_special_tokens=False)["input_ids"] if short else ())
    return [len(next(ids)) if len(t) <= TOKEN_CHUNK else token_count(tokenizer, t)[0] for t in texts]


def check_files(files: dict[str, str], data_cfg: DataConfig, tokenizer=None) -> dict[str, Any]:
    """Read every file, collect problems and statistics, and measure overlap between the files.

    Args:
        files: split name -> path (e.g. {"train": ..., "dev": ..., "test": ...}).
        data_cfg: columns, task/lang, max_seq_len and max_output_tokens.
        tokenizer: optional; enables token statistics and the output-length check.
    Returns:
        {"files": {name: {"path", "rows", "problems": [Problem], "stats"}}, "overlap": {"train/dev": n, ...}}.
    Raises:
        DataError: a file that cannot be read at all (missing, unknown type, broken JSON array).
    """
    results: dict[str, ReadResult] = {name: _read(path, data_cfg, tokenizer) for name, path in files.items()}
    out: dict[str, Any] = {"files": {}, "overlap": {}}
    prompts: dict[str, list[Record]] = {}
    for name, res in results.items():
        pairs = bool(res.records) and isinstance(res.records[0], PreferencePair)
        prompts[name] = [p.record for p in res.records] if pairs else res.records
        stats = record_stats(prompts[name], data_cfg, tokenizer)
        if pairs:
            stats["pairs"] = len(res.records)
            if tokenizer is not None:
                rejected = [len(ids) for k in range(0, len(res.records), BATCH) for ids in tokenizer(
                    [p.rejected for p in res.records[k:k + BATCH]], add_special_tokens=False)["input_ids"]]
                stats["tokens"]["rejected"] = _percentiles(rejected)
        out["files"][name] = {"path": res.path, "rows": res.rows, "problems": res.problems,
                              "summary": res.summary() if res.problems else "", "stats": stats}
    names = list(results)
    for i, a in enumerate(names):
        keys_a = {input_key(r) for r in prompts[a]}
        for b in names[i + 1:]:
            out["overlap"][f"{a}/{b}"] = sum(1 for k in {input_key(r) for r in prompts[b]} if k in keys_a)
    return out


def _read(path: str, data_cfg: DataConfig, tokenizer) -> ReadResult:
    """read_file, or read_pair_file for a preference-pairs file (its first record has chosen and rejected)."""
    reader = read_pair_file if is_pairs_file(path) else read_file
    return reader(path, data_cfg.columns, tokenizer=tokenizer, max_output_tokens=data_cfg.max_output_tokens)


def format_stats(report: dict[str, Any], model: str | None = None) -> str:
    """A human-readable report of check_files' result."""
    lines = []
    for name, f in report["files"].items():
        s = f["stats"]
        bad = len(f["problems"])
        lines.append(f"{name}: {f['path']}")
        kind = "preference pairs (prompt, chosen, rejected)" if "pairs" in s else "records"
        lines.append(f"  {kind}: {s['records']} good of {f['rows']} ({bad} malformed)"
                     + (f", {s['with_references']} with extra references" if s["with_references"] else ""))
        total = max(1, s["records"])
        mix = "  ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in s["languages"].items())
        lines.append(f"  languages: {mix}")
        lines.append(f"  duplicates: {s['duplicates']} exact, {s['repeated_inputs']} repeated inputs")
        lines += format_notes(s.get("language_notes", []))
        if "tokens" in s:
            lines.append(f"  tokens{f' ({model})' if model else ''}:   p50    p90    p99    max   mean")
            for part in ("prompt", "output", "rejected"):
                t = s["tokens"].get(part)
                if t is not None:
                    name = "chosen" if part == "output" and "pairs" in s else part
                    lines.append(f"    {name:<8}{t['p50']:>8}{t['p90']:>7}{t['p99']:>7}{t['max']:>7}{t['mean']:>7}")
            lines.append(f"  over max_seq_len: {s['over_max_seq_len']} records would have their prompt truncated")
    if report["overlap"]:
        lines.append("overlap (inputs shared): " + ", ".join(f"{k} {v}" for k, v in report["overlap"].items()))
    return "\n".join(lines)
