"""`weaver sweep CONFIG.yaml --trials N`: hyper-parameter search over tuning runs (Optuna; resumable).

    weaver sweep configs/dialogsum-smollm2.yaml --trials 6 --budget-min 2 --out sweeps/dialogsum
    weaver sweep my.yaml --trials 20 --space space.yaml --sweep-budget-min 60 --train.max_steps 200
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config the trials start from (see configs/)")
    p.add_argument("--trials", type=int, default=6, help="finished or pruned trials to reach (default 6)")
    p.add_argument("--budget-min", type=float, default=2.0, help="training minutes per trial (default 2)")
    p.add_argument("--sweep-budget-min", type=float, default=None, help="minutes for the whole sweep")
    p.add_argument("--space", default=None, metavar="SPACE.yaml", help="search space (default: one per method)")
    p.add_argument("--metric", choices=("dev_loss", "rougeL"), default="dev_loss",
                   help="what the trials are ranked by (rougeL generates dev replies at each validation)")
    p.add_argument("--out", default=None, help="sweep folder (default: sweeps/CONFIG-NAME); run again to continue")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.epilog = "Any config value can be fixed for every trial with --section.key value."
    from weaver.cli.eval import accept_overrides

    accept_overrides(p)


def run(args: argparse.Namespace) -> int:
    from weaver.tuning.sweep import SweepSettings, sweep

    out = args.out or str(Path("sweeps") / Path(args.config).stem)
    result = sweep(SweepSettings(
        config=args.config, out=out, trials=args.trials, budget_min=args.budget_min,
        sweep_budget_min=args.sweep_budget_min, space=args.space, metric=args.metric, seed=args.seed,
        overrides=tuple(args.overrides),
    ))
    print((Path(out) / "trials.md").read_text())
    if result["best"]:
        b = result["best"]
        print(f"best: trial {b['trial']} ({args.metric} {b['value']:.4g}); config: {Path(out) / 'best.yaml'}")
    else:
        print("no trial finished; see the trials' sweep-trial.log files")
    return 0
