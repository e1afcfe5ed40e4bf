"""`make demo` / `make demo-zh`: the whole job on an embedded model, in minutes on a laptop CPU.

    python -m weaver.demo                       # what `make demo` runs (English customer-support replies)
    python -m weaver.demo --lang zh             # what `make demo-zh` runs (Chinese paper titles)
    python -m weaver.demo --minutes 4 --out runs/demo
    python -m weaver.demo --lang zh --smoke     # every stage on a few examples (CI)

1. Tune with LoRA on a shipped, redistributable set, with a wall-clock budget (`--minutes`):
   en: SmolLM2-135M-Instruct (configs/support-smollm2.yaml) on examples/data/cs_reply_twitter_ibm
   (300 train / 49 dev / 100 held-out test customer-support replies, Apache-2.0);
   zh: the multilingual Gemma-3-270M (configs/csl-title-gemma3.yaml; `make models-multilingual`) on
   examples/data/csl_title (300 train / 50 dev / 100 test Chinese abstracts -> paper titles, Apache-2.0).
2. Evaluate base vs tuned on the held-out examples: same prompts, same greedy decoding, ROUGE (for zh on
   characters and on jieba words) / BLEU / chrF / semantic similarity / perplexity / length / repetition,
   each with a paired bootstrap 95% confidence interval of tuned - base.
3. Print the summary table and say where the HTML report is (in Chinese for the zh demo).

It calls the same Python API as the CLI: `weaver.tuning.run.tune(cfg)` then `weaver.eval.runner.evaluate`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Demo:
    """One demo: its preset, shipped data and the words it prints."""

    preset: Path
    data: Path
    what: str
    held_out: str
    max_new_tokens: int
    overrides: tuple[str, ...] = ()


DEMOS = {
    "en": Demo(ROOT / "configs" / "support-smollm2.yaml", ROOT / "examples" / "data" / "cs_reply_twitter_ibm",
               "300 customer-support replies", "customer messages", 64),
    # zh: LoRA in the top 6 of Gemma-3's 18 blocks (1.5x the all-block step speed on this kind of input,
    # docs/CHINESE.md) so a short budget sees more of the 300 abstracts.
    "zh": Demo(ROOT / "configs" / "csl-title-gemma3.yaml", ROOT / "examples" / "data" / "csl_title",
               "300 Chinese paper abstracts -> titles", "Chinese abstracts", 32,
               ("--train.top_layers", "6", "--train.lr", "1.0e-3")),
}
DATA = DEMOS["en"].data
PRESET = DEMOS["en"].preset
# --smoke: every stage on a few examples; transformers decoding skips the tuned model's GGUF export (minutes)
SMOKE = ("--data.limit_train", "16", "--data.limit_dev", "4", "--train.max_steps", "2", "--train.batch_size", "4",
         "--train.eval_every", "2", "--train.save_every", "0", "--eval.bootstrap", "100",
         "--generate.backend", "transformers")


def demo_config(out: str, minutes: float, epochs: float, limit: int | None, backend: str | None = None,
                lang: str = "en", smoke: bool = False):
    """The demo's RunConfig: the language's shipped preset with a time budget and the demo's folders."""
    from weaver.config import load_config

    demo = DEMOS[lang]
    return load_config(demo.preset, [
        "--data.train", str(demo.data / "train.jsonl"),
        "--data.dev", str(demo.data / "dev.jsonl"),
        "--data.test", str(demo.data / "test.jsonl"),
        "--train.out_dir", out,
        "--train.epochs", str(epochs),
        "--train.max_minutes", str(minutes),
        "--train.resume", "never",
        "--train.logging", "[]",
        "--generate.max_new_tokens", str(demo.max_new_tokens if not smoke else 12),
        "--eval.limit", str(limit) if limit else "none",
        "--eval.out_dir", str(Path(out) / "eval"),
        *demo.overrides,
        *(SMOKE if smoke else ()),
        *(["--generate.backend", backend] if backend else []),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m weaver.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--lang", default="en", choices=sorted(DEMOS),
                    help="en: support replies on SmolLM2; zh: Chinese paper titles on Gemma-3-270M")
    ap.add_argument("--out", default=None, help="run directory (default runs/demo or runs/demo-zh; report in OUT/eval)")
    ap.add_argument("--minutes", type=float, default=None, help="training time budget (default 6 en, 5 zh)")
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the 300 training examples")
    ap.add_argument("--limit", type=int, default=None, help="held-out examples to evaluate (default 100 = all)")
    ap.add_argument("--smoke", action="store_true",
                    help="every stage on a few examples (2 steps, 4 test examples): checks the pipeline, not quality")
    from weaver.config import BACKEND_NAMES

    ap.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                    help="decoding backend of the evaluation (default: generate.backend's default)")
    args = ap.parse_args(argv)
    args.out = args.out or ("runs/demo" if args.lang == "en" else f"runs/demo-{args.lang}")
    args.minutes = args.minutes if args.minutes is not None else (6.0 if args.lang == "en" else 5.0)
    args.limit = args.limit if args.limit is not None else (4 if args.smoke else 100)
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

    demo = DEMOS[args.lang]
    if not (demo.data / "train.jsonl").is_file():
        raise WeaverError(f"the demo data is missing ({demo.data}); run the demo from a full checkout of weaver")
    t0 = time.perf_counter()
    cfg = demo_config(args.out, args.minutes, args.epochs, args.limit, args.backend, args.lang, args.smoke)
    _check_model(cfg.model.name)
    print(f"[1/2] tuning {cfg.model.name} with LoRA on {demo.what}{' (smoke: 2 steps)' if args.smoke else ''} "
          f"(budget {args.minutes:g} min) -> {args.out}", flush=True)
    run_dir = tune(cfg)
    t1 = time.perf_counter()
    print(f"      tuned in {(t1 - t0) / 60:.1f} min", flush=True)
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.model.name, eval_cfg.eval.base = str(run_dir), cfg.model.name
    print(f"[2/2] base vs tuned on {args.limit} held-out {demo.held_out} (same prompts, greedy)", flush=True)
    report = evaluate(eval_cfg)
    t2 = time.perf_counter()
    print()
    print(report.table())
    for label, speed in report.data["speed"].items():
        print(f"generation ({label}): {speed['tokens_per_s']} new tokens/s")
    print(f"\ntotal {(t2 - t0) / 60:.1f} min (tuning {(t1 - t0) / 60:.1f}, evaluation {(t2 - t1) / 60:.1f})")
    print(f"report: {Path(report.out_dir).resolve() / 'report.html'}  (open it in a browser; no network needed)")
    return 0


def _check_model(name: str) -> None:
    """Before any work: a catalog model that is not installed raises the catalog's one-sentence install hint."""
    from weaver.models.catalog import find_entry

    entry = find_entry(name)
    if entry is not None:
        entry.require()


if __name__ == "__main__":
    sys.exit(main())
