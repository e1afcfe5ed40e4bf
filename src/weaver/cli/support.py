"""`weaver support`: build a knowledge-base index, then answer customer messages grounded in it.

    weaver support index --kb faq.jsonl --out kb.sqlite            # again after edits: only changes re-embedded
    weaver support ask --index kb.sqlite --model smollm2-135m-instruct "I forgot my Gmail password"
    weaver support ask --index kb.sqlite --server http://127.0.0.1:8000 --server-model base "..." --json
"""

from __future__ import annotations

import argparse
import json

from weaver.cli.newsroom import add_source_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="support_cmd", metavar="COMMAND", required=True)
    idx = sub.add_parser("index", help="build or update the retrieval index of a knowledge base")
    idx.add_argument("--kb", required=True, help="FAQ .jsonl/.csv (question, answer, id) or .txt/.md docs, or a folder")
    idx.add_argument("--out", required=True, help="the index file (SQLite), e.g. kb.sqlite")
    ask = sub.add_parser("ask", help="answer a customer message from the knowledge base (or hand over)")
    add_source_arguments(ask)
    ask.add_argument("question", help="the customer's message")
    ask.add_argument("--index", required=True, help="index file built by `weaver support index`")
    ask.add_argument("--k", type=int, default=3, help="passages retrieved into the prompt (default 3)")
    ask.add_argument("--min-confidence", type=float, default=None,
                     help="hand over to a human below this retrieval confidence (default 0.3)")
    ask.add_argument("--mode", default="hybrid", choices=["hybrid", "embedding", "lexical"], help="retrieval scoring")
    ask.add_argument("--max-new-tokens", type=int, default=None, help="cap on the reply length")
    ask.add_argument("--json", action="store_true", help="print the reply, citations and passages as JSON")


def run(args: argparse.Namespace) -> int:
    from weaver.apps.retrieval import Index, build_index
    from weaver.errors import WeaverError

    if args.support_cmd == "index":
        stats = build_index(args.kb, args.out)
        print(f"{args.out}: {stats['added']} added, {stats['updated']} updated, {stats['removed']} removed, "
              f"{stats['unchanged']} unchanged documents ({stats['embedded']} passages embedded)")
        return 0
    from weaver.apps.source import open_source
    from weaver.apps.support import MIN_CONFIDENCE, answer
    from weaver.safety import load_policy

    if not args.question.strip():
        raise WeaverError("the question is empty: pass the customer's message in quotes")
    if args.k < 1:
        raise WeaverError("--k must be at least 1")
    index = Index(args.index)
    policy = load_policy(args.safety)
    source = open_source(args.model, args.server, args.server_model, lang=args.lang, backend=args.backend,
                         gguf_quant=args.gguf_quant, per_server=args.per_server)
    threshold = MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    reply = answer(source, index, args.question, args.k, threshold, args.mode, policy, args.max_new_tokens)
    if args.json:
        print(json.dumps(reply.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(reply.text)
    label = "handed over to a human" if reply.handed_over else "retrieved"
    cited = "" if reply.handed_over else f"; cited: {', '.join(reply.citations) or 'none'}"
    print(f"\n[{label}; confidence {reply.confidence:.2f}; passages given: "
          f"{', '.join(h.id for h in reply.passages)}{cited}]")
    return 0
