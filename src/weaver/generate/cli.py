"""`weaver generate`: one reply from a model, streamed to the terminal.

    weaver generate --model smollm2-135m-instruct --prompt "Write a headline: ..." --max-new-tokens 60
"""

from __future__ import annotations

import argparse
import sys

from weaver.models.catalog import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="catalog name, HF folder, .gguf file or tuned run")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("transformers", "llamacpp"), default="transformers",
                   help="generation engine (llamacpp: `make install-llamacpp`; a run is exported to GGUF once)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none", help="int8: dynamic int8 Linear layers")
    p.add_argument("--gguf-quant", choices=("f16", "q8_0", "q4_k_m"), default="q8_0",
                   help="GGUF weights for --backend llamacpp")


def run(args: argparse.Namespace) -> int:
    from weaver.data.chat import render_messages
    from weaver.errors import WeaverError
    from weaver.generate.engine import SamplingParams
    from weaver.generate.llamacpp import load_generator

    if not args.prompt.strip():
        raise WeaverError("--prompt is empty: pass the text you want the model to answer")
    if args.max_new_tokens < 1:
        raise WeaverError("--max-new-tokens must be at least 1")
    gen, tok, _ = load_generator(args.model, args.backend, args.quantize, args.gguf_quant)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    for piece in gen.stream(render_messages(tok, messages), params):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
