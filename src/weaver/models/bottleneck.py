"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"), train.method adapter.

    model = BottleneckModel(base, BottleneckSettings(size=16, placement="both", layers=[8, 9]))
    model.save_pretrained("runs/x/adapter")            # bottleneck_config.json + bottleneck.safetensors
    model = BottleneckModel.from_pretrained(base, "runs/x/adapter")

Each adapted block gets, after the output h of its attention and/or its MLP, h + up(act(down(h))): a
down-projection to `size` units, a SiLU, and an up-projection initialised to zero, so the adapted model
starts exactly equal to its base. The adapters are registered as submodules of the blocks
(`model.layers.9.weaver_adapter.mlp.down.weight`) and applied by forward hooks on `self_attn` / `mlp`:
the base model's own forward, `generate`, `get_decoder()` (the target-only training loss, the reference
perplexity of `weaver eval`) and gradient checkpointing all see them without special cases.

Why our own module: peft 0.21 has no bottleneck-adapter tuner (`peft.PeftType` lists the LoRA family,
IA3, prompt methods and others, no Houlsby adapter), and AdapterHub's `adapters` (1.3.0, the newest)
requires transformers ~=4.57.6 while Weaver runs on transformers 5.24. The adapter is non-linear, so it
cannot be folded into the base weights: `weaver export` refuses such runs, and the server serves one
such run per process (with its base), not several on one base.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from weaver.errors import ConfigError, ModelNotFoundError

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "bottleneck.safetensors"
PLACEMENTS = {"both": ("attn", "mlp"), "attn": ("attn",), "mlp": ("mlp",)}
SITES = {"attn": "self_attn", "mlp": "mlp"}  # adapter site -> the block's submodule whose output it adapts
ATTR = "weaver_adapter"


@dataclass
class BottleneckSettings:
    """What a bottleneck adapter is: width, where it sits, which blocks (saved as bottleneck_config.json)."""

    size: int = 16
    """Bottleneck width (units of the down-projection)."""
    placement: str = "both"
    """After the attention (attn), the MLP (mlp) or both of each adapted block."""
    layers: list[int] | None = None
    """Adapted block indices; None = every block."""
    base_model_name_or_path: str = ""
    """The base model the adapter was trained on (for loading an adapter folder on its own)."""
    peft_type: str = field(default="BOTTLENECK", init=False)
    """Identifies the method where Weaver reads `model.peft_config[...].peft_type` (as for peft methods)."""


class Bottleneck(torch.nn.Module):
    """h -> h + up(silu(down(h))), with `up` zero at initialisation (the identity)."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = torch.nn.Linear(hidden, size)
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.silu(self.down(h)))


class BottleneckModel(torch.nn.Module):
    """A causal LM with bottleneck adapters, and the part of PeftModel's interface that Weaver uses.

    `get_base_model()`, `peft_config`, `save_pretrained`, `disable_adapter()`, `set_adapter`, `generate`
    and attribute fallthrough to the base model (config, get_decoder, ...), so the tuning loop, checkpoints,
    the generation engine and the server treat it like a peft adapter.
    """

    def __init__(self, model, settings: BottleneckSettings, adapter_name: str = "default"):
        super().__init__()
        if settings.placement not in PLACEMENTS:
            raise ConfigError(f"--train.adapter_placement {settings.placement!r} is not one of {', '.join(PLACEMENTS)}")
        if settings.size < 1:
            raise ConfigError(f"train.adapter_size must be at least 1, got {settings.size}")
        self.base_model = model
        self.settings = settings
        self.adapter_name = adapter_name
        self.enabled = True
        self._hooks = []
        blocks = model.get_decoder().layers
        chosen = range(len(blocks)) if settings.layers is None else settings.layers
        hidden = _hidden_size(model)
        for i in chosen:
            block = blocks[i]
            adapters = torch.nn.ModuleDict()
            for site in PLACEMENTS[settings.placement]:
                target = getattr(block, SITES[site], None)
                if target is None:
                    raise ConfigError(f"train.method adapter needs blocks with a {SITES[site]} submodule; "
                                      f"{type(block).__name__} has none: set --train.adapter_placement")
                adapters[site] = Bottleneck(hidden, settings.size)
                self._hooks.append(target.register_forward_hook(self._hook(adapters[site])))
            block.add_module(ATTR, adapters)
        self.to(dtype=next(model.parameters()).dtype)

    def _hook(self, adapter: Bottleneck):
        def apply(module, args, output):
            if not self.enabled:
                return output
            if isinstance(output, tuple):  # attention returns (hidden states, attention weights)
                return (adapter(output[0]), *output[1:])
            return adapter(output)

        return apply

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    # ---- PeftModel-like interface ----------------------------------------------------------------
    @property
    def peft_config(self) -> dict[str, BottleneckSettings]:
        return {self.adapter_name: self.settings}

    @property
    def active_adapter(self) -> str:
        return self.adapter_name

    def get_base_model(self):
        return self.base_model

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def disable_adapter(self):
        """Run the base model alone inside the block (the server's requests for the base model id)."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def set_adapter(self, name: str) -> None:
        if name != self.adapter_name:
            raise ConfigError(f"this model holds the bottleneck adapter {self.adapter_name!r}, not {name!r}")

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapter weights by name relative to the blocks ("9.mlp.down.weight"), as contiguous CPU tensors."""
        out = {}
        for i, block in enumerate(self.base_model.get_decoder().layers):
            if hasattr(block, ATTR):
                for name, p in getattr(block, ATTR).named_parameters():
                    out[f"{i}.{name}"] = p.detach().to("cpu").contiguous()
        return out

    def save_pretrained(self, out_dir: str | os.PathLike, **_ignored) -> None:
        """Write bottleneck_config.json and bottleneck.safetensors (the adapter weights only) into out_dir."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        settings = asdict(self.settings)
        settings["base_model_name_or_path"] = settings["base_model_name_or_path"] or str(
            getattr(self.base_model.config, "_name_or_path", ""))
        (out / CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")
        save_file(self.adapter_state(), str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, model, adapter_dir: str | os.PathLike, adapter_name: str = "default"):
        """Add the saved adapter in adapter_dir to `model` (a transformers causal LM).

        Raises:
            ModelNotFoundError: the folder lacks the config or weights, or they do not fit this model.
        """
        folder = Path(adapter_dir)
        settings = read_settings(folder)
        wrapped = cls(model, settings, adapter_name)
        try:
            saved = load_file(str(folder / WEIGHTS_NAME))
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot read the adapter weights {folder / WEIGHTS_NAME}: {exc}") from None
        blocks = model.get_decoder().layers
        params = {f"{i}.{n}": p for i, b in enumerate(blocks) if hasattr(b, ATTR)
                  for n, p in getattr(b, ATTR).named_parameters()}
        if saved.keys() != params.keys() or any(saved[k].shape != params[k].shape for k in saved):
            raise ModelNotFoundError(f"the adapter in {folder} does not fit this base model (other layers or sizes)")
        with torch.no_grad():
            for key, value in saved.items():
                params[key].copy_(value)
        return wrapped.eval()


def read_settings(folder: Path) -> BottleneckSettings:
    """The BottleneckSettings saved in folder/bottleneck_config.json.

    Raises:
        ModelNotFoundError: the file is missing or malformed.
    """
    try:
        data = json.loads((Path(folder) / CONFIG_NAME).read_text())
        data.pop("peft_type", None)
        return BottleneckSettings(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotFoundError(f"cannot read the bottleneck adapter config in {folder}: {exc}") from None


def _hidden_size(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size)
