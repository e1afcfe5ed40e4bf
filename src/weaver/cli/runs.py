"""`weaver runs`: a table of the run folders under a directory, and `weaver runs compare` of two or more.

    weaver runs [DIR] [--json]
    weaver runs compare RUN_A RUN_B [RUN_C ...] [--out compare.html] [--json]
"""

from __future__ import annotations

import argparse
import json

from weaver.errors import WeaverError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="DIR | compare RUN RUN ...",
                   help="the folder holding the runs (default: runs), or `compare` and two or more run folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", default=None, metavar="FILE.html",
                   help="with compare: also write a self-contained HTML page with the training curves")


def run(args: argparse.Namespace) -> int:
    from weaver.files import atomic_write_text
    from weaver.tuning import registry

    if args.paths[:1] == ["compare"]:
        result = registry.compare(args.paths[1:])
        if args.out:
            atomic_write_text(args.out, registry.compare_html(result))
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2, default=str))
        else:
            print(registry.compare_text(result))
            if args.out:
                print(f"\ncurves and tables: {args.out}")
        return 0
    if args.out:
        raise WeaverError("--out goes with `weaver runs compare RUN RUN ...`")
    if len(args.paths) > 1:
        raise WeaverError("weaver runs takes one folder; to compare runs use `weaver runs compare RUN RUN ...`")
    root = args.paths[0] if args.paths else "runs"
    rows = [r.row() for r in registry.find_runs(root)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print(f"no runs under {root}")
    else:
        print(registry.format_table(rows))
    return 0
