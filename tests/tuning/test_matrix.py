"""The method x stage matrix: every train.method through tune -> eval -> generate -> serve -> export --merge / --gguf.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/tuning/test_matrix.py

One 2-step run per method on the tiny in-process Llama (module-scoped, shared by every cell). Each cell
either works and its output is checked (the same text through two entry points, files that load, merged
logits equal to the unmerged model's), or ends in one `error:` line and a non-zero exit; none may end in
a traceback or "internal error". The last tests kill `weaver tune` (SIGKILL, in a subprocess) for one
method of each family and check that `--resume` ends on the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuning.conftest import tiny_overrides, write_jsonl
from weaver.cli import main

METHODS = ("lora", "adalora", "prefix", "ia3", "adapter", "freeze", "full")
ADAPTERS = ("lora", "adalora", "prefix", "ia3", "adapter")  # methods that write adapter/
MERGEABLE = ("lora", "adalora", "ia3")
PLAIN = ("freeze", "full")  # the run holds a whole model folder
EXTRA = {"prefix": {"num_virtual_tokens": 4}, "adapter": {"adapter_size": 8, "top_layers": 1},
         "freeze": {"top_layers": 1}, "lora": {"top_layers": 1}}
PROMPT = "Summarize: the river rose after three days of rain and the market moved to the hill."
PENALTY = 2.0  # without a strong penalty the random tiny model repeats a newline after the chat template
ROOT = Path(__file__).resolve().parents[2]
AFTER_TUNE = ["--eval.after_tune", "true", "--eval.limit", "2", "--eval.bootstrap", "100", "--eval.semantic", "false",
              "--generate.max_new_tokens", "4"]


def _args(model_dir: Path, data: Path, out: Path, method: str, **train) -> list[str]:
    settings = {"max_steps": 2, "eval_every": 2, "save_every": 2, "lr": 2e-3, **EXTRA.get(method, {}), **train}
    args = tiny_overrides(model_dir, data, out, method=method, **settings)
    return args + ["--data.split", "[0.7, 0.2, 0.1]"]


def _one_error_line(capsys, code: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """(model dir, data file, config file, {method: run dir}): every method tuned 2 steps via `weaver tune`."""
    root = tmp_path_factory.mktemp("matrix")
    data = write_jsonl(root / "train.jsonl", 40)
    config = root / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    runs = {}
    for method in METHODS:
        after = AFTER_TUNE if method in ("prefix", "adapter") else []
        code = main(["tune", str(config), *_args(tiny_model_dir, data, root / method, method), *after])
        assert code == 0, method
        runs[method] = root / method
    return tiny_model_dir, data, config, runs


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("method", METHODS)
def test_tune_writes_a_run_that_loads_and_differs_from_its_base(setup, method):
    from weaver.models.loading import load_model

    model_dir, _, _, runs = setup
    run = runs[method]
    assert (run / ("adapter" if method in ADAPTERS else "model")).is_dir()
    assert json.loads((run / "run.json").read_text())["steps"] == 2
    tuned, tok = load_model(run, merge=True)
    base, _ = load_model(model_dir)
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    assert (_logits(tuned, ids) - _logits(base, ids)).abs().max() > 1e-4  # the trained weights are used
    if method in ("prefix", "adapter"):  # eval.after_tune ran on the unmergeable run
        assert json.loads((run / "eval" / "report.json").read_text())["n"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_eval_reports_the_tuned_model(setup, method, tmp_path, capsys):
    from weaver.generate.engine import load_generator
    from weaver.generate.sampling import SamplingParams

    _, data, _, runs = setup
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(runs[method]), "--data", str(data), "--limit", "2", "--out", str(out),
                 "--generate.max_new_tokens", "4", "--eval.bootstrap", "100", "--eval.semantic", "false"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 2
    ppl = report["metrics"]["perplexity"]
    assert ppl["tuned"] != ppl["base"], ppl  # the reference perplexity is the tuned model's (prefix included)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    gen, tok, _ = load_generator(str(runs[method]))
    decoding = report["decoding"]
    params = SamplingParams(**{k: decoding[k] for k in ("max_new_tokens", "temperature", "repetition_penalty",
                                                        "stop", "seed")})
    expected = [c[0].text for c in gen.generate([r["prompt"] for r in rows], params)]
    assert [r["tuned"] for r in rows] == expected  # the report holds the tuned model's own replies


@pytest.fixture(scope="module")
def replies(setup):
    """{method: the `weaver generate` reply to PROMPT} (greedy, no repetition penalty, 8 tokens)."""
    return {}


def _generate_cli(run: Path, capsys) -> str:
    code = main(["generate", "--model", str(run), "--prompt", PROMPT, "--max-new-tokens", "8",
                 "--repetition-penalty", str(PENALTY), "--no-safety"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.rstrip("\n")


@pytest.mark.parametrize("method", METHODS)
def test_generate_cli_equals_the_engine_and_the_apps_backend(setup, replies, method, capsys):
    from weaver.apps.source import LocalSource
    from weaver.data.chat import render_messages
    from weaver.generate.sampling import SamplingParams

    run = setup[3][method]
    text = _generate_cli(run, capsys)  # streamed (engine.stream)
    assert text.strip()
    local = LocalSource(str(run))
    prompt = render_messages(local.tokenizer, [{"role": "user", "content": PROMPT}])
    params = SamplingParams(max_new_tokens=8, repetition_penalty=PENALTY)
    batched = local.generator.generate(["Hi", prompt, "Write a headline about a harbour."], params)
    assert batched[1][0].text == text.strip()  # batched (left-padded) == streamed single row
    replies[method] = text


def _chat(client, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0,
            "repetition_penalty": PENALTY}
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"].strip()  # the engine strips its replies, the API not


@pytest.mark.parametrize("method", METHODS)
def test_serve_as_model_and_as_adapter(setup, replies, method, capsys):
    from fastapi.testclient import TestClient

    from weaver.serve.app import create_app
    from weaver.serve.settings import ServeSettings

    model_dir, _, _, runs = setup
    run = runs[method]
    expected = replies.get(method) or _generate_cli(run, capsys)
    base_reply = _generate_cli(model_dir, capsys)
    settings = ServeSettings(model=str(run), threads=1, safety=False)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert run.name in ids
        assert _chat(client, run.name) == expected.strip()
        if method in ADAPTERS:  # the base is served from the same weights, adapter switched off
            assert _chat(client, model_dir.name) == base_reply.strip()
    if method not in ADAPTERS:
        return
    settings = ServeSettings(model=str(model_dir), adapters={"tuned": str(run)}, threads=1, safety=False)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert _chat(client, "tuned") == expected.strip()
        assert _chat(client, model_dir.name) == base_reply.strip()


def test_serve_refuses_unmergeable_adapters_next_to_others(setup, capsys):
    model_dir, _, _, runs = setup
    for method in ("prefix", "adapter"):
        code = main(["serve", "--model", str(model_dir), "--adapter", f"a={runs['lora']}",
                     "--adapter", f"b={runs[method]}"])
        line = _one_error_line(capsys, code, f"train.method {method}")
        assert "own process" in line


@pytest.mark.parametrize("method", METHODS)
def test_export_merge(setup, method, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weaver.models.loading import load_model

    run = setup[3][method]
    out = tmp_path / "merged"
    code = main(["export", str(run), "--merge", "--out", str(out)])
    if method in ("prefix", "adapter"):
        line = _one_error_line(capsys, code, "cannot do")
        assert "weaver serve --model" in line and not out.exists()
        return
    assert code == 0, capsys.readouterr().err
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    ids = torch.tensor([AutoTokenizer.from_pretrained(out)(PROMPT)["input_ids"]])
    unmerged, _ = load_model(run)  # merge=False: base + adapter as trained
    torch.testing.assert_close(_logits(merged, ids), _logits(unmerged, ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_export_gguf(setup, method, tmp_path, capsys):
    import gguf
    import numpy as np

    from weaver.models.loading import load_model

    run = setup[3][method]
    out = tmp_path / "m.gguf"
    code = main(["export", str(run), "--gguf", "--out", str(out)])
    if method in ("prefix", "adapter"):
        line = _one_error_line(capsys, code, "GGUF export needs the adapter merged")
        assert f"train.method {method}" in line and not out.exists()
        return
    assert code == 0, capsys.readouterr().err
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    merged = load_model(run, merge=True)[0].state_dict()
    want = merged["model.layers.1.mlp.down_proj.weight"].numpy()
    got = tensors["blk.1.ffn_down.weight"].data.astype(np.float32).reshape(want.shape)
    assert np.abs(got - want).max() < 2e-3  # f16 of the tuned (merged) weights


# ---- kill and resume, one method of each family ------------------------------------------------------------
def _weights(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "adapter" if (run / "adapter").is_dir() else run / "model"
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    assert out, folder
    return out


@pytest.mark.parametrize("method", ["lora", "prefix", "adapter", "full"])
def test_resume_after_kill_ends_on_the_uninterrupted_weights(setup, method, tmp_path, caplog):
    model_dir, data, config, _ = setup
    steps = {"max_steps": 6, "save_every": 1, "eval_every": 3}
    assert main(["tune", str(config), *_args(model_dir, data, tmp_path / "ref", method, **steps)]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "weaver.cli", "tune", str(config), *_args(model_dir, data, out, method, **steps)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-000002").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (out / "run.json").exists()  # killed mid-run
    assert main(["tune", str(config), *_args(model_dir, data, out, method, **steps), "--resume"]) == 0
    assert any("resuming from" in r.getMessage() for r in caplog.records)
    a, b = _weights(out), _weights(tmp_path / "ref")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
