"""LLaMA-Factory's training with the plain prompt format weaver uses for a base model (no chat template).

    bench/.work/lf-venv/bin/python bench/contenders/lf_plain.py lf-train.yaml  # llamafactory-cli train + template

Gemma-3-270M (the Chinese tasks' model) is a base model: its tokenizer has no chat template, so weaver renders
`<bos>### Instruction:\\n{user}\\n\\n### Response:\\n` and trains on `{reply}<eos>` (weaver.data.chat), and the
benchmark scores every contender with that prompt. LLaMA-Factory ships no template that renders exactly this
(`alpaca` adds a default system sentence and no <bos>; `gemma3` is the instruction-tuned model's turn format),
so this script registers one through LLaMA-Factory's own `register_template` under NAME and then runs what
`llamafactory-cli train CONFIG` runs (`run_exp`, reading the YAML from argv). Runs in LLaMA-Factory's venv:
imports nothing from weaver.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "weaver_plain"
USER = "### Instruction:\n{{content}}\n\n### Response:\n"  # LLaMA-Factory slot syntax; weaver.data.chat renders it
SYSTEM = "### System:\n{{content}}\n\n"
_HERE = Path(__file__).resolve().parent


def _lf_importable() -> None:
    """Drop this folder from sys.path: its llamafactory.py (the benchmark's contender module) would shadow the
    llamafactory package when this file runs as a script."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def register() -> None:
    """Register NAME: bos, the instruction header, the user text, the response header; the reply, then eos."""
    _lf_importable()
    from llamafactory.data.formatter import EmptyFormatter, StringFormatter
    from llamafactory.data.template import TEMPLATES, register_template

    if NAME not in TEMPLATES:
        register_template(
            name=NAME,
            format_user=StringFormatter(slots=[USER]),
            format_assistant=StringFormatter(slots=["{{content}}", {"eos_token"}]),
            format_system=StringFormatter(slots=[SYSTEM]),
            format_prefix=EmptyFormatter(slots=[{"bos_token"}]),
        )


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].endswith((".yaml", ".yml")):
        raise SystemExit("usage: lf_plain.py LF_TRAIN.yaml")
    register()
    from llamafactory.train.tuner import run_exp

    run_exp()  # reads the YAML named in sys.argv[1], as llamafactory-cli train does


if __name__ == "__main__":
    main()
