"""The pieces of one training step: precision choice, the loss, the optimizer and the LR schedule.

The loss computes LM-head logits only at supervised (target) positions: with SmolLM2's 49k-token
vocabulary, full-sequence logits dominate both the time and the memory of a step on CPU, while a
summarisation example supervises ~30 of its ~250 tokens. Gradients are identical to the full-logit
loss (a test checks it).
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
import torch.nn.functional as F

from weaver.config import TrainConfig
from weaver.errors import ConfigError

log = logging.getLogger(__name__)


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """Pick the autocast precision: ("bf16" | "fp32", why).

    Args:
        requested: auto | bf16 | fp32 (train.precision).
        device: the training device.
    Returns:
        The chosen precision and a one-line reason (recorded in run.json).
    """
    if requested != "auto":
        return requested, "set by train.precision"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA device supports bf16"
        return "fp32", "CUDA device without bf16"
    if device.type == "cpu":
        cap = torch.backends.cpu.get_cpu_capability()
        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "bf16", f"CPU with native bf16 (oneDNN bf16 supported, capability {cap})"
        return "fp32", f"CPU without native bf16 (capability {cap})"
    return "fp32", f"no bf16 autocast rule for device {device.type}"


ADAPTER_ONLY = ("lora", "adalora", "prefix", "ia3", "adapter")
"""Methods whose run saves only the adapter, so the frozen base may be stored in another dtype while training."""


def choose_frozen_dtype(requested: str, precision: str, method: str) -> tuple[str, str]:
    """How to store the frozen base weights: ("bfloat16" | "float32" | "nf4", why).

    Args:
        requested: auto | float32 | bfloat16 (train.frozen_dtype; TrainConfig refused the impossible pairs).
        precision: the chosen autocast precision (bf16 | fp32).
        method: train.method.
    """
    if requested == "bfloat16" and precision != "bf16":
        raise ConfigError(f"--train.frozen_dtype bfloat16 needs bf16 autocast, and the precision here is {precision}: "
                          "set --train.frozen_dtype auto or float32")
    if requested != "auto":
        return requested, "set by train.frozen_dtype"
    if method not in ADAPTER_ONLY:
        return "float32", f"train.method {method} saves the whole model"
    if precision != "bf16":
        return "float32", "no bf16 autocast"
    # measured on a native-bf16 CPU before this option existed: an isolated step 1.8 -> 1.34 GB, and faster
    return "bfloat16", "bf16 autocast casts the frozen weights to bf16 anyway; stored so, once"


def autocast(precision: str, device: torch.device):
    """Autocast context for the forward pass (master weights stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _base(model):
    """The plain transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


LOGIT_CHUNK_ELEMENTS = 2**25
"""Logits computed at once by target_cross_entropy (train.logit_chunk_mb 128): 32M floats, i.e. 682 target
positions of SmolLM2's 49k vocabulary, 128 of Gemma-3's 262k."""


class CausalLMLoss(torch.nn.Module):
    """Mean next-token cross-entropy over target positions, as one module (what DDP/accelerate wraps).

    forward(input_ids, attention_mask, labels) -> (loss, number of target tokens); a packed batch
    (weaver.data.tokenize.Collator(pack=True)) gives position_ids and no attention_mask instead.
    """

    def __init__(self, model, target_only: bool = True, chunk_elements: int | None = LOGIT_CHUNK_ELEMENTS):
        super().__init__()
        self.model = model
        self.target_only = target_only
        self.chunk_elements = chunk_elements

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None):
        shifted = labels[:, 1:]
        mask = shifted != -100
        n = mask.sum()
        if not self.target_only:
            # prefix tuning needs peft's own forward (it injects the virtual tokens' keys and values)
            packed = {} if position_ids is None else {"position_ids": position_ids, "use_cache": False}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **packed)
            return out.loss, n
        base = _base(self.model)
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state
        return target_cross_entropy(base, hidden[:, :-1][mask], shifted[mask], self.chunk_elements), n




def _chunk_loss(head, cap, hidden, targets):
    logits = head(hidden)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def target_cross_entropy(base, hidden, targets, chunk_elements: int | None = LOGIT_CHUNK_ELEMENTS):
    """Mean cross-entropy of the LM head's logits at the target positions (hidden: (T, d), targets: (T,)).

    With a large vocabulary the logits, their softmax and its gradient dominate a step's memory (Gemma-3-270M,
    262k tokens, ~700 targets: about 0.7 GB each). Above chunk_elements logits, they are computed in chunks of
    positions, each recomputed in the backward pass instead of kept (activation checkpointing): the same loss and
    gradients (float summation order aside), one chunk's logits alive at a time, one more LM-head forward.
    """
    from torch.utils.checkpoint import checkpoint

    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    per_chunk = max(1, chunk_elements // head.weight.shape[0]) if chunk_elements else len(targets)
    if len(targets) <= per_chunk:
        return _chunk_loss(head, cap, hidden, targets) / len(targets)
    total = sum(checkpoint(_chunk_loss, head, cap, hidden[i : i + per_chunk], targets[i : i + per_chunk],
                           use_reentrant=False)
                for i in range(0, len(targets), per_chunk))
    return total / len(targets)


class Seq2SeqLMLoss(torch.nn.Module):
    """Mean cross-entropy over the target tokens of an encoder-decoder model (T5, BART), as one module.

    forward(input_ids, attention_mask, labels) -> (loss, number of target tokens): the encoder reads the
    source once, the decoder is teacher-forced on the labels shifted right (the model's own forward, so peft's
    prefix tuning and AdaLoRA's regulariser apply). Every decoder position is a target, so there are no
    prompt positions to skip as CausalLMLoss does.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, labels=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)
        return out.loss, (labels != -100).sum()


def make_optimizer(model, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum (weight decay = L2) over the trainable params."""
    params = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def make_scheduler(optimizer, train: TrainConfig, total_steps: int):
    """Constant, linear or cosine decay after `warmup_steps` of linear warm-up (transformers' schedules)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[train.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=total_steps)


@functools.cache
def _libc():
    """The C library (ctypes), or None where it cannot be opened."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none."""
    return getattr(_libc(), "malloc_trim", None)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def set_mmap_threshold(kb: int | None) -> str:
    """Give allocations of at least `kb` KiB their own memory map (glibc mallopt M_MMAP_THRESHOLD) for this process.

    glibc starts at 128 KiB but raises the threshold to the size of every mapped block freed (up to 32 MiB), so
    after the first step a training step's activations (7-130 MB tensors) come from its heap; freed, they stay
    resident (malloc_trim returns only the heap's top). A fixed threshold turns that off: dialogsum preset, 2
    steps, peak RSS 2.43 -> 1.42 GB with the same losses but ~24% fewer tokens/s (bench/RESULTS.md,
    train_memory-dialogsum-smollm2), so it is an option (train.mmap_threshold_kb), off by default.

    Args:
        kb: the threshold in KiB (train.mmap_threshold_kb), or None to keep glibc's own.
    Returns:
        What was done, for run.json: the setting, or why nothing was changed.
    """
    import os

    if kb is None:
        return "glibc's own (train.mmap_threshold_kb none)"
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']} from the environment"
    libc = _libc()
    gnu = getattr(libc, "gnu_get_libc_version", None)
    mallopt = getattr(libc, "mallopt", None)
    if gnu is None or mallopt is None:
        return "not glibc: the C library's own"
    if mallopt(M_MMAP_THRESHOLD, kb * 1024) != 1:
        return f"glibc refused an mmap threshold of {kb} KiB: its own"
    return f"glibc mmap threshold {kb} KiB"


def thp_mode() -> str | None:
    """The kernel's transparent huge page mode (always | madvise | never), None where it has none."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return fh.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def torch_huge_pages() -> str:
    """Whether torch's CPU tensors of 2 MiB and more go on transparent huge pages (`import weaver` sets
    THP_MEM_ALLOC_ENABLE=1 when torch is not imported yet), for run.json."""
    import os

    mode = thp_mode()
    if mode is None:
        return "no transparent huge pages here"
    if os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        return "torch tensors on normal pages (THP_MEM_ALLOC_ENABLE is not 1)"
    if mode == "never":
        return "torch asks for huge pages, but the kernel's transparent huge pages are off (never)"
    return f"torch tensors >= 2 MiB on huge pages (THP_MEM_ALLOC_ENABLE=1, kernel mode {mode})"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    import resource
    import sys

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024, 1)


def rss_mb() -> float | None:
    """Resident memory of this process now, in MiB (Linux /proc; None elsewhere)."""
    import os

    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc malloc_trim) after a training step.

    Batches of different lengths leave the C heap fragmented: without this, the resident size of a CPU run
    creeps up step after step (SmolLM2-135M dialogsum, 12 steps: peak RSS 4.3 GB; most of it free heap the
    process keeps). A no-op where glibc is not the allocator.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
