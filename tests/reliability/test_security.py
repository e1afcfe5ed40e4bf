"""Security: API key on every endpoint, no paths from requests, no pickle, escaped page, quiet logs, closed CORS.

    .venv/bin/pytest -q tests/reliability/test_security.py

The server runs in-process (FastAPI's TestClient, or uvicorn on 127.0.0.1 for the browser test) on the
tiny random model. A Python audit hook records every file the process opens while hostile requests
are answered, so "no file access" is observed, not assumed.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from weaver.errors import ModelNotFoundError
from weaver.generate.transformers_backend import TransformersBackend
from weaver.serve import errors as serve_errors
from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings

SRC = Path(__file__).resolve().parents[2] / "src" / "weaver"
KEY = "sk-weaver-secret-7f3a9c"
PROMPT = "confidential-prompt-4421 about the merger"
OPEN_PATHS = {"/health", "/"}  # the page is static HTML (its API calls need the key)


@pytest.fixture(scope="module")
def keyed(tiny_model_dir):
    """A TestClient on a loaded server with an API key."""
    app = create_app(ServeSettings(model=str(tiny_model_dir), api_key=KEY), load_in_background=False)
    with TestClient(app) as client:
        yield client


def _routes(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route, including those of included routers (FastAPI >= 0.16x includes lazily)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += _routes(inner.routes, prefix + getattr(getattr(route, "include_context", None), "prefix", ""))
            continue
        for method in sorted(getattr(route, "methods", None) or []):
            if method != "HEAD":
                out.append((method, prefix + route.path))
    return out


def test_every_endpoint_but_health_needs_the_key(keyed, figures):
    checked = []
    for method, path in _routes(keyed.app.routes):
        if path in OPEN_PATHS or path.startswith("/static"):
            continue
        url = path.replace("{task}", "headline").replace("{request_id}", "no-such-request")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": f"Bearer {KEY}x"}):
            resp = keyed.request(method, url, headers=headers, json={"prompt": "hi", "messages": [], "input": "x"})
            assert resp.status_code == 401, (method, path, headers, resp.text)
        body = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                "/v1/completions": {"prompt": "hi", "max_tokens": 1},
                "/v1/weaver/{task}": {"input": "x", "max_tokens": 1},
                "/v1/weaver/apps/newsroom": {"articles": [{"text": "x"}], "n_headlines": 0, "max_new_tokens": 1},
                "/v1/weaver/apps/adcopy": {"product": "x", "n": 1, "max_new_tokens": 1},
                "/v1/weaver/feedback": {"type": "request", "task": "headline", "drafts": [{"text": "x"}]},
                "/v1/weaver/digest": {"articles": [{"id": "a", "headline": "h"}]},
                "/v1/weaver/explain": {"text": "Rain fell.", "sources": {"input": "Rain fell in Leeds."}}}.get(path)
        ok = keyed.request(method, url, headers={"Authorization": f"Bearer {KEY}"}, json=body)
        # with the key the request is served (a history entry that does not exist is a 404, not a 401)
        assert ok.status_code == (404 if "{request_id}" in path else 200), (method, path, ok.text)
        checked.append(f"{method} {path}")
    assert {"GET /v1/models", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/weaver/{task}",
            "GET /v1/weaver/tasks"} <= set(checked)
    assert keyed.get("/health").status_code == 200
    figures.setdefault("security", {})["endpoints_requiring_key"] = len(checked)


def test_openapi_schema_needs_the_key_when_one_is_set(keyed):
    assert keyed.get("/openapi.json").status_code == 401


def test_key_is_compared_in_constant_time():
    source = inspect.getsource(serve_errors.check_api_key)
    assert "hmac.compare_digest" in source or "secrets.compare_digest" in source
    assert not re.search(r"token[^\n]*==[^\n]*api_key|api_key[^\n]*==[^\n]*token", source)


HOSTILE_MODELS = ["/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd", "~/.ssh/id_rsa",
                  "/etc/shadow", "C:\\Windows\\win.ini", "smollm2-135m-instruct", "gemma3-270m"]


class OpenRecorder:
    """A sys.addaudithook hook (hooks cannot be removed, so it records only while armed)."""

    def __init__(self):
        self.armed = False
        self.paths: list[str] = []
        sys.addaudithook(self)

    def __call__(self, event, args):
        if self.armed and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
            self.paths.append(str(args[0]))


RECORDER: OpenRecorder | None = None


def test_model_and_adapter_paths_never_come_from_a_request(keyed, tiny_model_dir, figures):
    global RECORDER
    RECORDER = RECORDER or OpenRecorder()
    auth = {"Authorization": f"Bearer {KEY}"}
    other = Path(tiny_model_dir).parent / "other-model"  # a real model folder the server was not given
    shutil.copytree(tiny_model_dir, other, dirs_exist_ok=True)
    sent = 0
    for model in [*HOSTILE_MODELS, str(other), str(tiny_model_dir)]:
        for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                           ("/v1/completions", {"prompt": "hi"}), ("/v1/weaver/headline", {"input": "x"})):
            RECORDER.paths.clear()
            RECORDER.armed = True
            try:
                resp = keyed.post(path, headers=auth, json={**body, "model": model, "max_tokens": 1,
                                                            "adapter": model, "lora_path": model})
            finally:
                RECORDER.armed = False
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found", resp.text
            touched = [p for p in RECORDER.paths if "passwd" in p or "shadow" in p or ".ssh" in p
                       or str(other) in p or str(tiny_model_dir) in p or "win.ini" in p]
            assert touched == [], (model, touched)
            sent += 1
    figures.setdefault("security", {})["hostile_model_paths_refused"] = sent


def _torch_loads() -> list[tuple[str, int, str]]:
    calls = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and not line.lstrip().startswith("#"):
                calls.append((str(path.relative_to(SRC)), n, line.strip()))
    return calls


def test_no_pickle_module_loads_in_the_code():
    hits = [(p.relative_to(SRC), n) for p in SRC.rglob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\bpickle\.loads?\(|\bjoblib\.load\(|\bdill\.", line)]
    assert hits == []


def test_every_torch_load_is_weights_only():
    unsafe = [c for c in _torch_loads() if "weights_only=True" not in c[2]]
    assert unsafe == []


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_only_model_folder_runs_no_code(tiny_model_dir, tmp_path):
    from weaver.models.loading import load_model

    folder = tmp_path / "pickle-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned-model"
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="pickle files .*pytorch_model.bin.*safetensors only"):
        load_model(str(folder))  # refused in one sentence, before anything is unpickled
    assert not marker.exists()


def test_pickle_adapter_runs_no_code(tiny_model_dir, tmp_path):
    from serve.conftest import make_run

    from weaver.models.loading import load_model

    run = make_run(tiny_model_dir, tmp_path / "run", "headline", seed=1)
    (run / "adapter" / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned-adapter"
    torch.save({"base_model.model.x": _Payload(marker)}, run / "adapter" / "adapter_model.bin")
    with pytest.raises(ModelNotFoundError, match="adapter in .* pickle files .*adapter_model.bin"):
        load_model(str(run))
    assert not marker.exists()


def test_resuming_a_foreign_checkpoint_runs_no_code(tiny_model, tmp_path):
    from weaver.config import TrainConfig
    from weaver.tuning import checkpoint as ckpt
    from weaver.tuning.methods import build_trainable
    from weaver.tuning.step import make_optimizer, make_scheduler

    model = build_trainable(tiny_model[0], TrainConfig())
    opt = make_optimizer(model, TrainConfig())
    sched = make_scheduler(opt, TrainConfig(), 10)
    folder = ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {"epoch": 0, "batch": 0})
    marker = tmp_path / "pwned-checkpoint"
    torch.save({"optimizer": _Payload(marker)}, folder / "optimizer.pt")
    (folder / ckpt.MANIFEST).unlink()
    ckpt.write_manifest(folder)  # an attacker rewrites the manifest as easily as the file
    with pytest.raises(ckpt.CheckpointError, match="does not load it"):
        ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model, opt, sched)
    assert not marker.exists()


def test_keys_and_prompts_stay_out_of_logs(tiny_model_dir, caplog, capfd):
    settings = ServeSettings(model=str(tiny_model_dir), api_key=KEY)
    text = _serve_and_collect(settings, caplog, capfd)
    assert KEY not in text and "wrong-key-991" not in text
    assert "confidential-prompt-4421" not in text
    # the same capture does see prompts when asked to log them: the check above can fail
    text = _serve_and_collect(ServeSettings(model=str(tiny_model_dir), api_key=KEY, log_prompts=True), caplog, capfd)
    assert "confidential-prompt-4421" in text and KEY not in text


def _serve_and_collect(settings: ServeSettings, caplog, capfd) -> str:
    caplog.clear()
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG):
        app = create_app(settings, load_in_background=False)
        with TestClient(app) as client:
            auth = {"Authorization": f"Bearer {KEY}"}
            client.post("/v1/chat/completions", headers=auth,
                        json={"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2})
            client.post("/v1/completions", headers=auth, json={"prompt": PROMPT, "max_tokens": 2, "stream": True})
            client.post("/v1/weaver/headline", headers=auth, json={"input": PROMPT, "max_tokens": 2})
            client.post("/v1/completions", headers={"Authorization": "Bearer wrong-key-991"}, json={"prompt": PROMPT})
            client.post("/v1/completions", headers=auth, json={"prompt": PROMPT, "temperature": 9})
    out = capfd.readouterr()
    return caplog.text + out.out + out.err


def test_cors_is_closed_by_default_and_opens_only_for_listed_origins(tiny_model_dir):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    closed = TestClient(create_app(ServeSettings(model=str(tiny_model_dir))))
    for path in ("/v1/chat/completions", "/v1/models", "/health"):
        resp = closed.options(path, headers=preflight)
        assert "access-control-allow-origin" not in resp.headers, (path, resp.headers)
    assert "access-control-allow-origin" not in closed.get("/health", headers={"Origin": "https://evil.example"}).headers
    listed = TestClient(create_app(ServeSettings(model=str(tiny_model_dir), cors_origins=["https://ok.example"])))
    ok = listed.options("/v1/chat/completions", headers={**preflight, "Origin": "https://ok.example"})
    assert ok.headers.get("access-control-allow-origin") == "https://ok.example"
    evil = listed.options("/v1/chat/completions", headers=preflight)
    assert evil.headers.get("access-control-allow-origin") != "https://evil.example"


def test_default_bind_is_loopback(monkeypatch):
    from weaver.cli import serve as serve_cli
    from weaver.generate import transformers_backend as backend_mod

    assert ServeSettings().host == "127.0.0.1"
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    args = parser.parse_args([])
    assert args.host == "127.0.0.1"
    seen = {}
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr(backend_mod.TransformersBackend, "plan", lambda self: self.model_ids.update({"m": None}))
    assert serve_cli.run(args) == 0
    assert seen["host"] == "127.0.0.1"


PAYLOAD = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"><b>bold</b>'


class ScriptBackend(TransformersBackend):
    """The real backend, except every generated text is PAYLOAD (what a model could be tricked into writing)."""

    def generate(self, rows, params, adapter):
        for row in rows:
            row.on_text(PAYLOAD)
            row.text, row.completion_tokens, row.finish_reason = PAYLOAD, 12, "stop"


def test_page_inserts_generated_text_as_text_only():
    scripts = sorted((SRC / "serve" / "static").glob("*.js"))
    assert len(scripts) > 1  # the studio's views
    for path in scripts:
        js = path.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", js), path
    assert any("textContent" in path.read_text() for path in scripts)
    html = (SRC / "serve" / "static" / "index.html").read_text()
    assert not re.search(r"<script>(?!</script>)", html)  # no inline script: the CSP below forbids them anyway


def test_api_returns_script_text_verbatim_as_json_with_a_strict_csp_on_the_page(tiny_model_dir):
    settings = ServeSettings(model=str(tiny_model_dir))
    app = create_app(settings, ScriptBackend(settings), load_in_background=False)
    with TestClient(app) as client:
        resp = client.post("/v1/weaver/headline", json={"input": "x"})
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["choices"][0]["message"]["content"] == PAYLOAD
        page = client.get("/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("headless Chromium and chromedriver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_page_in_headless_chromium_shows_script_as_text(tiny_model_dir):
    from serve.conftest import live_server

    browser = _chrome()
    settings = ServeSettings(model=str(tiny_model_dir))
    try:
        with live_server(settings, ScriptBackend(settings)) as url:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            browser.get(url + "/")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#fields textarea"))
            browser.find_element(By.CSS_SELECTOR, "#fields textarea").send_keys("an article")
            browser.find_element(By.ID, "write").click()
            wait.until(lambda b: "Done" in b.find_element(By.ID, "status").text)
            texts = [e.get_property("textContent") for e in browser.find_elements(By.CSS_SELECTOR, ".candidate .text")]
            assert texts and all(t == PAYLOAD for t in texts), texts
            assert browser.execute_script("return document.querySelectorAll('#candidates script, "
                                          "#candidates img, #candidates b').length") == 0
            threading.Event().wait(0.5)  # give an injected onerror handler time to run, if one had been created
            assert browser.execute_script("return window.__xss === undefined")
    finally:
        browser.quit()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("SE_AVOID_STATS", "true")
