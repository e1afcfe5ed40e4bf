"""Weaver: fine-tune a pretrained language model for a writing task, prove it writes better, serve it.

The pipeline is data -> tune -> eval -> export -> serve/apps; each stage is one function
(`weaver.tune(cfg)`, `weaver.evaluate(cfg)`, ...) that the `weaver` CLI maps verbs onto.
Heavy imports (torch, transformers) happen inside the stage modules, so `import weaver` is cheap.
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"

# PyTorch's CPU allocator puts tensors of 2 MiB and more on 2 MiB-aligned memory advised as transparent huge pages
# when THP_MEM_ALLOC_ENABLE is 1 (read once, at torch's first allocation: so only if torch is not imported yet).
# A CPU training step allocates and frees gigabytes of activations; on huge pages glibc's heap keeps less of them.
# Dialogsum preset, 2 min of training, one run: peak RSS 2.35 -> 1.87 GB for 11% fewer target tok/s (26.2 -> 23.2),
# the same losses (bench/RESULTS.md, train_throughput). THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
if _sys.platform == "linux" and "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


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
