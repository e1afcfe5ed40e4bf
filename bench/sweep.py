"""A 6-trial LoRA sweep on dialogsum, its best trial against the preset (issue #21's "Measured").

    nice -n 10 .venv/bin/python bench/sweep.py            # SmolLM2-135M, 6 trials x 2 min + the preset 2 min (~25 min)
    .venv/bin/python bench/sweep.py --smoke               # tiny random Llama, 2 trials of 2 steps (~2 min)

1. `weaver sweep configs/dialogsum-smollm2.yaml --trials 6 --budget-min 2` (Optuna TPE over the default LoRA space:
   lr, rank, alpha ratio, top_layers, batch size, weight decay, dropout; ranked by dev loss; median pruner).
2. The preset itself, untouched but for the same 2-minute budget: the baseline the search has to beat.
3. `weaver eval` of the best trial against the preset run (eval.base = the preset run) on the first --limit test
   dialogues: ROUGE-L, reference perplexity, length ratio, ... with paired bootstrap 95% CIs.
The section "sweep" of bench/RESULTS.md ($WEAVER_BENCH_RESULTS) is rewritten; --smoke alone writes
bench/.work/sweep/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "sweep"
sys.path.insert(0, str(Path(__file__).parent))
from dpo import DIALOGSUM, PRESET, flags, talky_tiny_model  # noqa: E402
from run import SHARED_NOTE, write_section  # noqa: E402

from weaver.config import BACKEND_NAMES  # noqa: E402


def fixed(a) -> dict:
    """Settings every trial and the preset run share (the sweep's --section.key flags)."""
    common = {"train.logging": "[]", "generate.max_new_tokens": a.max_new_tokens, "generate.backend": a.backend}
    if a.smoke:
        return {**common, "model.name": str(talky_tiny_model()), "train.top_layers": "none", "train.max_steps": 2,
                "train.eval_every": 1, "data.limit_train": 24, "data.limit_dev": 4, "data.max_seq_len": 256,
                "train.gradient_checkpointing": False}
    return common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny random Llama, 2 trials of 2 steps")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--budget-min", type=float, default=2.0, help="training minutes per trial and for the preset")
    p.add_argument("--limit", type=int, default=100, help="test dialogues evaluated")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="decoding backend of the evaluation (auto: llama.cpp q8_0 on a CPU)")
    p.add_argument("--keep", action="store_true", help="continue the sweep in bench/.work/sweep instead of anew")
    a = p.parse_args()
    if a.smoke:
        a.trials, a.limit, a.max_new_tokens, a.budget_min = 2, 4, 8, 1.0
    if not (DIALOGSUM / "train.jsonl").is_file():
        if a.smoke:
            print(f"bench/sweep.py --smoke: skipped, dialogsum is not in {DIALOGSUM}")
            return
        sys.exit(f"bench/sweep.py needs dialogsum in {DIALOGSUM} (see ../shared/data/README)")
    t0, load0 = time.time(), os.getloadavg()[0]
    if not a.keep:
        shutil.rmtree(WORK / "sweep", ignore_errors=True)
    shutil.rmtree(WORK / "preset", ignore_errors=True)
    shutil.rmtree(WORK / "eval", ignore_errors=True)
    from weaver.config import load_config
    from weaver.eval.runner import evaluate
    from weaver.tuning.run import tune
    from weaver.tuning.sweep import SweepSettings, sweep

    shared = fixed(a)
    t_sweep = time.time()
    result = sweep(SweepSettings(config=str(PRESET), out=str(WORK / "sweep"), trials=a.trials,
                                 budget_min=a.budget_min, overrides=tuple(flags(shared))))
    sweep_min = (time.time() - t_sweep) / 60
    if not result["best"]:
        sys.exit("bench/sweep.py: no trial finished; see bench/.work/sweep/sweep/trials/*/sweep-trial.log")
    best = result["best"]
    best_run = Path(next(r["run_dir"] for r in result["trials"] if r["trial"] == best["trial"]))
    preset_over = {**shared, "train.out_dir": str(WORK / "preset"), "train.resume": "never"}
    if not a.smoke:
        preset_over["train.max_minutes"] = a.budget_min
    preset_run = tune(load_config(PRESET, flags(preset_over)))
    eval_cfg = load_config(best_run / "config.yaml", flags({
        "model.name": str(best_run), "eval.base": str(preset_run), "data.test": str(DIALOGSUM / "test.jsonl"),
        "eval.limit": a.limit, "eval.out_dir": str(WORK / "eval"), "generate.max_new_tokens": a.max_new_tokens,
        "generate.backend": a.backend}))
    report = evaluate(eval_cfg)
    write(a, result, best_run, preset_run, report, sweep_min, time.time() - t0, load0)


def write(a, result: dict, best_run: Path, preset_run: Path, report, sweep_min: float, wall: float,
          load0: float) -> None:
    best = result["best"]
    facts = {name: json.loads((run / "run.json").read_text()) for name, run in (("best", best_run),
                                                                                  ("preset", preset_run))}
    trials_md = (WORK / "sweep" / "trials.md").read_text().strip()
    rl = report.metrics.get("rougeL", {})
    command = "nice -n 10 .venv/bin/python bench/sweep.py" + (" --smoke" if a.smoke else "")
    if not a.smoke:
        for name, default in (("trials", 6), ("budget_min", 2.0), ("limit", 100), ("backend", "auto")):
            if getattr(a, name) != default:
                command += f" --{name.replace('_', '-')} {getattr(a, name)}"
    params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in best["params"].items())

    def run_line(name: str) -> str:
        f = facts[name]
        return (f"{f['steps']} steps, {f['wall_time_s']:.0f} s, stop: {f['stop_reason']}, best "
                f"{f['best_metric']['name']} {f['best_metric']['value']:.4f}")

    md = f"""## Hyper-parameter search (`sweep.py`): {a.trials} LoRA trials on dialogsum, best trial vs the preset

Command: `{command}` ({wall / 60:.1f} min in all, the sweep {sweep_min:.1f} min; load average {load0:.1f} at start on
{os.cpu_count()} cores). {"SMOKE RUN on a tiny random Llama: the numbers mean nothing." if a.smoke else ""}

- Sweep: `weaver sweep configs/dialogsum-smollm2.yaml --trials {a.trials} --budget-min {a.budget_min:g}` (Optuna TPE,
  seed 0, the default LoRA space, median pruner on dev loss, trials ranked by their best dev loss):

{trials_md}

- Best: trial {best['trial']} (dev loss {best['value']:.4f}): {params}; {run_line('best')}.
- Preset (configs/dialogsum-smollm2.yaml as it is, the same {a.budget_min:g}-minute budget): {run_line('preset')}.
- Evaluation: `weaver eval` of the best trial (tuned) against the preset run (base) on the first {report.data['n']}
  test dialogues, greedy, {a.max_new_tokens} new tokens, decoded on the {a.backend} backend, paired bootstrap 95% CIs:

```
{report.table()}
```

{SHARED_NOTE}

Verdict: ROUGE-L {rl.get('base', float('nan')):.2f} (preset) -> {rl.get('tuned', float('nan')):.2f} (best trial), \
delta {rl.get('delta', float('nan')):+.2f} (95% CI [{rl.get('low', float('nan')):+.2f}, \
{rl.get('high', float('nan')):+.2f}]) at the same training budget.
"""
    target = WORK / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(md)
    print(f"section sweep written to {write_section('sweep', md, path=target)}")


if __name__ == "__main__":
    main()
