"""`weaver feedback`: turn the writers' choices kept by the studio into training data, and count them.

    weaver feedback export --db ~/.cache/weaver/studio.sqlite --out feedback/   # pairs.jsonl + sft.jsonl
    weaver feedback stats --db studio.sqlite [--json]       # choices per task, blind tuned-vs-base win rate
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="feedback_cmd", metavar="COMMAND", required=True)
    exp = sub.add_parser("export", help="write preference pairs and SFT examples from the writers' choices")
    exp.add_argument("--db", default=None, help="the studio's SQLite file (default: $WEAVER_HOME/studio.sqlite)")
    exp.add_argument("--out", required=True, help="folder for pairs.jsonl and sft.jsonl")
    st = sub.add_parser("stats", help="choices per task and the blind-compare win rate of the tuned model")
    st.add_argument("--db", default=None, help="the studio's SQLite file (default: $WEAVER_HOME/studio.sqlite)")
    st.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from weaver.apps.feedback import FeedbackStore, export, stats

    store = FeedbackStore(args.db, create=False)
    if args.feedback_cmd == "export":
        result = export(store, args.out)
        share = ", ".join(f"{t} {v:.0%}" for t, v in sorted(result["share"].items())) or "none"
        print(f"{result['pairs']} preference pairs -> {args.out}/pairs.jsonl; {result['sft']} SFT examples "
              f"(edited finals) -> {args.out}/sft.jsonl; by task: {share}")
        return 0
    result = stats(store)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for task, n in sorted(result["choices"].items()):
        print(f"{task}: {n} choices")
    b = result["blind"]
    if b["compared"]:
        print(f"blind compare: tuned chosen {b['tuned_wins']} of {b['compared']} ({b['win_rate']:.0%}, 95% CI "
              f"{b['ci95'][0]:.0%}-{b['ci95'][1]:.0%})")
    else:
        print("blind compare: no blind comparisons recorded yet")
    return 0
