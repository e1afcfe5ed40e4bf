"""Rebuild the small example sets in examples/data/ from the public sets in ../shared/data.

    .venv/bin/python examples/data/make_examples.py [--shared ../shared/data]

Only sets whose licence allows redistribution are copied (Apache-2.0: cs_reply_twitter_ibm, csl_title;
CC BY-SA 4.0: translation_flores). Each split is a seeded sample (seed 0), written in file order.
The shipped files are what this script wrote; users never need ../shared/data.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

SETS = {"cs_reply_twitter_ibm": {"train": 300, "dev": 49, "test": 100},
        "csl_title": {"train": 300, "dev": 50, "test": 100},
        "translation_flores": {"train": 300, "dev": 50, "test": 100}}
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(HERE.parents[2] / "shared" / "data"))
    args = parser.parse_args()
    for name, sizes in SETS.items():
        for split, n in sizes.items():
            lines = (Path(args.shared) / name / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
            keep = sorted(random.Random(f"0:{name}:{split}").sample(range(len(lines)), min(n, len(lines))))
            out = HERE / name / f"{split}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
            print(f"{out.relative_to(HERE)}: {len(keep)} records")


if __name__ == "__main__":
    main()
