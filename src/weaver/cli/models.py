"""`weaver models`: the embedded model catalog with install state and local paths."""

from __future__ import annotations

import argparse
import json

from weaver.models.catalog import CATALOG, DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def rows() -> list[dict]:
    """One dict per catalog entry, with installed state and the path of its weights."""
    out = []
    for e in CATALOG.values():
        paths = e.chunk_paths()
        out.append(
            {
                "name": e.name + (" (default)" if e.name == DEFAULT_MODEL else ""),
                "params": e.params,
                "languages": e.languages,
                "licence": e.licence,
                "package": e.package,
                "installed": paths is not None,
                "path": str(paths[0].parent if paths and len(paths) > 1 else paths[0]) if paths else e.install,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    data = rows()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    cols = ["name", "params", "languages", "licence", "package", "installed", "path"]
    table = [[str(r[c]) if c != "installed" else ("yes" if r[c] else "no") for c in cols] for r in data]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return 0
