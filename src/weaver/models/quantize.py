"""Make a loaded transformers model cheaper on CPU: int8 dynamic quantisation and structured pruning.

    model, tok = load_model("runs/dialogsum", merge=True)
    model = quantize_int8(model)            # nn.Linear -> dynamically quantised int8 Linear
    model = prune_ffn(model, ratio=0.25)    # drop the 25% weakest MLP channels in every block

`quantize_int8` uses PyTorch's own `torch.ao.quantization.quantize_dynamic`: weights stored as int8
with a per-channel scale, activations quantised on the fly per batch. `prune_ffn` is structured
(whole intermediate channels of the gated MLP removed, so the matrices really shrink); unstructured
magnitude pruning leaves dense matrices of the same shape and cannot be faster on CPU.
Their measured effect on speed and ROUGE is in bench/RESULTS.md and docs/EXPORT.md.
"""

from __future__ import annotations

import logging
import warnings

from weaver.errors import WeaverError

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("none", "int8")


def quantize_int8(model, include_lm_head: bool = True):
    """Replace every nn.Linear with a dynamically quantised int8 Linear (in place; returns the model).

    Args:
        model: a float32 transformers causal LM (a PEFT adapter must be merged first).
        include_lm_head: also quantise the output projection (the largest matrix of a small model).
    Returns:
        The quantised model, in eval mode.
    Raises:
        WeaverError: the model is not float32 or still carries an unmerged adapter.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    if hasattr(model, "peft_config"):
        raise WeaverError("int8 quantisation needs the adapter merged: load the run with merge=True")
    if next(model.parameters()).dtype != torch.float32:
        raise WeaverError("int8 quantisation starts from float32 weights: load the model with dtype float32")
    if include_lm_head and getattr(model.config, "tie_word_embeddings", False):
        # quantize_dynamic swaps the module, so the output projection stops sharing the embedding tensor
        head = model.get_output_embeddings()
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if not include_lm_head:
        names.discard("lm_head")
    with warnings.catch_warnings():
        # torch.ao's eager-mode API is deprecated in favour of torchao, whose CPU int8 path needs
        # torch.compile to be fast; the fbgemm kernels behind quantize_dynamic are fast as they are.
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
        model = quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    model.eval()
    return model


def _gated_mlps(model):
    """(block index, mlp) for every block with a gate/up/down projection (Llama, Gemma, Qwen, ...)."""
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise WeaverError(f"structured pruning supports decoder models with model.layers, not {type(model).__name__}")
    out = []
    for i, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            raise WeaverError(f"block {i} has no gated MLP (gate_proj/up_proj/down_proj): cannot prune it")
        out.append((i, mlp))
    return out


def prune_ffn(model, ratio: float):
    """Remove the `ratio` weakest intermediate channels of every gated MLP (structured, in place).

    A channel j's score is ||down[:, j]|| * (||gate[j]|| + ||up[j]||): the size of what it can add to
    the residual stream. The same number of channels is kept in every block, so the config stays valid
    (`intermediate_size` is updated) and the pruned model saves and reloads as a normal model.

    Args:
        model: a transformers causal LM (float32 or bfloat16), adapter merged.
        ratio: fraction of channels to remove, 0 <= ratio < 1.
    Returns:
        The pruned model.
    Raises:
        WeaverError: ratio out of range or a model without gated MLPs.
    """
    import torch

    if not 0 <= ratio < 1:
        raise WeaverError(f"--prune {ratio} must be in [0, 1)")
    mlps = _gated_mlps(model)
    width = mlps[0][1].gate_proj.out_features
    keep = max(1, int(round(width * (1 - ratio))))
    if keep == width:
        return model
    with torch.no_grad():
        for _, mlp in mlps:
            score = mlp.down_proj.weight.float().norm(dim=0) * (
                mlp.gate_proj.weight.float().norm(dim=1) + mlp.up_proj.weight.float().norm(dim=1)
            )
            idx = torch.topk(score, keep).indices.sort().values
            mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=idx)
            mlp.up_proj = _slice_linear(mlp.up_proj, rows=idx)
            mlp.down_proj = _slice_linear(mlp.down_proj, cols=idx)
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = keep
    model.config.intermediate_size = keep
    log.info("pruned MLP width %d -> %d in %d blocks", width, keep, len(mlps))
    return model


def _slice_linear(layer, rows=None, cols=None):
    import torch

    w = layer.weight
    w = w[rows] if rows is not None else w[:, cols]
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None, dtype=w.dtype, device=w.device)
    new.weight.copy_(w)
    if layer.bias is not None:
        new.bias.copy_(layer.bias[rows] if rows is not None else layer.bias)
    return new


def apply(model, quantize: str = "none", prune: float = 0.0):
    """Apply the CLI options in the right order: prune (float weights), then quantise.

    Raises:
        WeaverError: an unknown --quantize value, or invalid inputs for either step.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise WeaverError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZE_CHOICES)}")
    if prune:
        model = prune_ffn(model, prune)
    if quantize == "int8":
        model = quantize_int8(model)
    return model
