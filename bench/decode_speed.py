"""Decode speed per inference variant, with ROUGE-L per variant so speed is never bought with hidden quality loss.

    .venv/bin/python bench/decode_speed.py                       # newest tuned run in runs/, else the base model
    .venv/bin/python bench/decode_speed.py --model runs/dialogsum --items 50
    .venv/bin/python bench/decode_speed.py --smoke               # tiny random model, < 1 min (CI)

Variants: transformers fp32, bf16, int8 (dynamic), fp32 with 25% of MLP channels pruned, and llama.cpp
on the model exported to GGUF (f16, q8_0, q4_k_m), run by the xllamacpp wheel.
Speed figures per variant, all single-stream (one prompt at a time, one llama.cpp slot):
- engine tok/s, short and long prompt: exactly --tokens new tokens (EOS suppressed) after a short prompt
  (a one-line headline request, ~30 tokens) and after the first test dialogue (~300 tokens), prompt
  processing included, median of --repeats; transformers `generate` / raw xllamacpp `handle_completions`.
- weaver tok/s: new tokens / generation seconds over the ROUGE pass (the dialogsum prompts), through
  weaver's own path (`Generator` on the transformers or llama.cpp backend), greedy, repetition penalty 1.1.
For llama.cpp the ROUGE pass is also sent to raw xllamacpp with the same settings, giving the
"weaver / llama.cpp" ratio on the same weights (our overhead). Results: bench/RESULTS.md, section decode_speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
HF_VARIANTS = ("hf-fp32", "hf-bf16", "hf-int8", "hf-prune25")
GGUF_VARIANTS = ("llamacpp-f16", "llamacpp-q8_0", "llamacpp-q4_k_m")
DEFAULT_VARIANTS = ("hf-fp32", "llamacpp-q8_0", "llamacpp-q4_k_m")
SHORT_PROMPT = [{"role": "user", "content": "Write a headline for this news: the city council approved a new bike "
                                            "lane on Main Street after a two-year debate."}]


def default_model() -> str:
    """The newest tuned run under runs/ (a folder with adapter/), else the embedded base model."""
    runs = sorted((p for p in (ROOT / "runs").glob("*") if (p / "adapter" / "adapter_config.json").is_file()),
                  key=lambda p: p.stat().st_mtime)
    return str(runs[-1]) if runs else "smollm2-135m-instruct"


def load_items(n: int, tok, spec: str):
    from weaver.config import DataConfig, load_config
    from weaver.data.readers import read_records
    from weaver.data.tasks import render_prompt

    cfg_file = Path(spec) / "config.yaml"
    data_cfg = load_config(cfg_file).data if cfg_file.is_file() else DataConfig(task="summarize")
    records = read_records(DATA)[:n]
    prompts = [render_prompt(tok, r, data_cfg) for r in records]
    refs = [[r.output, *r.references] for r in records]
    return prompts, refs


def hf_variant(spec: str, name: str):
    from weaver.generate.engine import Generator
    from weaver.models.loading import load_model
    from weaver.models.quantize import prune_ffn, quantize_int8

    model, tok = load_model(spec, dtype="bfloat16" if name == "hf-bf16" else "float32", merge=True)
    if name == "hf-int8":
        model = quantize_int8(model)
    if name == "hf-prune25":
        model = prune_ffn(model, 0.25)
    return Generator(model, tok, batch_size=1), tok


def hf_engine_speed(gen, prompt: str, tokens: int, repeats: int) -> float:
    """tok/s of transformers `generate` for exactly `tokens` greedy new tokens (no weaver code in the loop)."""
    import torch

    ids = gen.tok(prompt, add_special_tokens=False, return_tensors="pt")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = gen.model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                     pad_token_id=gen.tok.pad_token_id)
        times.append(time.perf_counter() - t0)
        assert out.shape[1] - ids["input_ids"].shape[1] == tokens
    return tokens / statistics.median(times)


def llama_engine_speed(gen, prompt: str, tokens: int, repeats: int) -> float:
    """tok/s of raw xllamacpp (llama-server in-process) for exactly `tokens` greedy new tokens."""
    gen = gen.backend
    body = {"prompt": gen.encode(prompt), "max_tokens": tokens, "temperature": 0.0, "top_k": 0, "min_p": 0.0,
            "repeat_penalty": 1.0, "ignore_eos": True, "cache_prompt": False}  # the prompt is processed every time
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = gen.server.handle_completions(body)
        times.append(time.perf_counter() - t0)
        assert out["usage"]["completion_tokens"] == tokens, out
    return tokens / statistics.median(times)


def rouge_pass(gen, prompts, refs, max_new: int):
    from weaver.eval.metrics import rouge
    from weaver.generate.sampling import SamplingParams

    gen.stats.update(prompts=0, new_tokens=0, seconds=0.0)
    params = SamplingParams(max_new_tokens=max_new, temperature=0.0, repetition_penalty=1.1)
    outs = gen.generate(prompts, params)
    preds = [o[0].text for o in outs]
    scores = rouge(preds, refs)
    rouge_l = sum(s["rougeL"] for s in scores) / len(scores)
    return rouge_l, gen.stats["new_tokens"] / max(gen.stats["seconds"], 1e-9), preds


def raw_llama_pass(gen, prompts, max_new: int) -> float:
    """tok/s of raw xllamacpp on the same prompts and settings (the "llama.cpp" baseline): the same requests
    sent straight to llama-server one at a time, as weaver's single-stream pass sends them."""
    gen = gen.backend
    bodies = [{"prompt": gen.encode(p), "max_tokens": max_new, "temperature": 0.0, "top_k": 0, "min_p": 0.0,
               "repeat_penalty": 1.1, "repeat_last_n": gen.n_ctx} for p in prompts]
    t0 = time.perf_counter()
    outs = [gen.server.handle_completions(body) for body in bodies]
    secs = time.perf_counter() - t0
    # llama.cpp counts a reply's end-of-generation token; weaver's figure does not, so neither does this one
    n_tok = sum(o["usage"]["completion_tokens"] - (o["choices"][0]["finish_reason"] == "stop") for o in outs)
    return n_tok / secs


def run_variant(name: str, args, prompts, refs) -> dict:
    from weaver.data.chat import render_messages
    from weaver.generate.engine import Generator

    t0 = time.perf_counter()
    if name.startswith("hf-"):
        gen, tok = hf_variant(args.model, name)
        speed = hf_engine_speed
    else:
        from weaver.generate.llamacpp import LlamaCppBackend, gguf_for
        from weaver.models.loading import load_tokenizer

        path = gguf_for(args.model, name.split("-", 1)[1])
        gen = Generator(LlamaCppBackend.from_gguf(path, n_ctx=2048, n_threads=args.threads, n_parallel=1),
                        batch_size=1)
        tok, speed = load_tokenizer(args.model), llama_engine_speed
    short = render_messages(tok, SHORT_PROMPT)
    row = {"variant": name, "engine_short_tps": speed(gen, short, args.tokens, args.repeats),
           "engine_tps": speed(gen, prompts[0], args.tokens, args.repeats),
           "prompt_tokens": [len(tok(p, add_special_tokens=False)["input_ids"]) for p in (short, prompts[0])]}
    rouge_l, weaver_tps, preds = rouge_pass(gen, prompts, refs, args.max_new_tokens)
    row.update(weaver_tps=weaver_tps, rougeL=rouge_l, first_pred=preds[0][:120])
    if name.startswith("llamacpp-"):
        row["raw_llama_tps"] = raw_llama_pass(gen, prompts, args.max_new_tokens)
        row["gguf_mib"] = path.stat().st_size / 2**20
    row["wall_s"] = time.perf_counter() - t0
    print(json.dumps(row), flush=True)
    return row


def _ratio(a: float | None, b: float | None, fmt: str = "{:.2f}x") -> str:
    return fmt.format(a / b) if a and b else "—"


def _cells(r: dict, base: dict | None) -> list[str]:
    raw = r.get("raw_llama_tps")
    return [
        r["variant"], f"{r['engine_short_tps']:.1f}", _ratio(r["engine_short_tps"], base and base["engine_short_tps"]),
        f"{r['engine_tps']:.1f}", _ratio(r["engine_tps"], base and base["engine_tps"]),
        f"{r['weaver_tps']:.1f}", _ratio(r["weaver_tps"], base and base["weaver_tps"]),
        f"{raw:.1f}" if raw else "—", _ratio(r["weaver_tps"], raw), f"{r['rougeL']:.2f}",
        f"{r['rougeL'] - base['rougeL']:+.2f}" if base else "—",
    ]


def markdown(rows: list[dict], args, command: str) -> str:
    base = next((r for r in rows if r["variant"] == "hf-fp32"), None)
    lines = [
        "## Decode speed and quality per inference variant (`decode_speed.py`)",
        "",
        f"Command: `{command}`  ",
        f"Model: `{args.model}`{' (tiny random model: speeds and ROUGE mean nothing)' if args.smoke else ''}; "
        f"{len(rows) and args.items} dialogsum test items; greedy, repetition penalty 1.1, "
        f"{args.max_new_tokens} new tokens for ROUGE; engine speed = {args.tokens} forced tokens after the short "
        f"({rows[0]['prompt_tokens'][0] if rows else '?'} tokens) and the long "
        f"({rows[0]['prompt_tokens'][1] if rows else '?'} tokens) prompt; everything single-stream; "
        f"threads: {args.threads or 'all'}.  ",
        f"Load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (the benchmark itself keeps "
        "the cores busy; above ~2.5 on 2 cores other work was running too): read the ratios within this run.",
        "",
        "| variant | engine tok/s short | x fp32 | engine tok/s long | x fp32 | weaver tok/s | x fp32 "
        "| raw llama.cpp tok/s | weaver / llama.cpp | ROUGE-L | ΔROUGE-L vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r, base)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="tuned run or model spec (default: newest run in runs/, else base)")
    ap.add_argument("--items", type=int, default=50, help="dialogsum test items scored per variant")
    ap.add_argument("--tokens", type=int, default=64, help="forced new tokens for the engine speed")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="new tokens per ROUGE item")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and llama.cpp (default: all)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, of {', '.join(HF_VARIANTS + GGUF_VARIANTS)}")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, 2 items, few tokens (< 1 min)")
    args = ap.parse_args(argv)
    command = " ".join([".venv/bin/python bench/decode_speed.py", *(sys.argv[1:] if argv is None else argv)])
    args.variants = [v for v in args.variants.split(",") if v]
    if args.smoke:
        import os

        from time_to_quality import tiny_model

        # a smoke run never touches the committed results
        os.environ.setdefault("WEAVER_BENCH_RESULTS", str(BENCH / ".work" / "smoke" / "RESULTS.md"))

        args.model = str(tiny_model(BENCH / ".work" / "decode-smoke" / "tiny-model"))
        args.items, args.tokens, args.max_new_tokens, args.repeats = 2, 8, 8, 1
    args.model = args.model or default_model()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # on a shared CPU, fewer threads than cores avoids oversubscription
    from weaver.models.loading import load_tokenizer

    prompts, refs = load_items(args.items, load_tokenizer(args.model), args.model)
    rows = [run_variant(v, args, prompts, refs) for v in args.variants]
    from run import write_section

    path = write_section("decode_speed", markdown(rows, args, command))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
