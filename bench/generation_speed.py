"""Batched generation throughput of weaver's engine, fp32 vs bf16, at the batch sizes eval uses.

    .venv/bin/python bench/generation_speed.py                  # SmolLM2-135M-Instruct, dialogsum prompts
    .venv/bin/python bench/generation_speed.py --batch-sizes 1,8,16 --prompts 16
    .venv/bin/python bench/generation_speed.py --smoke          # tiny random model, seconds (CI)

For each dtype and batch size, `Generator(model, tok, batch_size).generate(prompts, ...)` runs greedy
decoding with repetition penalty 1.1 and 48 new tokens (the eval settings) on the first dialogsum test
dialogues rendered with the summarize task; the figure is new tokens / generation seconds (the engine's
own accounting, model loading excluded). The result decides `generate` defaults; written to
bench/RESULTS.md, section generation_speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
FALLBACK = [f"#Person1#: Shall we meet at {h} o'clock to plan the trip?\n#Person2#: Yes, and bring the maps."
            for h in range(1, 17)]


def _prompts(tok, n: int) -> list[str]:
    from weaver.config import DataConfig
    from weaver.data.records import Record
    from weaver.data.tasks import render_prompt

    if DATA.is_file():
        from weaver.data.readers import read_records

        records = read_records(DATA)[:n]
    else:
        records = [Record(id=str(i), instruction="", input=t, output="") for i, t in enumerate(FALLBACK[:n])]
    return [render_prompt(tok, r, DataConfig(task="summarize")) for r in records]


def _load(spec: str, dtype: str, smoke: bool):
    import torch

    if not smoke:
        from weaver.models.loading import load_model

        return load_model(spec, dtype=dtype)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16 if dtype == "bfloat16" else torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer")


def measure(spec: str, dtype: str, batch_sizes: list[int], n_prompts: int, new_tokens: int, smoke: bool):
    """{batch size: (tokens/s, new tokens, seconds, tokens per CPU-second)} for one dtype."""
    import torch

    from weaver.generate.engine import Generator
    from weaver.generate.sampling import SamplingParams

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = _load(spec, dtype, smoke)
    prompts = _prompts(tok, n_prompts)
    params = SamplingParams(max_new_tokens=new_tokens, repetition_penalty=1.1)
    Generator(model, tok, 2).generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up
    out = {}
    for bs in batch_sizes:
        gen = Generator(model, tok, batch_size=bs)
        cpu0 = time.process_time()
        gen.generate(prompts[: min(4, n_prompts)] if bs == 1 else prompts, params)
        s, cpu = gen.stats, time.process_time() - cpu0
        out[bs] = (s["new_tokens"] / s["seconds"], s["new_tokens"], s["seconds"], s["new_tokens"] / cpu)
        print(f"{dtype} batch {bs}: {out[bs][0]:.1f} tok/s ({s['new_tokens']} tokens, {s['seconds']:.1f} s)",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch_sizes, args.prompts, args.new_tokens = "1,4", 4, 8
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    t0, load0 = time.time(), os.getloadavg()[0]
    res = {dt: measure(args.model, dt, sizes, args.prompts, args.new_tokens, args.smoke)
           for dt in ("float32", "bfloat16")}
    cmd = "python bench/generation_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["## Generation speed (batched engine, fp32 vs bf16)", "", f"Command: `{cmd.strip()}`", "",
             f"Model {'tiny random (smoke)' if args.smoke else args.model}; {args.prompts} dialogsum test prompts "
             f"(batch 1: 4 prompts); greedy, repetition penalty 1.1, {args.new_tokens} new tokens; load average "
             f"{load0:.1f} at start ({os.cpu_count()} cores) - a shared, busy machine, so figures are provisional.",
             "Tokens per CPU-second (process CPU time, all threads) is less sensitive to other load than wall "
             "time.", "",
             "| batch | fp32 tok/s | bf16 tok/s | bf16 / fp32 | fp32 tok/CPU-s | bf16 tok/CPU-s | bf16 / fp32 (CPU) |",
             "|---|---|---|---|---|---|---|"]
    for bs in sizes:
        f, b = res["float32"][bs], res["bfloat16"][bs]
        lines.append(f"| {bs} | {f[0]:.1f} | {b[0]:.1f} | {b[0] / f[0]:.2f}x | {f[3]:.1f} | {b[3]:.1f} | "
                     f"{b[3] / f[3]:.2f}x |")
    best = max(((dt, bs) for dt in res for bs in sizes), key=lambda k: res[k[0]][k[1]][0])
    lines += ["", f"Fastest: {best[0]} at batch {best[1]}. Took {time.time() - t0:.0f} s."]
    from run import write_section

    write_section("generation_speed", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
