"""Export a tuned run's LoRA adapter as a GGUF LoRA file that llama.cpp applies on top of its base model's GGUF.

    export_lora_gguf("runs/dialogsum", "exports/dialogsum-lora.gguf")

Layout as llama.cpp's convert_lora_to_gguf.py writes it: `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, and for every adapted base weight `<gguf name>.lora_a` (r x in, PEFT's lora_A) and
`<gguf name>.lora_b` (out x r, PEFT's lora_B, its rows permuted like the base Q/K weights for Llama's rotary
layout). llama.cpp scales B·A by alpha / r, as PEFT does. Plain LoRA only (no DoRA, rsLoRA or other methods).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from weaver.errors import WeaverError
from weaver.models.export import ARCHS, _permute
from weaver.models.loading import resolve


def is_plain_lora(adapter_dir: str | Path) -> bool:
    """Whether a peft adapter folder holds a plain LoRA (no DoRA, no rsLoRA): what llama.cpp applies per request."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():  # a bottleneck run's adapter folder (weaver's own method, not peft)
        return False
    acfg = json.loads(path.read_text())
    return acfg.get("peft_type") == "LORA" and not acfg.get("use_dora") and not acfg.get("use_rslora")

def export_lora_gguf(spec: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write the LoRA adapter of a run as a GGUF LoRA file (f32 tensors).

    Args:
        spec: a tuned run directory or adapter folder (adapter_config.json + adapter_model.safetensors).
        out_file: destination .gguf path (overwritten atomically).
    Returns:
        The written file.
    Raises:
        WeaverError: no adapter, not a plain LoRA, an unsupported architecture, or an unmappable module.
    """
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    resolved = resolve(spec)
    if resolved.adapter_dir is None:
        raise WeaverError(f"{spec} has no adapter: pass a LoRA run directory (one with adapter/)")
    acfg = json.loads((Path(resolved.adapter_dir) / "adapter_config.json").read_text())
    if not is_plain_lora(resolved.adapter_dir):
        raise WeaverError(f"{spec}: only a plain LoRA adapter can run on llama.cpp (this one is "
                          f"{acfg.get('peft_type')}{' with DoRA/rsLoRA' if acfg.get('peft_type') == 'LORA' else ''})")
    cfg = AutoConfig.from_pretrained(resolved.base_dir)
    arch_hf = (cfg.architectures or ["?"])[0]
    if arch_hf not in ARCHS:
        raise WeaverError(f"GGUF LoRA export supports {', '.join(ARCHS)}; {spec} is a {arch_hf}")
    arch = ARCHS[arch_hf]
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    weights = load_file(str(Path(resolved.adapter_dir) / "adapter_model.safetensors"))
    out = Path(out_file)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(acfg["lora_alpha"]))
    for module, (a, b) in _pairs(weights).items():
        hf_name = module.removeprefix("base_model.model.")
        gguf_name = name_map.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise WeaverError(f"cannot map the adapted module {hf_name} of a {arch} model to a GGUF name")
        if arch == "llama" and hf_name.endswith(("q_proj", "k_proj")):
            n_head = cfg.num_attention_heads if hf_name.endswith("q_proj") else cfg.num_key_value_heads
            b = _permute(b, n_head)
        writer.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{gguf_name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


def _pairs(weights: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PEFT module path -> (lora_A, lora_B) weights.

    Raises:
        WeaverError: a tensor that is not a LoRA A/B weight (e.g. a saved embedding or bias), or an unpaired one.
    """
    found: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        for part in ("lora_A", "lora_B"):
            if key.endswith(f".{part}.weight"):
                found.setdefault(key[: -len(f".{part}.weight")], {})[part] = value
                break
        else:
            raise WeaverError(f"adapter tensor {key} is not a LoRA A/B weight; llama.cpp cannot apply it")
    if any(len(p) != 2 for p in found.values()):
        raise WeaverError("the adapter has a LoRA A weight without its B (or the reverse)")
    return {module: (p["lora_A"], p["lora_B"]) for module, p in found.items()}
