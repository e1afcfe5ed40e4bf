"""llama.cpp loads Weaver's GGUF exports and agrees with transformers; the llamacpp backends work.

Skipped when llama-cpp-python is not installed (`make install-llamacpp`); CI does not build it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp

from weaver.data.chat import render_messages  # noqa: E402
from weaver.errors import WeaverError  # noqa: E402
from weaver.generate.engine import SamplingParams  # noqa: E402
from weaver.generate.llamacpp import LlamaCppGenerator  # noqa: E402

PROMPT = [{"role": "user", "content": "Summarise: the meeting about the new office moved to Friday at noon."}]


@pytest.fixture(scope="module")
def tiny_llama(tiny_gguf):
    return LlamaCppGenerator(tiny_gguf, n_ctx=256, n_threads=1)


def _hf_merged(tiny_run):
    from weaver.models.loading import load_model

    return load_model(tiny_run, merge=True)


def test_llama_cpp_logits_match_transformers_on_tiny_export(tiny_run, tiny_llama):
    model, tok = _hf_merged(tiny_run)
    prompt = render_messages(tok, PROMPT)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tiny_llama.encode(prompt) == ids  # the GGUF's tokenizer tokenises exactly like the HF one
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    llm = tiny_llama.llm
    llm.reset()
    llm.eval(ids)
    got = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max() + 1e-3
    assert np.argsort(got)[-5:].tolist()[::-1] == np.argsort(ref)[-5:].tolist()[::-1]


def test_generator_interface_generate_stream_stop(tiny_run, tiny_llama):
    _, tok = _hf_merged(tiny_run)
    prompt = render_messages(tok, PROMPT)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    [[one]] = tiny_llama.generate([prompt], params)
    assert one.completion_tokens > 0 and one.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert "".join(tiny_llama.stream(prompt, params)).strip() == one.text
    if len(one.text) > 4:  # a stop string cuts the reply before it
        stop = one.text[2:4]
        [[cut]] = tiny_llama.generate([prompt], SamplingParams(max_new_tokens=12, stop=[stop]))
        assert stop not in cut.text and one.text.startswith(cut.text)
    outs = tiny_llama.generate([prompt, prompt], SamplingParams(max_new_tokens=4, temperature=1.0, n=2, seed=3))
    assert [len(o) for o in outs] == [2, 2]
    cancel = threading.Event()
    cancel.set()
    assert list(tiny_llama.stream(prompt, params, cancel)) == []
    with pytest.raises(WeaverError, match="beam"):
        tiny_llama.generate([prompt], SamplingParams(num_beams=2))


def test_q4_k_m_export_uses_llama_quantiser(tiny_run, tmp_path):
    import gguf

    from weaver.models.export import export_gguf

    path = export_gguf(tiny_run, tmp_path / "tiny-q4.gguf", "q4_k_m")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert any(t not in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32) for t in types.values())
    gen = LlamaCppGenerator(path, n_ctx=128, n_threads=1)
    assert gen.generate(["Hello"], SamplingParams(max_new_tokens=3))[0][0].completion_tokens > 0


def test_serve_llamacpp_backend_answers_like_the_generator(tiny_run, tiny_gguf):
    import time

    from fastapi.testclient import TestClient

    from weaver.serve.app import create_app
    from weaver.serve.settings import ServeSettings

    settings = ServeSettings(model=str(tiny_run), backend="llamacpp", threads=1)
    with TestClient(create_app(settings)) as http:
        deadline = time.monotonic() + 120
        while http.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert models == [tiny_run.name]
        body = {"model": tiny_run.name, "messages": PROMPT, "max_tokens": 8, "temperature": 0,
                "repetition_penalty": 1.3}
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        streamed = http.post("/v1/chat/completions", json={**body, "stream": True}).text
    # the same merged weights through the Generator interface give the same greedy text
    _, tok = _hf_merged(tiny_run)
    gen = LlamaCppGenerator(tiny_gguf, n_ctx=256, n_threads=1)
    [[want]] = gen.generate([render_messages(tok, PROMPT)], SamplingParams(max_new_tokens=8, repetition_penalty=1.3))
    assert want.text and data["choices"][0]["message"]["content"].strip() == want.text
    assert data["usage"]["completion_tokens"] == want.completion_tokens
    assert "data: [DONE]" in streamed


def test_serve_llamacpp_refuses_extra_adapters(tiny_run):
    from weaver.errors import ConfigError
    from weaver.serve.backend import make_backend
    from weaver.serve.settings import ServeSettings

    backend = make_backend(ServeSettings(model=str(tiny_run), backend="llamacpp", adapters={"x": str(tiny_run)}))
    with pytest.raises(ConfigError, match="--adapter"):
        backend.plan()


@pytest.mark.integration
@pytest.mark.slow
def test_real_model_greedy_matches_transformers_at_f16_and_q8_0(tmp_path):
    from weaver.generate.engine import Generator
    from weaver.models.export import export_gguf
    from weaver.models.loading import load_model

    model, tok = load_model("smollm2-135m-instruct")
    messages = [{"role": "user", "content": "Write a one-sentence summary: Tom missed the bus, so he walked to work "
                                            "in the rain and arrived late for the budget meeting."}]
    prompt = render_messages(tok, messages)
    params = SamplingParams(max_new_tokens=16, repetition_penalty=1.0)
    [[ref]] = Generator(model, tok).generate([prompt], params)
    ref_ids = tok(ref.text, add_special_tokens=False)["input_ids"]
    for quant in ("f16", "q8_0"):
        gen = LlamaCppGenerator(export_gguf("smollm2-135m-instruct", tmp_path / f"m-{quant}.gguf", quant), n_ctx=512)
        [[got]] = gen.generate([prompt], params)
        got_ids = tok(got.text, add_special_tokens=False)["input_ids"]
        # f16 keeps the (already 4-bit-derived) weights: the first 8 greedy tokens agree. q8_0 rounds them again,
        # enough to flip a near-tie from the second token on (measured); its first token must still agree.
        n = 8 if quant == "f16" else 1
        assert got_ids[:n] == ref_ids[:n], (quant, got.text, ref.text)


@pytest.mark.integration
@pytest.mark.slow
def test_gemma3_export_keeps_the_source_layout_and_greedy_matches_transformers(tmp_path):
    import gguf

    from weaver.generate.engine import Generator
    from weaver.models.catalog import find_entry
    from weaver.models.export import _source_gguf, export_gguf
    from weaver.models.loading import load_model, resolve

    if not find_entry("gemma3-270m").installed:
        pytest.skip("gemma3-270m is not installed (make models-multilingual)")
    out = export_gguf("gemma3-270m", tmp_path / "gemma3-f16.gguf", "f16")
    source = gguf.GGUFReader(_source_gguf(resolve("gemma3-270m").base_dir))
    mine = gguf.GGUFReader(out)
    # the same tensors under the same names, and the norms (f32 in both files) equal to the last bit: 1 + w
    src_tensors = {t.name: t for t in source.tensors}
    assert {t.name for t in mine.tensors} == set(src_tensors)
    norms = [t for t in mine.tensors if t.name.endswith("norm.weight")]
    assert norms
    for t in norms:
        np.testing.assert_array_equal(np.asarray(t.data), np.asarray(src_tensors[t.name].data))
    for key in ("gemma3.attention.sliding_window", "gemma3.context_length", "gemma3.block_count"):
        assert mine.fields[key].contents() == source.fields[key].contents()
    model, tok = load_model("gemma3-270m")
    prompt = "The capital of France is Paris. The capital of Germany is"
    params = SamplingParams(max_new_tokens=8, repetition_penalty=1.0)
    [[ref]] = Generator(model, tok).generate([prompt], params)
    [[got]] = LlamaCppGenerator(out, n_ctx=256).generate([prompt], params)
    ref_ids, got_ids = (tok(x.text, add_special_tokens=False)["input_ids"] for x in (ref, got))
    assert got_ids[:4] == ref_ids[:4], (got.text, ref.text)
