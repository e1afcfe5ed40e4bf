"""Write the measured figures of the last reliability runs into docs/RELIABILITY.md (between its markers).

    .venv/bin/python tests/reliability/figures_md.py      # reads docs/reliability-ci.json and -long.json

The JSON files are written by the suite itself (`pytest tests/reliability --reliability-summary PATH`);
this script only lays them out as a table, so the document never holds a figure no run measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"

# (row label, figures section, how to format the section) in the order of the document
ROWS = [
    ("SIGKILL trials survived (resumed = uninterrupted)", "crash_resume",
     lambda f: f"{f['resumed_equal_to_uninterrupted']} of {f['trials']} ({f['killed_mid_run']} killed mid-run)"),
    ("Files read back complete while runs were killed / half-written seen", "crash_resume",
     lambda f: f"{f['files_read_back_complete']} / {f['half_written_files_seen']}"),
    ("Simulated full-disk saves: previous checkpoint kept, resumed equal", "full_disk",
     lambda f: f"{f['simulated_enospc_saves']}: {f['previous_checkpoint_kept']}, {f['resumed_equal']}"),
    ("Malformed corpus files (kinds) / tracebacks", "malformed_corpus",
     lambda f: f"{f['files']} ({f['kinds']}) / {f['tracebacks']}"),
    ("Mutated data files tried / internal errors", "malformed_fuzz",
     lambda f: f"{f['mutated_files']} ({f['reported']} reported, {f['clean']} clean) / {f['internal_errors']}"),
    ("Fuzzed API requests (operations) / 5xx", "api_fuzz",
     lambda f: f"{f['requests']} ({f['operations']}; status {f['status_counts']}) / {f['server_errors_5xx']}"),
    ("Hand-written hostile requests / 5xx", "api_hand_cases", lambda f: f"{f['cases']} / {f['server_errors_5xx']}"),
    ("64 clients below capacity: requests served / failed", "load_below_capacity",
     lambda f: f"{f['requests_served']} in {f['seconds']:g} s ({f['requests_per_s']}/s) / {f['failed']}"),
    ("Server RSS, max of first third -> last third (MiB)", "load_below_capacity",
     lambda f: f"{f['rss_mb_first_third_max']} -> {f['rss_mb_last_third_max']} ({f['rss_samples']} samples)"),
    ("64 clients above capacity: served / 429 / other errors", "load_above_capacity",
     lambda f: f"{f['requests_served']} / {f['rejected_429']} / {f['other_errors']} in {f['seconds']:g} s"),
    ("/health during overload: probes, slowest (s)", "load_above_capacity",
     lambda f: f"{f['health_checks']}, {f['health_max_s']}"),
    ("Endpoints requiring the key / hostile model paths refused", "security",
     lambda f: f"{f.get('endpoints_requiring_key', '-')} / {f.get('hostile_model_paths_refused', '-')}"),
    ("Hostile prompts (1 MB single word; one at the length bound) / 5xx / slowest /health (s)", "hostile_prompt",
     lambda f: f"{f['requests']} / {f['server_errors_5xx']} / {f['health_max_s']} ({f['health_probes']} probes)"),
    ("One request of 64 prompts x n=8 at --max-batch 4: batches / most rows in one batch", "max_batch",
     lambda f: f"{f['batches']} / {f['max_rows_per_batch']}"),
    ("Numeric extremes (5e-324 temperatures, int64 seeds ...) sent / 5xx", "numeric_extremes",
     lambda f: f"{f['requests']} (status {f['status_counts']}) / {f['server_errors_5xx']}"),
    ("Hung-up clients: generation stopped after (s)", "disconnect",
     lambda f: ", ".join(f"{k} {v}" for k, v in f["stopped_after_s"].items())),
    ("Half-sent requests closed with 408 / longest held (s)", "read_timeout",
     lambda f: f"{f['half_sent_requests']} / {f['longest_held_s']} (--read-timeout {f['read_timeout_s']:g})"),
    ("Unsupported OpenAI fields asked for: answered 400", "unsupported_fields", lambda f: f"{f['requests']}"),
    ("`weaver data check` peak memory (MiB): 50 MB record / 2 GiB sparse file / one-record file", "hostile_data",
     lambda f: f"{f['rss_mb_50mb_record']} / {f['rss_mb_2gib_sparse_file']} / {f['rss_mb_tiny_file']}"),
    ("Reading 20 000 records: JSON array vs JSON Lines (s)", "hostile_data",
     lambda f: f"{f['json_array_20k_s']} vs {f['jsonl_20k_s']}"),
    ("YAML alias bomb (9**8 strings) refused: run config / safety policy (bytes, s, peak MiB)", "yaml_alias_bombs",
     lambda f: f"{f['config_bytes']} B, {f['config_refused_s']} s, {f['config_peak_mib']} MiB / "
               f"{f['policy_bytes']} B, {f['policy_refused_s']} s, {f['policy_peak_mib']} MiB"),
]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def table(ci: dict | None, long: dict | None) -> str:
    """A markdown table: one row per figure, one column per mode ('not run' where a run lacks it)."""
    def cell(run, section, fmt):
        if run is None or section not in run["figures"]:
            return "not run"
        return fmt(run["figures"][section])

    head = ["| Figure | CI mode | long mode |", "| --- | --- | --- |"]
    rows = [f"| {label} | {cell(ci, s, fmt)} | {cell(long, s, fmt)} |" for label, s, fmt in ROWS]
    runs = (("CI", ci), ("long", long))
    when = [f"{name}: written {run['written']} on {run['machine']}" for name, run in runs if run]
    return "\n".join(head + rows) + "\n\n" + "; ".join(when) + ".\n"


def main() -> int:
    ci, long = _load(ROOT / "docs" / "reliability-ci.json"), _load(ROOT / "docs" / "reliability-long.json")
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(ci, long) + text[end:])
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
