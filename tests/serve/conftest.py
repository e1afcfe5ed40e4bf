"""Fixtures for the server tests: tiny tuned runs (random LoRA adapters) and a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key-123"


def make_run(base_dir: Path, out: Path, task: str, seed: int, scale: float = 0.5) -> Path:
    """A Weaver run folder: config.yaml (base = base_dir, data.task = task) and a LoRA adapter whose B is non-zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from weaver.config import DataConfig, ModelConfig, RunConfig, save_resolved

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(out / "adapter")
    save_resolved(RunConfig(model=ModelConfig(name=str(base_dir)), data=DataConfig(task=task)), out)
    return out


@pytest.fixture(scope="session")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two tuned runs on the tiny base: 'headline' (data.task=headline) and 'summary' (data.task=summarize)."""
    root = tmp_path_factory.mktemp("runs")
    return {"headline": make_run(tiny_model_dir, root / "headline", "headline", seed=1),
            "summary": make_run(tiny_model_dir, root / "summary", "summarize", seed=2)}


@contextlib.contextmanager
def live_server(settings, backend=None, wait_ready: bool = True):
    """Run create_app(settings) under uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import torch
    import uvicorn

    from weaver.serve.app import create_app
    from weaver.serve.protocol import uvicorn_options

    threads = torch.get_num_threads()
    app = create_app(settings, backend)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(settings), timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = httpx.get(url + "/health", timeout=2).status_code
                if status == 200 or (not wait_ready and status == 503):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the test server did not become ready within 60 s")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        torch.set_num_threads(threads)  # settings.threads is process-wide: give other tests theirs back


def batching_stats(url: str) -> dict:
    """The batching counters of a live server's /health."""
    return httpx.get(url + "/health", timeout=30).json()["batching"]


def wait_for(predicate, seconds: float = 30) -> bool:
    """Poll predicate every 50 ms; True once it holds, False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="package")
def server(runs, tiny_model_dir):
    """One live server for the read-only tests: the headline run (+ its base) and the summary adapter, with a key.

    On the transformers backend: these tests check the API against the transformers decoder (seeded sampling is
    reproducible there); the llama.cpp backend's serving tests are in tests/export/test_llamacpp.py."""
    from weaver.serve.settings import ServeSettings

    settings = ServeSettings(model=str(runs["headline"]), adapters={"summary": str(runs["summary"])},
                             api_key=API_KEY, max_batch=16, batch_wait_ms=50, max_n=4, threads=1,
                             backend="transformers")
    with live_server(settings) as url:
        yield url


@pytest.fixture(scope="package")
def client(server):
    """The official openai client pointed at the live server."""
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    """The Authorization header the shared server expects."""
    return {"Authorization": f"Bearer {API_KEY}"}
