"""Padding waste and training-step speed: random batches vs length-grouped batches vs packed rows.

    .venv/bin/python bench/data_padding.py            # real SmolLM2-135M, real data -> RESULTS.md section
    .venv/bin/python bench/data_padding.py --smoke    # tiny random model, few batches (< 30 s)

Data: dialogsum train (../shared/data, when present) and the shipped examples/data sets, rendered with
the SmolLM2 chat template and encoded by weaver.data.tokenize (max_seq_len 512, batch size 8).
Padding fraction = padded positions / all positions (weaver.data.tokenize.padding_fraction).
Step speed = real (non-padding) tokens per second of forward + backward in fp32 on CPU, same batches.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from run import SHARED_NOTE, write_section  # noqa: E402

SETS = {"dialogsum": ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl",
        "cs_reply_twitter_ibm": ROOT / "examples" / "data" / "cs_reply_twitter_ibm" / "train.jsonl",
        "csl_title": ROOT / "examples" / "data" / "csl_title" / "train.jsonl"}


def encode_set(path: Path, tok, limit: int) -> list[dict]:
    from weaver.config import DataConfig
    from weaver.data.readers import read_records
    from weaver.data.tasks import render_prompt
    from weaver.data.tokenize import encode_example

    records = read_records(path)[:limit]
    cfg = DataConfig()
    return [encode_example(tok, render_prompt(tok, r, cfg), r.output, 512) for r in records]


def batchings(examples: list[dict], bs: int, seed: int = 0) -> dict[str, list[dict]]:
    from weaver.data.tokenize import Collator, length_grouped_batches

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    rand = [order[i:i + bs] for i in range(0, len(order), bs)]
    grouped = length_grouped_batches(examples, bs, seed=seed)
    pad, pack = Collator(0), Collator(0, pack=True)
    return {"random": [pad([examples[i] for i in b]) for b in rand],
            "length-grouped": [pad([examples[i] for i in b]) for b in grouped],
            "packed": [pack([examples[i] for i in b]) for b in rand]}


def step_speed(model, batches: list[dict], n: int) -> float:
    import torch

    real, t0 = 0, time.perf_counter()
    for b in batches[:n]:
        loss = model(**b, use_cache=False).loss  # packed rows are kept apart only without a KV cache
        loss.backward()
        model.zero_grad(set_to_none=True)
        real += int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return real / (time.perf_counter() - t0)


def load(smoke: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer")
    if smoke:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        return LlamaForCausalLM(cfg), tok, "tiny random Llama (smoke)"
    from weaver.models.loading import load_model

    model, _ = load_model("smollm2-135m-instruct")
    return model, tok, "SmolLM2-135M-Instruct (fp32)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.manual_seed(0)
    model, tok, model_name = load(args.smoke)
    model.train()
    limit, steps = (24, 1) if args.smoke else (400, 8)
    rows = []
    for name, path in SETS.items():
        if not path.exists():
            continue
        per = batchings(encode_set(path, tok, limit), bs=8)
        from weaver.data.tokenize import padding_fraction

        speeds = {k: step_speed(model, v, steps) for k, v in per.items()}
        rows.append((name, {k: padding_fraction(v) for k, v in per.items()}, speeds))
    head = ("| data | padding: random | length-grouped | packed | real tok/s: random | length-grouped | packed |\n"
            "|---|---|---|---|---|---|---|")
    lines = [f"| {n} | {f['random']:.1%} | {f['length-grouped']:.1%} | {f['packed']:.1%} | {s['random']:.0f} | "
             f"{s['length-grouped']:.0f} ({s['length-grouped'] / s['random']:.2f}x) | {s['packed']:.0f} "
             f"({s['packed'] / s['random']:.2f}x) |" for n, f, s in rows]
    md = (f"## Data batching: padding waste and step speed\n\nCommand: `.venv/bin/python bench/data_padding.py"
          f"{' --smoke' if args.smoke else ''}`. Model: {model_name}; batch size 8, max_seq_len 512, first {limit} "
          f"records of each set; speed over {steps} forward+backward steps per batching (ratios vs random "
          f"batches). Packed = one padding-free row per batch (DataCollatorWithFlattening, block-diagonal "
          f"attention).\n\n{head}\n" + "\n".join(lines) + f"\n\n{SHARED_NOTE}\n")
    print(md)
    write_section("data_padding", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
