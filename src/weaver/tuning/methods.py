"""PEFT method builders: turn a pretrained causal or seq2seq LM into the model that `weaver tune` trains.

    model = build_trainable(base_model, cfg.train, total_steps=120)
    print(trainable_summary(model))

lora / adalora / prefix / ia3 come from `peft`; adapter adds bottleneck adapters (weaver.models.bottleneck,
Houlsby et al. 2019) after the attention and/or MLP of each adapted block; freeze trains only the top N
blocks (and/or the LM head) of the plain model; full trains everything. `train.top_layers` (or
`train.layers`) restricts LoRA/AdaLoRA/adapter to some blocks: when only the top blocks are adapted,
autograd stops at the lowest adapted block, which is where most of the CPU time of a backward pass goes
(see bench/RESULTS.md).
"""

from __future__ import annotations

import logging

import torch

from weaver.config import TrainConfig
from weaver.errors import ConfigError

log = logging.getLogger(__name__)
PEFT_METHODS = ("lora", "adalora", "prefix", "ia3")


def num_layers(model) -> int:
    """Number of transformer blocks of a causal LM (from its config)."""
    cfg = model.config
    n = getattr(cfg, "num_hidden_layers", None) or getattr(getattr(cfg, "text_config", None), "num_hidden_layers", 0)
    if not n:
        raise ConfigError("cannot tell how many layers this model has; remove train.layers / train.top_layers")
    return int(n)


def selected_layers(model, train: TrainConfig) -> list[int] | None:
    """The block indices chosen by train.layers / train.top_layers (None = all blocks).

    Raises:
        ConfigError: an index is out of range or top_layers exceeds the model's depth.
    """
    n = num_layers(model)
    if train.layers is not None:
        out = sorted({i + n if i < 0 else i for i in train.layers})
        if not out or out[0] < 0 or out[-1] >= n:
            raise ConfigError(f"train.layers {train.layers} is out of range for a model with {n} layers")
        return out
    if train.top_layers is not None:
        if not 1 <= train.top_layers <= n:
            raise ConfigError(f"train.top_layers must be between 1 and {n} for this model, got {train.top_layers}")
        return list(range(n - train.top_layers, n))
    return None


def _targets(train: TrainConfig, model=None):
    """peft target_modules; "all-linear" is spelled out when layers are restricted (peft requires a list then)."""
    mods = list(train.target_modules)
    if mods != ["all-linear"]:
        return mods
    if model is None:
        return "all-linear"
    layer = model.get_decoder().layers[0]
    return sorted({n.rsplit(".", 1)[-1] for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)})


def peft_config(model, train: TrainConfig, total_steps: int):
    """The peft config object for a PEFT method (lora, adalora, prefix, ia3), for a causal or a seq2seq LM.

    Raises:
        ConfigError: a setting that this method does not support.
    """
    from peft import AdaLoraConfig, IA3Config, LoraConfig, PrefixTuningConfig, TaskType

    from weaver.models.arch import model_is_seq2seq

    task = TaskType.SEQ_2_SEQ_LM if model_is_seq2seq(model) else TaskType.CAUSAL_LM
    layers = selected_layers(model, train)
    if train.method == "lora":
        return LoraConfig(
            task_type=task, r=train.lora_r, lora_alpha=train.lora_alpha,
            lora_dropout=train.lora_dropout, target_modules=_targets(train, model if layers else None),
            layers_to_transform=layers,
        )
    if train.method == "adalora":
        # AdaLoRA prunes ranks from init_r down to target_r between tinit and total_step - tfinal.
        return AdaLoraConfig(
            task_type=task, init_r=train.lora_r, target_r=max(1, train.lora_r // 2),
            lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
            target_modules=_targets(train, model if layers else None),
            layers_to_transform=layers, total_step=max(total_steps, 3),
            tinit=max(0, total_steps // 10), tfinal=max(0, total_steps // 5), deltaT=1,
        )
    if layers is not None:
        raise ConfigError(f"train.layers / train.top_layers apply to lora, adalora, adapter and freeze, "
                          f"not {train.method}")
    if train.method == "prefix":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=train.num_virtual_tokens)
    if train.method == "ia3":
        if _targets(train) == "all-linear":
            return IA3Config(task_type=task)  # peft's per-architecture default modules
        ff = [m for m in train.target_modules if m in ("down_proj", "fc2", "c_proj", "w2", "wo")]
        return IA3Config(task_type=task, target_modules=train.target_modules, feedforward_modules=ff)
    raise ConfigError(f"train.method {train.method!r} is not a peft method")


def _freeze(model, train: TrainConfig) -> None:
    """Freeze everything but the selected top blocks (default: the top 2) and, optionally, the LM head."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = selected_layers(model, train)
    if layers is None:
        layers = list(range(num_layers(model) - 2, num_layers(model)))
    layer_list = model.get_decoder().layers
    for i in layers:
        for p in layer_list[i].parameters():
            p.requires_grad_(True)
    if train.train_lm_head:
        for p in model.get_output_embeddings().parameters():
            p.requires_grad_(True)
    if hasattr(model.get_decoder(), "norm") and layers[-1] == num_layers(model) - 1:
        for p in model.get_decoder().norm.parameters():
            p.requires_grad_(True)


def _bottleneck(model, train: TrainConfig):
    """Freeze the base model and add trainable bottleneck adapters to the selected blocks (default: all)."""
    from weaver.models.bottleneck import BottleneckModel, BottleneckSettings

    for p in model.parameters():
        p.requires_grad_(False)
    settings = BottleneckSettings(size=train.adapter_size, placement=train.adapter_placement,
                                  layers=selected_layers(model, train))
    return BottleneckModel(model, settings).train()


DROPOUT_CONFIG_KEYS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop",
                       "dropout_rate", "activation_dropout")


def set_dropout(model, p: float) -> int:
    """Set every attention and hidden dropout of a plain transformers model to p (train.dropout).

    The modules read their dropout when they are built (Llama and Gemma-3 attention copy
    `config.attention_dropout` into `self.attention_dropout` and use it at forward time; other models hold
    `nn.Dropout` modules), so editing `model.config` alone changes nothing: each module is set, and the config
    too, so that what was trained with is recorded. Call it before an adapter is added: peft's own dropout
    (`train.lora_dropout`) is not touched.
    Returns:
        The number of modules set.
    """
    configs = [model.config, getattr(model.config, "text_config", None)]
    for cfg in filter(None, configs):
        for name in DROPOUT_CONFIG_KEYS:
            if isinstance(getattr(cfg, name, None), (int, float)) and not isinstance(getattr(cfg, name), bool):
                setattr(cfg, name, p)
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
            changed += 1
        elif isinstance(getattr(module, "attention_dropout", None), (int, float)):
            module.attention_dropout = p
            changed += 1
    return changed


def build_trainable(model, train: TrainConfig, total_steps: int = 100):
    """Wrap or mark a pretrained causal LM for training with train.method.

    Args:
        model: a transformers causal LM (fp32 master weights).
        train: the train section of the run config.
        total_steps: planned optimizer steps (AdaLoRA's rank schedule needs it).
    Returns:
        The model to train: a `peft.PeftModel` for lora/adalora/prefix/ia3, a BottleneckModel for adapter,
        the model itself otherwise.
    Raises:
        ConfigError: a method setting this model does not support.
    """
    if train.dropout is not None and not set_dropout(model, train.dropout):
        log.warning("train.dropout: %s has no dropout modules; ignored", type(model).__name__)
    if train.method in PEFT_METHODS:
        from peft import get_peft_model

        try:
            return get_peft_model(model, peft_config(model, train, total_steps))
        except ValueError as exc:
            raise ConfigError(f"train.method {train.method}: {exc}; check train.target_modules") from None
    if train.method == "adapter":
        return _bottleneck(model, train)
    if train.method == "freeze":
        _freeze(model, train)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def enable_checkpointing(model) -> int:
    """Gradient checkpointing (non-reentrant) on every block at or above the lowest block with trained weights.

    Blocks below it keep no activations anyway (autograd stops there), so they run as usual.
    Returns:
        The number of checkpointed blocks (0 when the model's blocks do not support it).
    Raises:
        ConfigError: prefix tuning (its prefix is passed as an attention cache, which checkpointing drops).
    """
    import functools

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    if getattr(getattr(model, "peft_config", {}).get("default"), "peft_type", None) == "PREFIX_TUNING":
        raise ConfigError("train.gradient_checkpointing does not work with prefix tuning (its virtual tokens live "
                          "in the attention cache, which checkpointed blocks drop); set it to false")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.config.is_encoder_decoder:  # two stacks: transformers checkpoints every block of both
        if not base.supports_gradient_checkpointing:
            log.warning("train.gradient_checkpointing: %s does not support it; ignored", type(base).__name__)
            return 0
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return sum(isinstance(m, GradientCheckpointingLayer) for m in base.modules())
    layers = list(base.get_decoder().layers)
    trained = [i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]
    if not trained or not all(isinstance(layer, GradientCheckpointingLayer) for layer in layers):
        log.warning("train.gradient_checkpointing: %s", "no trained blocks" if not trained else
                    f"{type(layers[0]).__name__} does not support gradient checkpointing; ignored")
        return 0
    for layer in layers[trained[0]:]:
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
    return len(layers) - trained[0]


def store_frozen(model, dtype: torch.dtype) -> int:
    """Store the frozen weights of every Linear layer in `dtype` (bf16 for training under bf16 autocast).

    Autocast computes a Linear layer in bf16 by casting its fp32 weight on every forward (and keeping the copy for
    the backward pass); stored in bf16 the copy is the weight itself, so the result is the same for half the
    memory. Trainable weights (the adapter, its optimizer state) stay fp32, and so do the embeddings and a
    LM head tied to them (the residual stream starts from them) and the norms.
    Returns:
        The number of parameters converted.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = base.get_input_embeddings()
    tied = {id(embed.weight)} if embed is not None else set()
    done = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for p in module.parameters(recurse=False):
            if p.requires_grad or id(p) in tied or not p.is_floating_point() or p.dtype == dtype:
                continue
            p.data = p.data.to(dtype)
            done += p.numel()
    return done


def trainable_summary(model) -> dict:
    """Counts of trainable and total parameters."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": train, "total_params": total, "trainable_pct": round(100 * train / max(total, 1), 3)}


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (what a checkpoint must save to restore the weights)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
