"""Packing (`data.pack: true`) vs padded batches in `weaver tune` on dialogsum: tokens/s and padding share.

    .venv/bin/python bench/packing.py            # SmolLM2-135M, dialogsum preset, 4 short runs (< 5 min)
    .venv/bin/python bench/packing.py --smoke    # tiny random Llama, 2 steps per run (< 1 min)

Four `tune()` runs of configs/dialogsum-smollm2.yaml on the same first records with the same seed, so the
same batches in the same order: {random order, length-grouped (the default)} x {padded, packed}. Speed is
run.json's real (non-padding) tokens and target tokens per second of training time; the padding share is
the fraction of padded positions in the padded runs' batches (weaver.data.tokenize.padding_fraction; a
packed row has none). The step-1 losses show that packed and padded runs train on the same examples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "packing"
sys.path.insert(0, str(Path(__file__).parent))
from run import SHARED_NOTE, write_section  # noqa: E402

PRESET = ROOT / "configs" / "dialogsum-smollm2.yaml"
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"


def tiny_model_dir() -> Path:
    """A saved 2-layer random Llama with the SmolLM2 tokenizer (the smoke run's model)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = WORK / "tiny-llama"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        LlamaForCausalLM(cfg).save_pretrained(out)
        AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer").save_pretrained(out)
    return out


def overrides(smoke: bool, steps: int, limit: int, grouped: bool, pack: bool) -> list[str]:
    name = f"{'grouped' if grouped else 'random'}-{'packed' if pack else 'padded'}"
    args = {"train.max_steps": steps, "train.eval_every": 0, "train.save_every": 0, "train.logging": "[]",
            "train.resume": "never", "train.out_dir": str(WORK / name), "train.group_by_length": grouped,
            "data.pack": pack, "data.limit_train": limit, "data.limit_dev": 4}
    if smoke:
        args.update({"model.name": str(tiny_model_dir()), "train.top_layers": "none"})
    if not DIALOGSUM.exists():  # no shared data: a shipped set, for the smoke run
        args.update({"data.train": str(ROOT / "examples" / "data" / "cs_reply_twitter_ibm" / "train.jsonl"),
                     "data.dev": "none", "data.test": "none", "data.task": "support_reply"})
    out = []
    for key, value in args.items():
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def padding_share(cfg, steps: int) -> float:
    """Padded positions / all positions over the first `steps` padded batches of cfg's run."""
    from weaver.data.tokenize import collate, padding_fraction
    from weaver.models.loading import load_tokenizer, resolve
    from weaver.tuning.run import prepare_data

    tok = load_tokenizer(resolve(cfg.model.name))
    data, _ = prepare_data(cfg, tok)
    batches = data.batches(0)[:steps * cfg.train.grad_accum]
    return padding_fraction([collate([data.train[i] for i in b], tok.pad_token_id) for b in batches])


def one_run(args: list[str]) -> dict:
    from weaver.config import load_config
    from weaver.tuning.run import tune

    cfg = load_config(str(PRESET), args)
    run = tune(cfg)
    facts = json.loads((run / "run.json").read_text())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(e["train_loss"] for e in events if "train_loss" in e)
    pad = 0.0 if cfg.data.pack else padding_share(cfg, cfg.train.max_steps)
    return {**{k: facts[k] for k in ("tokens_per_s", "target_tokens_per_s", "train_time_s", "tokens", "precision")},
            "loss1": first, "padding": pad}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 6; smoke 2)")
    p.add_argument("--limit", type=int, default=None, help="training records (default 200; smoke 40)")
    a = p.parse_args(argv)
    steps = a.steps or (2 if a.smoke else 6)
    a.limit = a.limit or (40 if a.smoke else 200)
    t0, rows = time.perf_counter(), {}
    for grouped in (False, True):
        for pack in (False, True):
            rows[grouped, pack] = one_run(overrides(a.smoke, steps, a.limit, grouped, pack))
    wall = time.perf_counter() - t0
    lines = ["| batches | padding share (padded) | real tok/s padded | packed | packed/padded | target tok/s padded "
             "| packed | packed/padded | step-1 loss padded / packed |", "|---|---|---|---|---|---|---|---|---|"]
    for grouped in (False, True):
        pad, pack = rows[grouped, False], rows[grouped, True]
        lines.append(
            f"| {'length-grouped (default)' if grouped else 'random order'} | {pad['padding']:.1%} | "
            f"{pad['tokens_per_s']:.0f} | {pack['tokens_per_s']:.0f} | "
            f"{pack['tokens_per_s'] / pad['tokens_per_s']:.2f}x | {pad['target_tokens_per_s']:.1f} | "
            f"{pack['target_tokens_per_s']:.1f} | {pack['target_tokens_per_s'] / pad['target_tokens_per_s']:.2f}x | "
            f"{pad['loss1']:.4f} / {pack['loss1']:.4f} |")
    model = "tiny random Llama (smoke)" if a.smoke else "SmolLM2-135M-Instruct, the preset's LoRA (top 10 blocks)"
    data = "dialogsum train" if DIALOGSUM.exists() else "examples/data/cs_reply_twitter_ibm"
    md = (f"## Packing (`data.pack`) vs padded batches in `weaver tune`\n\n"
          f"Command: `.venv/bin/python bench/packing.py{' --smoke' if a.smoke else ''}` ({wall:.0f} s). "
          f"{model}; configs/dialogsum-smollm2.yaml (batch 8, max_seq_len 384, gradient checkpointing), "
          f"{data}, first {a.limit} records, {steps} optimizer steps per run, precision "
          f"{rows[True, True]['precision']}; the same batches in the same order in each padded/packed pair. "
          f"Real tok/s counts non-padding tokens only.\n\n" + "\n".join(lines) + "\n\n" + SHARED_NOTE + "\n")
    print(md)
    write_section("packing", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
