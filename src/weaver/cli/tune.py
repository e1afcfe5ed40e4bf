"""`weaver tune CONFIG.yaml [--section.key value ...]`: fine-tune a model from a YAML config.

    weaver tune configs/dialogsum-smollm2.yaml --train.max_minutes 5
    weaver tune configs/dialogsum-smollm2.yaml --resume            # continue a killed run
    accelerate launch --num_processes 2 -m weaver.cli tune configs/dialogsum-smollm2.yaml   # data parallel
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last good checkpoint (required)")
    p.add_argument("--fresh", action="store_true",
                   help="start over in the run directory: deletes what earlier runs wrote there (its weaver-run.json "
                        "lists it), once the model and the data have loaded; other files stay")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--section.key value",
                   help="override any config value, e.g. --train.lr 1e-4 --data.train f.jsonl --train.max_minutes 5")


def run(args: argparse.Namespace) -> int:
    from weaver.config import load_config
    from weaver.errors import ConfigError
    from weaver.tuning.run import tune

    overrides = [a for a in args.overrides or [] if a not in ("--resume", "--fresh")]
    args.resume = args.resume or "--resume" in (args.overrides or [])
    args.fresh = args.fresh or "--fresh" in (args.overrides or [])
    if args.resume and args.fresh:
        raise ConfigError("--resume and --fresh contradict each other: pass one of them")
    if args.resume:
        overrides += ["--train.resume", "always"]
    if args.fresh:
        overrides += ["--train.resume", "never"]
    cfg = load_config(args.config, overrides)
    run_dir = tune(cfg)
    print(f"run directory: {run_dir}  (adapter: {run_dir / 'adapter'}; try `weaver eval` or "
          f"`weaver generate --model {run_dir} --prompt ...`)")
    return 0
