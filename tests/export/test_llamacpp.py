"""llama.cpp (the xllamacpp wheel, installed by `make install`) loads Weaver's GGUF exports and agrees with
transformers; the llamacpp backends work."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from weaver.data.chat import render_messages
from weaver.errors import WeaverError
from weaver.generate.engine import Generator
from weaver.generate.llamacpp import LlamaCppBackend
from weaver.generate.sampling import SamplingParams

pytestmark = pytest.mark.llamacpp

PROMPT = [{"role": "user", "content": "Summarise: the meeting about the new office moved to Friday at noon."}]


def _llama(path, **kw) -> Generator:
    """The Generator interface on a llama.cpp backend for one GGUF file."""
    return Generator(LlamaCppBackend.from_gguf(path, **kw))


@pytest.fixture(scope="module")
def tiny_llama(tiny_gguf):
    return _llama(tiny_gguf, n_ctx=256, n_threads=1)


def _hf_merged(tiny_run):
    from weaver.models.loading import load_model

    return load_model(tiny_run, merge=True)


def test_llama_cpp_next_token_distribution_matches_transformers_on_tiny_export(tiny_run, tiny_llama):
    model, tok = _hf_merged(tiny_run)
    prompt = render_messages(tok, PROMPT)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tiny_llama.backend.encode(prompt) == ids  # the GGUF's tokenizer tokenises exactly like the HF one
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1).numpy()
    body = {**tiny_llama.backend.request(ids, SamplingParams(), None, 1), "logprobs": 5}
    out = tiny_llama.backend.server.handle_completions(body)
    top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    got_ids, got_lp = [t["id"] for t in top], np.array([t["logprob"] for t in top])
    assert got_ids == np.argsort(ref)[-5:].tolist()[::-1]  # llama.cpp's top 5 next tokens are transformers'
    np.testing.assert_allclose(got_lp, ref[got_ids], atol=0.02)


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
    gen = _llama(path, n_ctx=128, n_threads=1)
    assert gen.generate(["Hello"], SamplingParams(max_new_tokens=3))[0][0].completion_tokens > 0


def test_candidates_seeds_and_token_counts(tiny_run, tiny_llama):
    _, tok = _hf_merged(tiny_run)
    prompt = render_messages(tok, PROMPT)
    [greedy] = tiny_llama.generate([prompt], SamplingParams(max_new_tokens=6, n=3))
    assert len({c.text for c in greedy}) == 1  # greedy candidates decoded in parallel slots agree
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0, n=3, seed=11)
    first, again = (tiny_llama.generate([prompt], sampled)[0] for _ in range(2))
    assert [c.text for c in first] == [c.text for c in again]  # seed k + i per candidate: reproducible
    assert len({c.text for c in first}) > 1  # ... and the candidates differ
    for c in greedy + first:
        assert c.completion_tokens == 6 or c.finish_reason == "stop"
        assert c.completion_tokens >= len(tok(c.text, add_special_tokens=False)["input_ids"]) - 1


def _predicted_total(gen) -> float:
    """llama.cpp's own count of the tokens it has generated (its Prometheus metrics)."""
    lines = gen.backend.server.handle_metrics().splitlines()
    line = next(x for x in lines if x.startswith("llamacpp:tokens_predicted_total"))
    return float(line.split()[-1])


def test_stream_left_early_stops_llama_cpp(tiny_run, tiny_gguf):
    _, tok = _hf_merged(tiny_run)
    gen = _llama(tiny_gguf, n_ctx=512, n_threads=1, n_parallel=1)
    prompt = render_messages(tok, PROMPT)
    pieces = gen.stream(prompt, SamplingParams(max_new_tokens=300, temperature=2.0, seed=1))
    next(pieces)
    pieces.close()  # the consumer leaves: llama.cpp must stop this request, not decode all 300 tokens
    [[after]] = gen.generate([prompt], SamplingParams(max_new_tokens=3))  # the only slot is free again
    assert after.completion_tokens > 0
    assert _predicted_total(gen) < 60


def test_kquant_kernels_match_the_gguf_reference_and_llama_rule():
    import gguf

    from weaver.models.kquant import q4_k_m_type, quantize_rows, use_more_bits

    x = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    # llama.cpp's own Q8_0 kernel, reached through ctypes, gives the gguf package's reference bytes
    np.testing.assert_array_equal(quantize_rows(x, q8), gguf.quants.quantize(x, q8))
    q4k = gguf.GGMLQuantizationType.Q4_K
    back = gguf.quants.dequantize(quantize_rows(x, q4k), q4k)
    assert back.shape == x.shape and np.abs(back - x).max() < 0.35 * np.abs(x).max()
    assert [i for i in range(30) if use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    assert q4_k_m_type("blk.3.attn_q.weight", 1536, 30, False) == "Q4_K"
    assert q4_k_m_type("blk.0.ffn_down.weight", 1536, 30, False) == "Q6_K"
    assert q4_k_m_type("blk.3.ffn_down.weight", 1536, 30, False) == "Q4_K"
    assert q4_k_m_type("token_embd.weight", 576, 30, False) == "Q8_0"  # tied output, 576 % 256 != 0: Q6_K falls back
    assert q4_k_m_type("blk.3.attn_k.weight", 576, 30, False) == "Q5_0"
    assert q4_k_m_type("blk.3.attn_k.weight", 40, 30, False) == "F16"


def test_serve_llamacpp_backend_answers_like_the_generator(tiny_run, tiny_model_dir, tiny_gguf):
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
        assert models == [tiny_run.name, tiny_model_dir.name]  # a LoRA run and its base, as on transformers
        body = {"model": tiny_run.name, "messages": PROMPT, "max_tokens": 8, "temperature": 0,
                "repetition_penalty": 1.3}
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        streamed = http.post("/v1/chat/completions", json={**body, "stream": True}).text
        pair = http.post("/v1/chat/completions", json={**body, "n": 2})  # two rows in parallel llama.cpp slots
        assert pair.status_code == 200, pair.text
    # the same merged weights through the Generator interface give the same greedy text
    _, tok = _hf_merged(tiny_run)
    gen = _llama(tiny_gguf, n_ctx=256, n_threads=1)
    [[want]] = gen.generate([render_messages(tok, PROMPT)], SamplingParams(max_new_tokens=8, repetition_penalty=1.3))
    assert want.text and data["choices"][0]["message"]["content"].strip() == want.text
    assert data["usage"]["completion_tokens"] == want.completion_tokens
    assert [c["message"]["content"].strip() for c in pair.json()["choices"]] == [want.text, want.text]
    assert "data: [DONE]" in streamed


def test_serve_llamacpp_serves_several_lora_adapters_on_one_base(tiny_run, tiny_model_dir, tiny_gguf, tmp_path):
    import shutil

    from fastapi.testclient import TestClient
    from safetensors.torch import load_file, save_file

    from weaver.errors import ConfigError
    from weaver.generate.engine import make_backend
    from weaver.serve.app import create_app
    from weaver.serve.settings import ServeSettings

    other = shutil.copytree(tiny_run, tmp_path / "other-run")
    weights_file = other / "adapter" / "adapter_model.safetensors"
    save_file({k: -v if "lora_B" in k else v for k, v in load_file(weights_file).items()}, weights_file)
    settings = ServeSettings(model=str(tiny_model_dir), backend="llamacpp", threads=1,
                             adapters={"news": str(tiny_run), "ads": str(other)})
    body = {"messages": PROMPT, "max_tokens": 8, "temperature": 0, "repetition_penalty": 1.3}
    with TestClient(create_app(settings)) as http:
        wait_healthy(http)
        models = {m["id"] for m in http.get("/v1/models").json()["data"]}
        assert models == {"news", "ads", tiny_model_dir.name}
        replies = {}
        for model in sorted(models):
            reply = http.post("/v1/chat/completions", json={**body, "model": model})
            assert reply.status_code == 200, reply.text
            replies[model] = reply.json()["choices"][0]["message"]["content"].strip()
    _, tok = _hf_merged(tiny_run)
    merged = _llama(tiny_gguf, n_ctx=256, n_threads=1, n_parallel=1)
    params = SamplingParams(max_new_tokens=8, repetition_penalty=1.3)
    [[want]] = merged.generate([render_messages(tok, PROMPT)], params)
    assert want.text and replies["news"] == want.text  # the adapter picked per request = the merged run
    # the base and the other adapter answer differently from news (the tiny random model gives both an empty text)
    assert replies["news"] not in (replies["ads"], replies[tiny_model_dir.name])
    not_a_run = {"x": str(tiny_model_dir)}
    bad = make_backend(ServeSettings(model=str(tiny_model_dir), backend="llamacpp", adapters=not_a_run))
    with pytest.raises(ConfigError, match="--adapter x="):
        bad.plan()


def wait_healthy(http, seconds: float = 120) -> None:
    import time

    deadline = time.monotonic() + seconds
    while http.get("/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.slow
def test_real_model_greedy_matches_transformers_at_f16_and_q8_0(tmp_path):
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
        gen = _llama(export_gguf("smollm2-135m-instruct", tmp_path / f"m-{quant}.gguf", quant), n_ctx=512)
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
    [[got]] = _llama(out, n_ctx=256).generate([prompt], params)
    ref_ids, got_ids = (tok(x.text, add_special_tokens=False)["input_ids"] for x in (ref, got))
    assert got_ids[:4] == ref_ids[:4], (got.text, ref.text)


def test_lora_gguf_on_the_base_equals_the_merged_model(tiny_run, tiny_model_dir, tiny_gguf, tmp_path):
    from weaver.models.export import export_gguf
    from weaver.models.gguf_lora import export_lora_gguf

    _, tok = _hf_merged(tiny_run)
    prompt = render_messages(tok, PROMPT)
    base = export_gguf(tiny_model_dir, tmp_path / "base-f16.gguf", "f16")
    lora = export_lora_gguf(tiny_run, tmp_path / "lora.gguf")
    gen = LlamaCppBackend.from_gguf(base, n_ctx=256, n_threads=1, n_parallel=1, loras={"news": lora})
    params = SamplingParams(repetition_penalty=1.0)
    ids = gen.encode(prompt)
    merged = LlamaCppBackend.from_gguf(tiny_gguf, n_ctx=256, n_threads=1, n_parallel=1)
    want = merged.server.handle_completions(merged.request(ids, params, None, 12))
    got = gen.server.handle_completions(gen.request(ids, params, None, 12, adapter="news"))
    plain = gen.server.handle_completions(gen.request(ids, params, None, 12))

    def token_ids(out):
        return [t["id"] for t in out["choices"][0]["logprobs"]["content"]]

    assert token_ids(got) == token_ids(want)  # base + GGUF LoRA decodes like the merged weights
    got_lp, want_lp = ([t["logprob"] for t in out["choices"][0]["logprobs"]["content"]] for out in (got, want))
    # measured: 2e-4 with the Q/K rows of lora_b permuted like the base weights, 2.7e-3 without that permutation
    np.testing.assert_allclose(got_lp, want_lp, atol=1e-3)
    assert token_ids(plain) != token_ids(want)  # ... and without the adapter it does not (the LoRA matters)
    with pytest.raises(WeaverError, match="not loaded"):
        gen.request(ids, params, None, 12, adapter="ads")


def test_apps_run_on_the_llamacpp_backend(tiny_run):
    from weaver.apps.adcopy import AdRequest, generate_adcopy
    from weaver.apps.source import default_params, open_source
    from weaver.data.records import Record
    from weaver.generate.llamacpp import gguf_for
    from weaver.safety import load_policy

    source = open_source(str(tiny_run), backend="llamacpp", gguf_quant="f16")
    assert not source.supports_loglik  # llama.cpp gives no log-probabilities of whole texts: ranked without them
    record = Record("a", "", "The council approved a new bike lane on Main Street.", "")
    params = default_params("headline", max_new_tokens=8, repetition_penalty=1.0)
    [[text]] = source.generate([record], "headline", params)
    direct = _llama(gguf_for(str(tiny_run), "f16"), n_ctx=512, n_threads=1)
    [[want]] = direct.generate([source.prompt(record, "headline")], params)
    assert text == want.text  # the app's prompt, decoded by the llama.cpp backend on the run's export
    cands = generate_adcopy(source, AdRequest(product="bike lights"), n=2, policy=load_policy(audit_log="off"))
    assert len(cands) == 2 and all(c.likelihood == 0.0 for c in cands)  # the score is keywords and length only


def test_gguf_exports_are_cached_and_hash_checked(tiny_model_dir, monkeypatch):
    from weaver.generate import llamacpp

    calls = []
    real = llamacpp.export_gguf
    monkeypatch.setattr(llamacpp, "export_gguf", lambda *a: calls.append(a) or real(*a))
    first = llamacpp.gguf_for(str(tiny_model_dir), "f16")
    assert llamacpp.gguf_for(str(tiny_model_dir), "f16") == first and len(calls) == 1  # exported once
    with open(first, "r+b") as fh:  # a damaged cache file (bit rot, a copy cut short) ...
        fh.seek(100)
        fh.write(b"\x00\xff\x00\xff")
    assert llamacpp.gguf_for(str(tiny_model_dir), "f16") == first and len(calls) == 2  # ... is exported again
    assert llamacpp.gguf_for(str(tiny_model_dir), "q8_0") != first and len(calls) == 3  # the quant is in the key


def test_context_window_is_capped_at_the_gguf_trained_window(tiny_gguf, tiny_model_dir, tiny_llama):
    """llama.cpp caps a request at the model's trained window (the GGUF's <arch>.context_length); the backend
    takes the smaller of that and n_ctx as its context_window, so the server refuses prompt + max_tokens beyond
    it with a 400 up front instead of a truncated reply or a failure mid-generation."""
    import json

    from weaver.generate.llamacpp import _gguf_header

    trained = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    assert _gguf_header(tiny_gguf)[1] == trained
    assert tiny_llama.backend.context_window == 256  # n_ctx=256 asked, below the trained window


def test_parallel_rows_each_get_a_whole_context_window(tiny_run, tiny_gguf):
    """The slots share one KV buffer: rows decoded together, each close to the window, must all fit in it (a
    buffer of one window made the ad-copy route's n candidates of a long prompt fail with a 500)."""
    _, tok = _hf_merged(tiny_run)
    gen = _llama(tiny_gguf, n_ctx=256, n_threads=1, n_parallel=4)
    words = "the office move, the budget, the new hires and the launch date were discussed at length. " * 9
    prompts = [render_messages(tok, [{"role": "user", "content": f"{i}: {words}"}]) for i in range(4)]
    lengths = [len(gen.backend.encode(p)) for p in prompts]
    assert 150 < min(lengths) and max(lengths) + 40 < 256  # each fits the window; four together do not fit one
    replies = gen.generate(prompts, SamplingParams(max_new_tokens=40, temperature=1.0, seed=3))
    assert all(r[0].completion_tokens > 0 for r in replies)


@pytest.mark.parametrize("cores,load,expected", [(2, 0.1, 2), (2, 0.6, 1), (2, 5.0, 1), (16, 3.2, 13), (1, 0.0, 1)])
def test_threads_are_the_cores_other_processes_leave_free(monkeypatch, cores, load, expected):
    from weaver.generate import llamacpp

    monkeypatch.setattr(llamacpp.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(llamacpp, "busy_cores_elsewhere", lambda: load)
    assert llamacpp.choose_threads() == expected


def test_busy_cores_elsewhere_sees_another_process_and_not_this_one():
    import subprocess
    import sys
    import time

    from weaver.generate.llamacpp import busy_cores_elsewhere

    stop = threading.Event()
    own = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    own.start()  # a thread of this process keeps a core busy: not counted (this process's own time is left out)
    try:
        assert busy_cores_elsewhere(0.5) < 0.5
    finally:
        stop.set()
        own.join()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores_elsewhere(0.5) > 0.6  # the spinning process keeps about one core busy
    finally:
        spinner.kill()
        spinner.wait()


def test_a_backend_without_threads_takes_the_chosen_count_and_a_given_count_wins(tiny_gguf, monkeypatch):
    from weaver.generate import llamacpp

    monkeypatch.setattr(llamacpp, "choose_threads", lambda: 2)
    assert LlamaCppBackend.from_gguf(tiny_gguf, n_ctx=128, n_parallel=1).n_threads == 2
    assert LlamaCppBackend.from_gguf(tiny_gguf, n_ctx=128, n_threads=1, n_parallel=1).n_threads == 1
