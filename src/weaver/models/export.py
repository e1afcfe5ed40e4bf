"""Export a model or tuned run: merged safetensors for plain transformers, or a GGUF file for llama.cpp.

    merge_run("runs/dialogsum", "exports/dialogsum")                      # HF folder, adapter folded in
    export_gguf("runs/dialogsum", "exports/dialogsum-q8_0.gguf", "q8_0")  # llama.cpp file

The GGUF is written with the `gguf` package's `GGUFWriter` (the writer llama.cpp's own converter uses),
following llama.cpp's converter for the tensor layout: Q/K rows permuted back to llama.cpp's rotary
layout (Llama: SmolLM2), RMSNorm weights stored as 1 + w (Gemma-3, whose hyper-parameters are copied
from the GGUF its base came from). Tokenizer metadata is copied verbatim from the GGUF
the base model came from when there is one (the embedded catalog models), else built from the
Hugging Face tokenizer (byte-level BPE). f16 and q8_0 are quantised here (gguf.quants); q4_k_m needs
llama.cpp's own quantisation kernels (weaver.models.kquant, from the xllamacpp wheel).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from hashlib import sha256
from pathlib import Path

import numpy as np

from weaver.errors import WeaverError
from weaver.files import atomic_write_text, versions
from weaver.models.loading import MANIFEST, MERGEABLE, load_model, resolve

log = logging.getLogger(__name__)

QUANTS = ("f16", "q8_0", "q4_k_m")
# HF architecture -> gguf architecture name (MODEL_ARCH_NAMES value).
# Gemma-3 needs the GGUF its base came from (its hyper-parameters, sliding-window layout and tokenizer are
# copied from there) and stores RMSNorm weights as 1 + w, as llama.cpp's converter does.
ARCHS = {"LlamaForCausalLM": "llama", "Gemma3ForCausalLM": "gemma3"}
NEEDS_SOURCE_GGUF = ("gemma3",)
# Hash of llama.cpp's pre-tokenizer probe text -> `tokenizer.ggml.pre` (from llama.cpp's converter).
_PRE_TOKENIZERS = {"855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm"}


def merge_run(spec: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Fold a run's LoRA / AdaLoRA / IA3 adapter into its base model and save a plain Hugging Face folder.

    Args:
        spec: a tuned run directory (or an adapter folder with adapter_config.json); a freeze/full run's
            model is saved as it is.
        out_dir: destination folder (must not exist, or be empty).
        dtype: float32 | bfloat16 for the saved weights.
    Returns:
        The output folder: safetensors weights, config, tokenizer and chat template.
    Raises:
        WeaverError: the spec is no run and has no adapter, the run's adapter cannot be merged (prefix,
            adapter), or out_dir exists and is not empty.
    """
    resolved = resolve(spec)
    if resolved.adapter_dir is None and resolved.run_dir is None:
        raise WeaverError(f"{spec} has no adapter to merge: pass a tuned run directory (one with adapter/)")
    refuse_unmergeable(spec, resolved, "--merge")  # a freeze/full run (model/, no adapter) is saved as it is
    out = _fresh_target(Path(out_dir))
    model, tok = load_model(spec, dtype=dtype, merge=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    adapter = str(resolved.adapter_dir) if resolved.adapter_dir else None
    info = {"source": str(spec), "base": resolved.base_spec, "adapter": adapter, **versions()}
    atomic_write_text(tmp / "weaver-export.json", json.dumps(info, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


WHY_NOT_MERGEABLE = {
    "prefix": "its virtual tokens are keys and values in the attention cache, not weights",
    "adapter": "its bottleneck adapters are non-linear layers that no weight matrix can absorb",
}


def refuse_unmergeable(spec, resolved, what: str) -> None:
    """Raise for a run whose adapter cannot be folded into the base weights (prefix tuning, bottleneck adapters).

    Raises:
        WeaverError: one sentence: why, and what to do instead (serve or generate from the run itself).
    """
    if resolved.adapter_dir is None or resolved.kind in MERGEABLE:
        return
    why = WHY_NOT_MERGEABLE.get(resolved.method, "its adapter cannot be folded into the base weights")
    raise WeaverError(
        f"{what} needs the adapter merged into the base weights, which a train.method {resolved.method} run "
        f"cannot do ({why}): serve or generate from the run itself with the transformers backend "
        f"(`weaver serve --model {spec}`, `weaver generate --model {spec}`)"
    )


def refuse_seq2seq_gguf(spec) -> None:
    """Refuse a GGUF export of an encoder-decoder model (T5, BART) before any weights are loaded.

    Weaver's GGUF writer (ARCHS) and its llama.cpp backend handle decoder-only models only; an encoder-decoder
    GGUF would need an encoder pass that Weaver's llama.cpp backend does not run, so none is written.

    Raises:
        WeaverError: the spec is an encoder-decoder model; the message says what works instead.
    """
    from weaver.models.arch import is_seq2seq

    base = resolve(spec).base_dir
    if is_seq2seq(base):
        arch = (json.loads((Path(base) / "config.json").read_text()).get("architectures") or ["?"])[0]
        raise WeaverError(
            f"GGUF export writes decoder-only models ({', '.join(ARCHS)}); {spec} is an encoder-decoder {arch}, "
            "which Weaver's llama.cpp backend cannot run: use `weaver export --merge` and serve or generate "
            "from the merged folder (the transformers backend)")


def _fresh_target(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WeaverError(f"--out {out} already exists and is not empty: choose a new folder or delete it")
    return out


def export_gguf(spec: str | os.PathLike, out_file: str | os.PathLike, quant: str = "f16") -> Path:
    """Write a model (a run's adapter merged in) as a GGUF file that llama.cpp loads.

    Args:
        spec: catalog name, HF folder, .gguf file or tuned run directory.
        out_file: destination .gguf path (overwritten atomically).
        quant: f16 | q8_0 | q4_k_m (norms and other 1-D tensors stay f32).
    Returns:
        The written file.
    Raises:
        WeaverError: unknown quant, unsupported architecture, or q4_k_m without xllamacpp.
    """
    if quant not in QUANTS:
        raise WeaverError(f"--quant {quant!r} is not one of {', '.join(QUANTS)}")
    out = Path(out_file)
    if out.suffix != ".gguf":
        raise WeaverError(f"--out {out} must end in .gguf")
    if quant == "q4_k_m":
        _require_llama_cpp("--quant q4_k_m")
    refuse_unmergeable(spec, resolve(spec), "GGUF export")
    refuse_seq2seq_gguf(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, tok = load_model(spec, dtype="float32", merge=True)
    arch_hf = (model.config.architectures or [type(model).__name__])[0]
    if arch_hf not in ARCHS:
        raise WeaverError(
            f"GGUF export supports {', '.join(ARCHS)}; {spec} is a {arch_hf}: use --merge and convert it "
            "with llama.cpp's convert_hf_to_gguf.py"
        )
    source_gguf = _source_gguf(resolve(spec).base_dir)
    if ARCHS[arch_hf] in NEEDS_SOURCE_GGUF and source_gguf is None:
        raise WeaverError(
            f"GGUF export of a {arch_hf} needs the GGUF its base model came from (the catalog's gemma3-270m); "
            f"{spec} was not converted from one: use --merge and llama.cpp's convert_hf_to_gguf.py"
        )
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    first = "f16" if quant == "q4_k_m" else quant
    try:
        _write_gguf(model, tok, ARCHS[arch_hf], first, source_gguf, tmp)
        if quant == "q4_k_m":
            final = out.with_name(f".{out.name}.q4tmp{os.getpid()}")
            _llama_quantize(tmp, final, "q4_k_m")
            os.replace(final, out)
        else:
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _source_gguf(base_dir: Path) -> Path | None:
    """The GGUF a cached base folder was converted from (weaver-model.json), if it is still there."""
    try:
        src = Path(json.loads((base_dir / MANIFEST).read_text())["source"])
    except (OSError, ValueError, KeyError):
        return None
    return src if src.is_file() else None


def _write_gguf(model, tok, arch: str, quant: str, source_gguf: Path | None, path: Path) -> None:
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(str(getattr(cfg, "_name_or_path", "") or "weaver export"))
    if arch in NEEDS_SOURCE_GGUF:
        _copy_arch_fields(writer, source_gguf, arch)
    else:
        _add_hparams(writer, cfg, arch)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_vocab = _add_tokenizer(writer, tok, cfg, source_gguf)
    for name, data, qtype in _tensors(model, arch, quant, n_vocab):
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rope_theta(cfg, default: float = 10000.0) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", default)))


def _add_hparams(writer, cfg, arch: str) -> None:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(cfg))


def _copy_arch_fields(writer, source: Path, arch: str) -> None:
    """Copy the architecture's hyper-parameters (`<arch>.*` keys) from the GGUF the base model came from.

    Raises:
        WeaverError: that GGUF is of another architecture.
    """
    import gguf

    reader = gguf.GGUFReader(source)
    found = reader.fields.get("general.architecture")
    if found is None or found.contents() != arch:
        raise WeaverError(f"{source} is not a {arch} GGUF; cannot copy its hyper-parameters")
    for key, field in reader.fields.items():
        if key.startswith(arch + "."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def _add_tokenizer(writer, tok, cfg, source_gguf: Path | None) -> int:
    """Write tokenizer.* metadata; returns the number of token rows the embedding must keep."""
    if source_gguf is not None:
        n_vocab = _copy_tokenizer_fields(writer, source_gguf)
    else:
        n_vocab = _bpe_tokenizer_fields(writer, tok, cfg)
    if getattr(tok, "chat_template", None):
        writer.add_chat_template(tok.chat_template)
    return n_vocab


def _copy_tokenizer_fields(writer, source: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(source)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        vtype = field.types[0]
        value = field.contents()
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    return n_vocab


def _bpe_tokenizer_fields(writer, tok, cfg) -> int:
    """Byte-level BPE vocabulary (GPT-2 style, as SmolLM2/Llama-3 use) built from the HF tokenizer."""
    import gguf

    model_json = json.loads(tok.backend_tokenizer.to_str())["model"] if getattr(tok, "is_fast", False) else {}
    if "merges" not in model_json:
        raise WeaverError(
            "GGUF export needs a byte-level BPE tokenizer (tokenizer.json with merges) when the base model "
            "did not come from a GGUF; convert this model with llama.cpp's convert_hf_to_gguf.py"
        )
    vocab = tok.get_vocab()
    added = {t.content for t in tok.added_tokens_decoder.values()}
    special = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(cfg.vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if token in special or (token.startswith("<|") and token.endswith("|>")):
            types.append(gguf.TokenType.CONTROL)
        elif token in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(tok.name_or_path, load_merges=True, n_vocab=len(tokens))
    if not special_vocab.merges:
        special_vocab.merges = [m if isinstance(m, str) else " ".join(m) for m in model_json["merges"]]
    special_vocab.chat_template = None  # written once by the caller, from the tokenizer in use
    special_vocab.add_to_gguf(writer)
    writer.add_add_bos_token(bool(getattr(tok, "add_bos_token", False)))
    return len(tokens)


def _pre_tokenizer(tok) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, identified the way llama.cpp's converter does."""
    probe = (
        "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
        "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
        "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
        "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
    )
    digest = sha256(str(tok.encode(probe)).encode()).hexdigest()
    name = _PRE_TOKENIZERS.get(digest)
    if name is None:
        log.warning("unrecognised BPE pre-tokenizer (hash %s): writing 'default'; check tokenisation", digest[:12])
        return "default"
    return name


def _tensors(model, arch: str, quant: str, n_vocab: int):
    """(gguf name, numpy data, GGML type) for every weight, in llama.cpp's layout."""
    import gguf
    import torch

    cfg = model.config
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        data = tensor.detach().to(torch.float32)
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            n_head = cfg.num_attention_heads if "q_proj" in hf_name else cfg.num_key_value_heads
            data = _permute(data, n_head)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma's RMSNorm scales by (1 + w); llama.cpp's stores 1 + w (as its converter)
        if hf_name.endswith("embed_tokens.weight") and n_vocab and data.shape[0] > n_vocab:
            data = data[:n_vocab]  # llama.cpp requires embedding rows == vocabulary size
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise WeaverError(f"cannot map tensor {hf_name} of a {arch} model to a GGUF name")
        yield (gguf_name, *_encode(data.numpy(), gguf_name, quant))


def _permute(weights, n_head: int):
    """HF's rotate-half rows -> llama.cpp's interleaved rotary layout (as llama.cpp's converter does)."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape
    )


def _encode(data: np.ndarray, name: str, quant: str):
    import gguf

    if data.ndim <= 1 or name.endswith("_norm.weight"):
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and data.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data, qtype), qtype
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def _require_llama_cpp(what: str):
    """The xllamacpp module (llama.cpp's server and kernels, a binary wheel `make install` installs)."""
    try:
        import xllamacpp
    except ImportError:
        raise WeaverError(f"{what} needs xllamacpp: run `make install` (or `pip install xllamacpp`)") from None
    return xllamacpp


def _llama_quantize(src: Path, dst: Path, quant: str) -> None:
    """Requantise an f16 GGUF to q4_k_m with llama.cpp's kernels (k-quants are not in the gguf package)."""
    from weaver.models.kquant import requantize_q4_k_m

    if quant != "q4_k_m":
        raise WeaverError(f"--quant {quant} is written directly; only q4_k_m is requantised")
    _require_llama_cpp(f"--quant {quant}")
    try:
        requantize_q4_k_m(src, dst)
    except (OSError, ValueError) as exc:
        dst.unlink(missing_ok=True)
        raise WeaverError(f"llama.cpp could not quantise {src.name} to {quant}: {exc}") from None
