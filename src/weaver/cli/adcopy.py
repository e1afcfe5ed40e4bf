"""`weaver adcopy`: several ranked ad copy candidates for a product (score documented in weaver.apps.adcopy).

    weaver adcopy --model smollm2-135m-instruct --product "trail running shoes" --audience "weekend runners" \\
        --tone playful --keywords grip,lightweight --n 5
    weaver adcopy --model gemma3-270m --attributes "类型#上衣*颜色#白色*风格#简约" --lang zh --n 5 --json
"""

from __future__ import annotations

import argparse
import json

from weaver.cli.newsroom import add_source_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--product", default="", help="what is advertised")
    p.add_argument("--audience", default="", help="who it is for")
    p.add_argument("--tone", default="", help="e.g. playful, premium, warm")
    p.add_argument("--keywords", default="", help="comma-separated words the copy should use")
    p.add_argument("--attributes", default="", help="AdvertiseGen attributes, e.g. 类型#上衣*颜色#白色")
    p.add_argument("--n", type=int, default=5, help="candidates to return (default 5)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on tokens per candidate")
    p.add_argument("--json", action="store_true", help="print the candidates and their scores as JSON")


def run(args: argparse.Namespace) -> int:
    from weaver.apps.adcopy import AdRequest, build_record, candidates_json, generate_adcopy
    from weaver.apps.source import open_source
    from weaver.safety import load_policy

    req = AdRequest(args.product, args.audience, args.tone,
                    [k.strip() for k in args.keywords.replace("，", ",").split(",") if k.strip()],
                    args.attributes, args.lang)
    build_record(req)  # fail on a bad request before loading a model
    policy = load_policy(args.safety)
    source = open_source(args.model, args.server, args.server_model, lang=args.lang, backend=args.backend,
                         gguf_quant=args.gguf_quant, per_server=args.per_server)
    cands = generate_adcopy(source, req, args.n, args.seed, policy, args.max_new_tokens)
    if args.json:
        print(json.dumps(candidates_json(cands), ensure_ascii=False, indent=2))
        return 0
    for i, c in enumerate(cands, 1):
        print(f"{i}. [score {c.score:.3f} = likelihood {c.likelihood:.2f}, keywords {c.keyword_coverage:.2f}, "
              f"length {c.length_fit:.2f}]\n   {c.text}\n")
    if len(cands) < args.n:
        print(f"(only {len(cands)} distinct candidates after removing near-duplicates)")
    return 0
