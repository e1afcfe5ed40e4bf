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


def test_weaver_generate_writes_an_on_topic_headline_equal_to_the_engines():
    from weaver.data.chat import render_messages
    from weaver.generate.engine import load_generator
    from weaver.generate.sampling import SamplingParams

    prompt = "Write a headline: The city council approved new bike lanes downtown."
    out = subprocess.run(
        [sys.executable, "-m", "weaver.cli", "generate", "--model", "smollm2-135m-instruct",
         "--prompt", prompt, "--max-new-tokens", "24", "--no-safety"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    gen, tok, _ = load_generator("smollm2-135m-instruct")
    params = SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=1.1)
    expected = "".join(gen.stream(render_messages(tok, [{"role": "user", "content": prompt}]), params))
    assert out.stdout == expected + "\n"
    assert "bike" in out.stdout.lower() or "lane" in out.stdout.lower(), out.stdout
