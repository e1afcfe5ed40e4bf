"""`weaver eval`: compare a tuned model with its base on held-out data and write the report.

    weaver eval --model runs/dialogsum --data ../shared/data/dialogsum/test.jsonl --limit 100 --out runs/dialogsum/eval
    weaver eval --model runs/dialogsum                  # the run's own held-out split, report in runs/dialogsum/eval
    weaver eval --model smollm2-135m-instruct --data test.jsonl --task headline --out reports/base
    weaver eval --config configs/x.yaml --model runs/x --generate.num_beams 4
    weaver eval --model runs/dpo --pairs heldout-pairs.jsonl   # vs the run it started from, + reward accuracy

With a tuned run, the run's config.yaml is the starting point (so prompts are rendered exactly as in
training) and its base model is the comparison; flags and `--section.key value` overrides go on top.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="tuned run directory or any model spec to evaluate")
    p.add_argument("--data", default=None, help="test file (default: the run's held-out split)")
    p.add_argument("--task", default=None, help="writing task (default: the run's, else summarize)")
    p.add_argument("--base", default=None, help="model to compare against (default: the run's base model)")
    p.add_argument("--limit", default=None, help="evaluate the first N test examples ('none' = all; default 100)")
    p.add_argument("--out", default=None, help="report folder (default: RUN/eval)")
    p.add_argument("--config", default=None, help="YAML config to start from (default: the run's config.yaml)")
    p.add_argument("--pairs", default=None, help="held-out preference pairs: reward accuracy against the base, and "
                                                 "how often each model prefers the chosen reply")
    p.add_argument("--server", default=None, help="OpenAI-compatible server (weaver serve, vLLM, llama.cpp) that "
                                                  "generates the model under test's outputs; perplexity stays local")
    p.add_argument("--server-model", default=None, help="with --server: the model under test's served id")
    p.add_argument("--base-server-model", default=None,
                   help="with --server: the base's served id (default: the base runs here)")
    p.epilog = ("Any config value can be overridden with --section.key value, e.g. --generate.max_new_tokens 48 "
                "--eval.bootstrap 2000 --eval.semantic false.")
    accept_overrides(p)


def accept_overrides(p: argparse.ArgumentParser) -> None:
    """Let a verb's parser take `--section.key value` overrides (into args.overrides) besides its own flags."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        # argparse cannot declare "--anything.with.a.dot value" options: split them off first
        known, overrides = split_overrides(list(args or []))
        ns, extra = parse(known, namespace)
        ns.overrides = overrides
        return ns, extra

    p.parse_known_args = parse_known_args


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the verb's own arguments, the `--section.key value` overrides), order kept."""
    known, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            take = 1 if "=" in arg or i + 1 >= len(argv) else 2
            overrides += argv[i : i + take]
            i += take
        else:
            known.append(arg)
            i += 1
    return known, overrides


def build_config(args: argparse.Namespace):
    """The RunConfig for this command: config file (or the run's) < flags < overrides."""
    from weaver.config import load_config

    base_file = args.config
    run_cfg = Path(args.model) / "config.yaml"
    if base_file is None and run_cfg.is_file():
        base_file = run_cfg
    flags = {"model.name": args.model, "data.test": args.data, "data.task": args.task, "eval.base": args.base,
             "eval.limit": args.limit, "eval.out_dir": args.out, "eval.pairs": args.pairs,
             "eval.server": args.server, "eval.server_model": args.server_model,
             "eval.base_server_model": args.base_server_model}
    overrides = [x for key, value in flags.items() if value is not None for x in (f"--{key}", str(value))]
    return load_config(base_file, overrides + list(args.overrides or []))


def run(args: argparse.Namespace) -> int:
    from weaver.eval.runner import evaluate

    report = evaluate(build_config(args))
    print(report.table())
    if report.data.get("pairs"):
        from weaver.eval.preferences import format_pair_metrics

        print("\n" + format_pair_metrics(report.data["pairs"]))
    print(f"\nreport: {report.out_dir / 'report.html'} (also report.md, report.json, predictions.jsonl)")
    return 0
