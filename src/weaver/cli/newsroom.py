"""`weaver newsroom`: summaries, headlines and a digest for a folder (or .jsonl) of articles.

    weaver newsroom --model smollm2-135m-instruct --in articles/ --out digest/ --n-headlines 3
    weaver newsroom --server http://127.0.0.1:8000 --server-model news-lora --in articles.jsonl --out digest/
    weaver newsroom --server http://gpu1:8000 --server http://gpu2:8000 --per-server 8 --server-model news \
        --in million-articles.jsonl --out digest/       # a pool: 16 articles in flight, the input streamed

Articles stream from --in and each result is written when done: re-running with the same --out skips the
articles already done (see weaver.apps.newsroom).
"""

from __future__ import annotations

import argparse
import sys

from weaver.models.catalog import DEFAULT_MODEL


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Where the app's text comes from (--model + --backend, or --server), --lang and --safety: every app verb."""
    from weaver.config import BACKEND_NAMES, DEFAULT_BACKEND

    p.add_argument("--model", default=DEFAULT_MODEL, help="catalog name, HF folder, .gguf file or tuned run")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES,
                   help="decoding backend for --model (auto: llama.cpp on a CPU where it can run the "
                        "model, else transformers; llamacpp: llama.cpp on a GGUF export, made once and cached)")
    p.add_argument("--gguf-quant", default="q8_0", choices=["f16", "q8_0", "q4_k_m"],
                   help="with --backend llamacpp: the quantisation of the export (a .gguf or catalog model: as is)")
    p.add_argument("--server", default=None, action="append",
                   help="use a served model instead: base URL of `weaver serve` or any OpenAI-compatible server; "
                        "repeat it for a pool of servers serving the same --server-model")
    p.add_argument("--per-server", type=int, default=1,
                   help="with --server: requests in flight on each server at once (default 1)")
    p.add_argument("--server-model", default=None, help="with --server: the model id to call")
    p.add_argument("--lang", default="en", choices=["en", "zh"], help="language of the task instructions")
    p.add_argument("--safety", default=None, help="safety policy YAML (default: the packaged policy)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--in", dest="in_path", required=True, help="folder of .txt/.md articles or a .jsonl file")
    p.add_argument("--out", required=True, help="output folder: articles/<id>.json, digest.md, digest.html")
    p.add_argument("--n-headlines", type=int, default=3, help="alternative headlines per article (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for the sampled alternative headlines")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on tokens per output (default: per task)")
    p.add_argument("--no-grounding", action="store_true",
                   help="do not tie summary sentences to the article sentences that support them")


def run(args: argparse.Namespace) -> int:
    from weaver.apps.newsroom import check_input, run_newsroom
    from weaver.apps.source import open_source
    from weaver.errors import WeaverError
    from weaver.safety import load_policy

    if args.n_headlines < 0:
        raise WeaverError("--n-headlines must be 0 or more")
    check_input(args.in_path)  # fail on a bad --in before loading a model (one article read: the rest stream)
    policy = load_policy(args.safety)
    source = open_source(args.model, args.server, args.server_model, lang=args.lang, backend=args.backend,
                         gguf_quant=args.gguf_quant, per_server=args.per_server)
    result = run_newsroom(source, args.in_path, args.out, args.n_headlines, policy=policy, seed=args.seed,
                          max_new_tokens=args.max_new_tokens, grounding=not args.no_grounding)
    print(f"{len(result.done)} articles written, {len(result.skipped)} already done, {len(result.failed)} failed "
          f"-> {result.out_dir / 'digest.md'}, {result.out_dir / 'digest.html'}")
    for aid, reason in result.failed.items():
        print(f"failed: {aid}: {reason}", file=sys.stderr)
    return 3 if result.failed else 0
