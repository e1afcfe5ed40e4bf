"""Weaver: fine-tune a pretrained language model for a writing task, prove it writes better, serve it.

The pipeline is data -> tune -> eval -> export -> serve/apps; each stage is one function
(`weaver.tune(cfg)`, `weaver.evaluate(cfg)`, ...) that the `weaver` CLI maps verbs onto.
Heavy imports (torch, transformers) happen inside the stage modules, so `import weaver` is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy re-exports keep `import weaver` (and `weaver --help`) fast.
    if name == "tune":
        from weaver.tuning.run import tune

        return tune
    if name == "evaluate":
        from weaver.eval.runner import evaluate

        return evaluate
    if name == "load_model":
        from weaver.models.loading import load_model

        return load_model
    raise AttributeError(name)
