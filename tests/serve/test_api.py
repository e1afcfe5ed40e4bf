"""The official openai client against a live server: chat, completions, streaming, n, stop, adapters, tasks."""

from __future__ import annotations

import httpx
import pytest

NO_PENALTY = {"repetition_penalty": 1.0}


def _reference(model_dir, adapter_dir, prompt: str, max_new_tokens: int) -> str:
    """Greedy reply computed in-process with plain transformers (+ peft), the ground truth for the server."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def _chat_prompt(tokenizer, text: str) -> str:
    from weaver.data.chat import render_messages

    return render_messages(tokenizer, [{"role": "user", "content": text}])


def test_models_lists_runs_adapters_and_base(client, tiny_model_dir):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"headline", "summary", tiny_model_dir.name}
    assert models["headline"].weaver == {"kind": "adapter", "task": "headline"}
    assert models[tiny_model_dir.name].weaver == {"kind": "base"}


@pytest.mark.parametrize("model", ["base", "headline", "summary"])
def test_chat_matches_transformers_for_base_and_each_adapter(client, runs, tiny_model_dir, tokenizer, model):
    model_id = tiny_model_dir.name if model == "base" else model
    adapter = None if model == "base" else runs[model] / "adapter"
    text = "Write a headline about the harbour reopening."
    reply = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": text}],
                                           max_tokens=12, temperature=0, extra_body=NO_PENALTY)
    expected = _reference(tiny_model_dir, adapter, _chat_prompt(tokenizer, text), 12)
    assert reply.choices[0].message.content == expected
    assert reply.model == model_id
    prompt_ids = tokenizer(_chat_prompt(tokenizer, text), add_special_tokens=False)["input_ids"]
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_adapter_output_differs_from_base(client, tiny_model_dir):
    outs = {}
    for model_id in ("headline", "summary", tiny_model_dir.name):
        reply = client.completions.create(model=model_id, prompt="The city council said", max_tokens=16,
                                          temperature=0, extra_body=NO_PENALTY)
        outs[model_id] = reply.choices[0].text
    assert len(set(outs.values())) == 3, outs


def test_completions_with_several_prompts(client, tiny_model_dir, tokenizer):
    prompts = ["Once upon a time", "The weather today"]
    reply = client.completions.create(model=tiny_model_dir.name, prompt=prompts, max_tokens=8, temperature=0,
                                      extra_body=NO_PENALTY)
    assert [c.index for c in reply.choices] == [0, 1]
    for prompt, choice in zip(prompts, reply.choices):
        assert choice.text == _reference(tiny_model_dir, None, prompt, 8)
    assert reply.usage.prompt_tokens == sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)


def test_streaming_equals_whole_response_and_ends_with_done(client, server, auth):
    args = {"model": "headline", "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 20,
            "temperature": 0}
    whole = client.chat.completions.create(**args).choices[0].message.content
    pieces, finish = [], None
    for chunk in client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            assert chunk.usage.completion_tokens >= 1
    assert "".join(pieces) == whole
    assert finish in ("stop", "length")
    assert sum(1 for p in pieces if p) >= 2  # it really streamed, piece by piece
    with httpx.stream("POST", server + "/v1/completions", headers=auth,
                      json={"model": "headline", "prompt": "Hello", "max_tokens": 5, "stream": True}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


def test_n_candidates_with_sampling_differ_and_are_reproducible(client):
    args = {"model": "summary", "prompt": "Breaking news:", "max_tokens": 12, "temperature": 1.0, "n": 3, "seed": 7}
    first = client.completions.create(**args)
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    texts = [c.text for c in first.choices]
    assert len(set(texts)) > 1
    again = client.completions.create(**args)
    assert [c.text for c in again.choices] == texts


def test_stop_sequence_cuts_the_reply(client):
    args = {"model": "summary", "prompt": "Dear customer,", "max_tokens": 24, "temperature": 1.0, "seed": 3}
    full = client.completions.create(**args).choices[0].text
    assert len(full) > 12
    stop = full[6:9]
    cut = client.completions.create(**args, stop=[stop, "@@never@@"]).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_weaver_task_renders_the_tuned_prompt(server, runs, tokenizer, auth):
    from weaver.config import load_config
    from weaver.data.tasks import record_from_fields, render_prompt

    article = "The harbour reopened on Monday after two years of repairs, the mayor said."
    resp = httpx.post(server + "/v1/weaver/headline", headers=auth,
                      json={"model": "headline", "input": article, "max_tokens": 6, "stop": ["@@"]}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    data_cfg = load_config(runs["headline"] / "config.yaml").data
    prompt = render_prompt(tokenizer, record_from_fields("headline", {"input": article}, data_cfg), data_cfg)
    assert body["usage"]["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    tasks = httpx.get(server + "/v1/weaver/tasks", headers=auth).json()["data"]
    headline = next(t for t in tasks if t["name"] == "headline")
    assert headline["fields"] == ["input"] and headline["stop"] == ["\n"]


def test_health_is_open_and_reports_models(server, tiny_model_dir):
    body = httpx.get(server + "/health").json()
    assert body["status"] == "ready"
    assert set(body["models"]) == {"headline", "summary", tiny_model_dir.name}
    assert body["batching"]["batches"] >= 1


def test_page_and_assets_are_served_locally(server):
    page = httpx.get(server + "/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(server + asset).status_code == 200
    for text in (page.text, httpx.get(server + "/static/app.js").text, httpx.get(server + "/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # no CDN, no external fonts
    assert "innerHTML" not in httpx.get(server + "/static/app.js").text
