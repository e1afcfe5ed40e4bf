"""The real embedded model: GGUF conversion fidelity and generation (loads SmolLM2-135M-Instruct)."""

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.integration


def test_converted_model_matches_transformers_gguf_loading():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weaver.models.catalog import find_entry
    from weaver.models.loading import load_model

    gguf = find_entry("smollm2-135m-instruct").require()[0]
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours, our_tok = load_model("smollm2-135m-instruct")
    text = "The quick brown fox jumps over the lazy dog."
    assert tok(text)["input_ids"] == our_tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        a, b = direct(ids).logits, ours(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_weaver_generate_prints_text():
    out = subprocess.run(
        [sys.executable, "-m", "weaver.cli", "generate", "--model", "smollm2-135m-instruct",
         "--prompt", "Write a headline: The city council approved new bike lanes downtown.",
         "--max-new-tokens", "24"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) > 3
