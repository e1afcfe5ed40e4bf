"""The `weaver` command line: maps verbs onto the stage functions, nothing more.

    weaver models
    weaver generate --model smollm2-135m-instruct --prompt "Write a headline: ..."

Each verb lives in a small `_cmd_*` function; verbs owned by other stages register themselves
through `VERBS` below. A `WeaverError` is printed as one line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from weaver.errors import WeaverError

# verb -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
VERBS: dict[str, tuple[str, str]] = {
    "models": ("weaver.cli.models", "list the embedded models: parameters, languages, licence, installed or not"),
    "generate": ("weaver.cli.generate", "generate a reply from a model (streams tokens to the terminal)"),
    "data": ("weaver.cli.data", "check a data file: counts, token lengths, languages, duplicates, overlap"),
    "tune": ("weaver.cli.tune", "fine-tune a model from a YAML config (LoRA, AdaLoRA, prefix, IA3, freeze, full)"),
    "eval": ("weaver.cli.eval", "compare base vs tuned on held-out data and write a report"),
    "export": ("weaver.cli.export", "merge an adapter into the base model or write a GGUF file"),
    "serve": ("weaver.cli.serve", "serve a model over an OpenAI-compatible HTTP API with a writer's web page"),
    "newsroom": ("weaver.cli.newsroom", "summaries, headlines and a digest for a batch of articles"),
    "adcopy": ("weaver.cli.adcopy", "several ranked ad copy candidates for a product"),
    "support": ("weaver.cli.support", "customer-support replies grounded in a knowledge base"),
    "feedback": ("weaver.cli.feedback", "export the writers' choices as training data; count them"),
    "sweep": ("weaver.cli.sweep", "search hyper-parameters over tuning runs (Optuna; resumes after a kill)"),
    "runs": ("weaver.cli.runs", "list the runs under a folder, or compare runs side by side"),
}


def _available_verbs() -> dict[str, tuple[str, str]]:
    """Verbs whose module exists in this installation (stages land one at a time)."""
    import importlib.util

    def present(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package has not landed
            return False

    return {v: spec for v, spec in VERBS.items() if present(spec[0])}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weaver",
        description="Fine-tune a language model for a writing task, prove it writes better, and serve it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in _available_verbs().items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `weaver` console script; returns the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        _quiet_libraries()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except WeaverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        if args.verbose:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with -v for details", file=sys.stderr)
        return 1


def _quiet_libraries() -> None:
    """Hide library progress bars and advisory logs that are noise to a writer."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
