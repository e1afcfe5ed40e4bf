"""`make demo`: the whole job on the embedded default model, in minutes on a laptop CPU.

    python -m weaver.demo                       # what `make demo` runs
    python -m weaver.demo --minutes 4 --out runs/demo

1. Tune SmolLM2-135M-Instruct with LoRA (configs/support-smollm2.yaml) on the shipped customer-support
   replies (examples/data/cs_reply_twitter_ibm: 300 train / 49 dev / 100 held-out test, Apache-2.0),
   with a wall-clock budget (`--minutes`).
2. Evaluate base vs tuned on the 100 held-out customer messages: same prompts, same greedy decoding,
   ROUGE / BLEU / chrF / semantic similarity / perplexity / length / repetition, each with a paired
   bootstrap 95% confidence interval of tuned - base.
3. Print the summary table and say where the HTML report is.

It calls the same Python API as the CLI: `weaver.tuning.run.tune(cfg)` then `weaver.eval.runner.evaluate`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "cs_reply_twitter_ibm"
PRESET = ROOT / "configs" / "support-smollm2.yaml"


def demo_config(out: str, minutes: float, epochs: float, limit: int | None, backend: str | None = None):
    """The demo's RunConfig: the shipped support-reply preset with a time budget and the demo's folders."""
    from weaver.config import load_config

    return load_config(PRESET, [
        "--data.train", str(DATA / "train.jsonl"),
        "--data.dev", str(DATA / "dev.jsonl"),
        "--data.test", str(DATA / "test.jsonl"),
        "--train.out_dir", out,
        "--train.epochs", str(epochs),
        "--train.max_minutes", str(minutes),
        "--train.resume", "never",
        "--train.logging", "[]",
        "--generate.max_new_tokens", "64",
        "--eval.limit", str(limit) if limit else "none",
        "--eval.out_dir", str(Path(out) / "eval"),
        *(["--generate.backend", backend] if backend else []),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m weaver.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo", help="run directory (the report goes to OUT/eval)")
    ap.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the 300 training examples")
    ap.add_argument("--limit", type=int, default=100, help="held-out examples to evaluate (100 = all)")
    from weaver.config import BACKEND_NAMES

    ap.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                    help="decoding backend of the evaluation (default: generate.backend's default)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from weaver.cli import _quiet_libraries
    from weaver.errors import WeaverError

    _quiet_libraries()  # the demo prints its own progress; library load bars are noise

    try:
        return _run(args)
    except WeaverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from weaver.errors import WeaverError
    from weaver.eval.runner import evaluate
    from weaver.tuning.run import tune

    if not (DATA / "train.jsonl").is_file():
        raise WeaverError(f"the demo data is missing ({DATA}); run the demo from a full checkout of weaver")
    t0 = time.perf_counter()
    cfg = demo_config(args.out, args.minutes, args.epochs, args.limit, args.backend)
    print(f"[1/2] tuning {cfg.model.name} with LoRA on 300 customer-support replies "
          f"(budget {args.minutes:g} min) -> {args.out}", flush=True)
    run_dir = tune(cfg)
    t1 = time.perf_counter()
    print(f"      tuned in {(t1 - t0) / 60:.1f} min", flush=True)
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.model.name, eval_cfg.eval.base = str(run_dir), cfg.model.name
    print(f"[2/2] base vs tuned on {args.limit} held-out customer messages (same prompts, greedy)", flush=True)
    report = evaluate(eval_cfg)
    t2 = time.perf_counter()
    print()
    print(report.table())
    for label, speed in report.data["speed"].items():
        print(f"generation ({label}): {speed['tokens_per_s']} new tokens/s")
    print(f"\ntotal {(t2 - t0) / 60:.1f} min (tuning {(t1 - t0) / 60:.1f}, evaluation {(t2 - t1) / 60:.1f})")
    print(f"report: {Path(report.out_dir).resolve() / 'report.html'}  (open it in a browser; no network needed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
