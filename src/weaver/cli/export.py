"""`weaver export`: merge a run's adapter into its base model, or write a GGUF file for llama.cpp.

    weaver export runs/dialogsum --merge --out exports/dialogsum
    weaver export runs/dialogsum --gguf --quant q8_0 --out exports/dialogsum-q8_0.gguf
"""

from __future__ import annotations

import argparse

from weaver.models.export import QUANTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="tuned run directory (or any model spec for --gguf)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--merge", action="store_true", help="fold the adapter into the base: a plain HF folder")
    mode.add_argument("--gguf", action="store_true", help="write a GGUF file that llama.cpp loads")
    p.add_argument("--out", required=True, help="output folder (--merge) or .gguf file (--gguf)")
    p.add_argument("--quant", choices=QUANTS, default="f16", help="GGUF weight type (q4_k_m needs llama.cpp)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights dtype for --merge")


def run(args: argparse.Namespace) -> int:
    from weaver.models.export import export_gguf, merge_run

    if args.merge:
        out = merge_run(args.run, args.out, dtype=args.dtype)
        print(f"merged model written to {out} (load it with transformers or `weaver generate --model {out}`)")
    else:
        out = export_gguf(args.run, args.out, quant=args.quant)
        size = out.stat().st_size / 2**20
        print(f"GGUF ({args.quant}, {size:.0f} MiB) written to {out}")
    return 0
