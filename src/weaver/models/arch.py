"""Which kind of Transformer a model is: decoder-only (causal LM) or encoder-decoder (seq2seq LM).

    if is_seq2seq(model_dir): ...                       # read from the folder's config.json
    model = auto_class(model_dir).from_pretrained(model_dir)

A folder is an encoder-decoder model when its config says so (`is_encoder_decoder`, true for T5, mT5,
BART, mBART, Pegasus, ...) and transformers maps its `model_type` to an `AutoModelForSeq2SeqLM` class.
Every stage asks here, so one model is never loaded as a causal LM in one place and a seq2seq LM in
another. Encoder-decoder models get: a plain prompt as the source (no chat template), labels that are the
target tokens only, `TaskType.SEQ_2_SEQ_LM` adapters, and the transformers decoding backend (docs/SEQ2SEQ.md).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from weaver.errors import ModelNotFoundError


@functools.lru_cache(maxsize=64)
def _seq2seq_config(config_file: str, mtime: float) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    try:
        cfg = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{config_file} cannot be read as a model config ({exc})") from None
    if not isinstance(cfg, dict):
        raise ModelNotFoundError(f"{config_file} is not a model config (a JSON object)")
    return bool(cfg.get("is_encoder_decoder")) and cfg.get("model_type") in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


def is_seq2seq(model_dir: str | os.PathLike) -> bool:
    """True when the Hugging Face folder holds an encoder-decoder (AutoModelForSeq2SeqLM) model.

    Raises:
        ModelNotFoundError: the folder's config.json is unreadable.
    """
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        return False
    return _seq2seq_config(str(config_file.resolve()), config_file.stat().st_mtime)


def model_is_seq2seq(model) -> bool:
    """True for an encoder-decoder model in memory (plain, peft-wrapped or bottleneck-wrapped)."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def auto_class(model_dir: str | os.PathLike):
    """transformers' AutoModelForSeq2SeqLM for an encoder-decoder folder, else AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_seq2seq(model_dir) else AutoModelForCausalLM


def plain_prompts(tokenizer):
    """Drop the tokenizer's chat template: an encoder-decoder model reads the plain prompt as its source.

    weaver.data.chat.render_messages then renders the plain template for it, at training and at inference.
    Returns:
        The same tokenizer.
    """
    tokenizer.chat_template = None
    return tokenizer
