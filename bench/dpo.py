"""DPO after SFT on dialogsum (issue #18's "Measured"): does preference tuning on strategy-(a) pairs help?

    nice -n 10 .venv/bin/python bench/dpo.py                       # SmolLM2-135M, SFT 5 min, DPO <= 5 min (~25 min)
    nice -n 10 .venv/bin/python bench/dpo.py --sft-minutes 30      # the preset's own SFT budget
    .venv/bin/python bench/dpo.py --smoke                          # tiny random Llama, 2 steps each (~2 min)

1. SFT: `tune(configs/dialogsum-smollm2.yaml)` for --sft-minutes (the preset's LoRA recipe).
2. Pairs, strategy (a) (weaver.tuning.pairs, reference): chosen = the dialogsum reference, rejected = the SFT
   model's own greedy summary, for --pairs dialogues of the SFT run's *training* split (DPO sees no new
   inputs), --dev-pairs dev dialogues (DPO's validation) and --held test dialogues after the first --limit
   (held-out pairs for reward accuracy; never trained or validated on).
3. DPO: `model.name: <the SFT run>` (its adapter continued; the SFT model is the reference), train.objective dpo,
   for at most the SFT's budget.
4. `evaluate()` on the DPO run: against the run it started from (the SFT run) on the first --limit test
   dialogues (ROUGE-L, reference perplexity, length ratio, repetition, ... with paired bootstrap 95% CIs) and
   `--pairs` on the held-out pairs: each model's share of pairs where it prefers the reference (before/after)
   and DPO's implicit-reward accuracy against the SFT run.
The section "dpo" of bench/RESULTS.md ($WEAVER_BENCH_RESULTS) is rewritten; --smoke alone writes
bench/.work/dpo/RESULTS.md.
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
WORK = ROOT / "bench" / ".work" / "dpo"
sys.path.insert(0, str(Path(__file__).parent))
from run import SHARED_NOTE, write_section  # noqa: E402

from weaver.config import BACKEND_NAMES  # noqa: E402

PRESET = ROOT / "configs" / "dialogsum-smollm2.yaml"
DEFAULTS = {"sft_minutes": 5.0, "pairs": 160, "dev_pairs": 32, "held": 100, "limit": 100, "sft_run": None,
            "sft_steps": None, "dpo_steps": None, "backend": "auto"}
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"


def talky_tiny_model() -> Path:
    """A 2-layer random Llama with large weights (the default init only emits newlines): the smoke run's model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = WORK / "tiny-llama"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.5)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer").save_pretrained(out)
    return out


def flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def sft_overrides(a) -> dict:
    common = {"train.logging": "[]", "train.resume": "never", "train.out_dir": str(WORK / "sft"),
              "generate.max_new_tokens": a.max_new_tokens, "generate.backend": a.backend}
    if a.smoke:
        return {**common, "model.name": str(talky_tiny_model()), "train.top_layers": "none", "train.max_steps": 2,
                "train.eval_every": 0, "data.limit_train": 40, "data.limit_dev": 4, "data.max_seq_len": 256,
                "train.gradient_checkpointing": False}
    if a.sft_steps:  # a step budget: the same training whatever else loads the machine
        return {**common, "train.max_steps": a.sft_steps, "train.max_minutes": "none"}
    return {**common, "train.max_minutes": a.sft_minutes}


def make_pair_files(sft_run: Path, cfg, a) -> dict[str, dict]:
    """Strategy (a) pairs from the SFT model's own summaries: train (SFT's training inputs), dev, held-out."""
    from weaver.data.readers import read_records
    from weaver.data.splits import load_splits
    from weaver.generate import SamplingParams
    from weaver.generate.engine import load_generator
    from weaver.tuning.pairs import make_pairs, write_pairs

    train = load_splits(cfg.data).train[: a.pairs]
    dev = read_records(cfg.data.dev)[: a.dev_pairs]
    held = read_records(cfg.data.test)[a.limit : a.limit + a.held]
    gen = load_generator(sft_run, a.backend, batch_size=8)[0]  # auto: llama.cpp on a CPU
    params = SamplingParams(max_new_tokens=a.max_new_tokens, repetition_penalty=1.1, seed=0)
    out = {}
    for name, records in (("train", train), ("dev", dev), ("held", held)):
        t0 = time.perf_counter()
        pairs, report = make_pairs(records, "reference", gen, cfg.data, params)
        out[name] = {**report, "path": str(write_pairs(WORK / f"pairs-{name}.jsonl", pairs)),
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def dpo_overrides(a, sft_run: Path, files: dict) -> dict:
    values = {"model.name": str(sft_run), "train.objective": "dpo", "train.dpo_beta": a.beta, "train.lr": a.lr,
              "data.train": files["train"]["path"], "data.dev": files["dev"]["path"], "data.limit_train": "none",
              "data.limit_dev": "none", "train.out_dir": str(WORK / "dpo"), "train.logging": "[]",
              "train.resume": "never", "train.epochs": a.epochs, "train.eval_every": 10, "train.save_every": 10,
              "generate.max_new_tokens": a.max_new_tokens, "generate.backend": a.backend}
    if a.smoke:
        return {**values, **{k: v for k, v in sft_overrides(a).items() if k.startswith(("train.top", "train.max_s",
                                                                                          "train.grad", "data.max"))},
                "train.eval_every": 2}
    if a.dpo_steps:
        return {**values, "train.max_steps": a.dpo_steps, "train.max_minutes": "none"}
    return {**values, "train.max_minutes": a.dpo_minutes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny random Llama, 2 steps per stage")
    p.add_argument("--sft-minutes", type=float, default=5.0, help="SFT budget (the preset's own: 30)")
    p.add_argument("--dpo-minutes", type=float, default=None, help="DPO budget (default and at most: the SFT's)")
    p.add_argument("--pairs", type=int, default=160, help="training pairs (from the SFT's training inputs)")
    p.add_argument("--dev-pairs", type=int, default=32, help="DPO validation pairs (dev dialogues)")
    p.add_argument("--held", type=int, default=100, help="held-out pairs (test dialogues after the first --limit)")
    p.add_argument("--limit", type=int, default=100, help="test dialogues evaluated")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4, help="DPO learning rate (SFT: the preset's 3e-4)")
    p.add_argument("--epochs", type=float, default=3.0, help="DPO epochs over the pairs (the budget stops first)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--sft-steps", type=int, default=None,
                   help="SFT budget in optimizer steps instead of minutes (results independent of machine load)")
    p.add_argument("--dpo-steps", type=int, default=None, help="DPO budget in optimizer steps instead of minutes")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="decoding backend of the pairs and the evaluation (auto: llama.cpp q8_0 on a CPU)")
    p.add_argument("--sft-run", default=None, help="reuse this finished SFT run of the preset instead of tuning one")
    a = p.parse_args()
    a.dpo_minutes = min(a.dpo_minutes or a.sft_minutes, a.sft_minutes)
    if a.smoke:
        a.pairs, a.dev_pairs, a.held, a.limit, a.max_new_tokens = 12, 4, 8, 4, 8
    if not (DIALOGSUM / "train.jsonl").is_file():
        if a.smoke:  # `make bench-smoke` without the shared data: nothing to smoke-test this on
            print(f"bench/dpo.py --smoke: skipped, dialogsum is not in {DIALOGSUM}")
            return
        sys.exit(f"bench/dpo.py needs dialogsum in {DIALOGSUM} (see ../shared/data/README)")
    t0 = time.time()
    load0 = os.getloadavg()[0]
    shutil.rmtree(WORK / "dpo", ignore_errors=True)
    from weaver.config import load_config
    from weaver.eval.runner import evaluate
    from weaver.tuning.run import tune

    if a.sft_run:
        sft_run = Path(a.sft_run)
        sft_cfg = load_config(sft_run / "config.yaml")
        a.sft_minutes = sft_cfg.train.max_minutes or a.sft_minutes
        a.dpo_minutes = min(a.dpo_minutes, a.sft_minutes)
    else:
        shutil.rmtree(WORK / "sft", ignore_errors=True)
        sft_cfg = load_config(PRESET, flags(sft_overrides(a)))
        sft_run = tune(sft_cfg)
    files = make_pair_files(sft_run, sft_cfg, a)
    dpo_run = tune(load_config(PRESET, flags(dpo_overrides(a, sft_run, files))))
    eval_cfg = load_config(dpo_run / "config.yaml", flags({
        "model.name": str(dpo_run), "data.test": str(DIALOGSUM / "test.jsonl"), "eval.limit": a.limit,
        "eval.pairs": files["held"]["path"], "eval.out_dir": str(WORK / "eval"),
        "generate.max_new_tokens": a.max_new_tokens, "generate.repetition_penalty": 1.1,
        "generate.backend": a.backend}))
    report = evaluate(eval_cfg)
    write(a, sft_run, dpo_run, files, report, time.time() - t0, load0)


def write(a, sft_run: Path, dpo_run: Path, files: dict, report, wall: float, load0: float) -> None:
    from weaver.eval.preferences import format_pair_metrics

    sft, dpo = (json.loads((r / "run.json").read_text()) for r in (sft_run, dpo_run))
    pairs = report.data["pairs"]
    pa, ra = pairs["preference_accuracy"], pairs["reward_accuracy"]
    rl = report.metrics.get("rougeL", {})
    command = "nice -n 10 .venv/bin/python bench/dpo.py" + (" --smoke" if a.smoke else "")
    for name in ("sft_minutes", "sft_steps", "dpo_steps", "pairs", "dev_pairs", "held", "limit", "sft_run", "backend"):
        value, default = getattr(a, name), DEFAULTS[name]
        if not a.smoke and value != default:
            command += f" --{name.replace('_', '-')} {value:g}" if isinstance(value, float) else \
                f" --{name.replace('_', '-')} {value}"
    sft_budget = f"{a.sft_steps} steps" if a.sft_steps else f"{a.sft_minutes:g} min"
    dpo_budget = f"{a.dpo_steps} steps" if a.dpo_steps else f"{a.dpo_minutes:g} min (= the SFT's or less)"
    made = ", ".join(f"{k} {v['pairs']} of {v['records']} ({v['skipped_same'] + v['skipped_empty']} skipped, "
                     f"{v['seconds']:.0f} s)" for k, v in files.items())
    md = f"""## DPO after SFT (`dpo.py`): dialogsum, SmolLM2-135M, strategy-(a) pairs

Command: `{command}` ({wall / 60:.1f} min in all; machine shared with other agents, load average {load0:.1f} at
start on {os.cpu_count()} cores). {"SMOKE RUN on a tiny random Llama: the numbers mean nothing." if a.smoke else ""}

- SFT: configs/dialogsum-smollm2.yaml (LoRA r16, top 10 blocks), budget {sft_budget} (the preset's
  own budget is 30 min; it does not fit this benchmark's CPU time here): {sft['steps']} steps,
  {sft['wall_time_s']:.0f} s, stop: {sft['stop_reason']}.
- Pairs (strategy reference: chosen = the dialogsum reference, rejected = the SFT model's greedy summary,
  {a.max_new_tokens} new tokens): {made}. Train pairs come from the SFT run's training inputs only.
- DPO: from the SFT run (its adapter continued, the SFT model as the reference), beta {a.beta}, lr {a.lr:g},
  sigmoid loss, budget {dpo_budget}: {dpo['steps']} steps, {dpo['wall_time_s']:.0f} s,
  stop: {dpo['stop_reason']}; best dev {dpo['best_metric']['name']} {dpo['best_metric']['value']} at step
  {dpo['best_metric']['step']}.
- Evaluation: `weaver eval` of the DPO run against the SFT run (base = the run it started from) on the first
  {report.data['n']} test dialogues, greedy, {a.max_new_tokens} new tokens, repetition penalty 1.1, paired
  bootstrap 95% CIs, decoded on the {a.backend} backend; held-out pairs: {pairs['n']} test dialogues after those.

```
{report.table()}

{format_pair_metrics(pairs)}
```

{SHARED_NOTE}

Verdict: ROUGE-L {rl.get('base', float('nan')):.2f} (SFT) -> {rl.get('tuned', float('nan')):.2f} (DPO), delta
{rl.get('delta', float('nan')):+.2f} (95% CI [{rl.get('low', float('nan')):+.2f}, {rl.get('high', float('nan')):+.2f}]);
held-out pairs where the model prefers the reference over the SFT model's own summary: {pa['base']:.2f} (SFT) ->
{pa['tuned']:.2f} (DPO), delta {pa['delta']:+.2f} (95% CI [{pa['low']:+.2f}, {pa['high']:+.2f}]); DPO's implicit
reward prefers the reference on {ra['value']:.2f} of them (95% CI [{ra['low']:.2f}, {ra['high']:.2f}]).
"""
    target = WORK / "RESULTS.md" if a.smoke and not os.environ.get("WEAVER_BENCH_RESULTS") else None
    print(md)
    print(f"section dpo written to {write_section('dpo', md, path=target)}")


if __name__ == "__main__":
    main()
