"""The OpenAI-compatible API serving an encoder-decoder model (tiny random T5) and a LoRA run tuned from it."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings

KEY = "seq2seq-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def t5_run(tiny_t5_dir, tmp_path_factory):
    """A run folder: config.yaml (base = the tiny T5, task headline) and a LoRA adapter whose B is non-zero."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from weaver.config import DataConfig, ModelConfig, RunConfig, save_resolved

    torch.manual_seed(4)
    run = tmp_path_factory.mktemp("t5-headline")
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir),
                           LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v"],
                                      init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(run / "adapter")
    save_resolved(RunConfig(model=ModelConfig(name=str(tiny_t5_dir)), data=DataConfig(task="headline")), run)
    return run


@pytest.fixture(scope="module")
def client(t5_run):
    settings = ServeSettings(model=str(t5_run), api_key=KEY, threads=1)  # backend auto: transformers for T5
    with TestClient(create_app(settings, load_in_background=False)) as c:
        yield c


def _expected(spec, text: str, max_new_tokens: int) -> str:
    from weaver.data.chat import render_messages
    from weaver.generate.engine import Generator
    from weaver.generate.sampling import SamplingParams
    from weaver.models.loading import load_model

    model, tok = load_model(spec)
    prompt = render_messages(tok, [{"role": "user", "content": text}])
    assert prompt.startswith("<|im_start|>### Instruction:")  # the plain template, not the chat template
    return Generator(model, tok).generate([prompt], SamplingParams(max_new_tokens=max_new_tokens))[0][0].text


def test_chat_completion_on_the_run_and_its_base(client, t5_run, tiny_t5_dir):
    models = {m["id"]: m for m in client.get("/v1/models", headers=AUTH).json()["data"]}
    assert set(models) == {t5_run.name, tiny_t5_dir.name}
    text = "Write a headline about the harbour reopening."
    replies = {}
    for model_id in (t5_run.name, tiny_t5_dir.name):
        resp = client.post("/v1/chat/completions", headers=AUTH, json={
            "model": model_id, "messages": [{"role": "user", "content": text}], "max_tokens": 6, "temperature": 0,
            "repetition_penalty": 1.0})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "chat.completion" and body["model"] == model_id
        assert 1 <= body["usage"]["completion_tokens"] <= 6
        replies[model_id] = body["choices"][0]["message"]["content"]
    assert replies[t5_run.name].strip() == _expected(t5_run, text, 6)  # the engine strips, the API does not
    assert replies[tiny_t5_dir.name].strip() == _expected(tiny_t5_dir, text, 6)
    assert replies[t5_run.name] != replies[tiny_t5_dir.name]  # the adapter is applied per request


def test_completions_with_n_samples_and_a_task_route(client):
    resp = client.post("/v1/completions", headers=AUTH, json={
        "prompt": "Headline: the harbour reopened", "max_tokens": 6, "temperature": 1.0, "n": 2, "seed": 3})
    assert resp.status_code == 200, resp.text
    choices = resp.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1] and all(c["text"] for c in choices)
    resp = client.post("/v1/weaver/headline", headers=AUTH, json={"input": "The harbour reopened on Monday.",
                                                                   "max_tokens": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
