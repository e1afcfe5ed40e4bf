"""`--backend auto`: llama.cpp on a CPU where it can run the model and its adapters, transformers otherwise."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from weaver.config import BACKEND_NAMES
from weaver.errors import ConfigError
from weaver.generate.engine import BACKENDS, choose_backend


def test_backend_names_agree_with_the_backends():
    assert set(BACKEND_NAMES) == {"auto", *BACKENDS}


def test_auto_picks_llamacpp_on_cpu_for_an_exportable_model(tiny_model_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend("auto", str(tiny_model_dir))[0] == "llamacpp"
    assert choose_backend("transformers", str(tiny_model_dir)) == ("transformers", "asked for")
    assert choose_backend("auto", str(tiny_model_dir), num_beams=4)[0] == "transformers"
    assert choose_backend("auto", str(tiny_model_dir), quantize="int8")[0] == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_backend("auto", str(tiny_model_dir)) == ("transformers", "a GPU is available")
    with pytest.raises(ConfigError, match="--backend 'vllm'"):
        choose_backend("vllm", str(tiny_model_dir))


def test_auto_keeps_transformers_for_what_llamacpp_cannot_run(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    real_resolve = __import__("weaver.models.loading", fromlist=["resolve"]).resolve

    def fake_resolve(spec):
        if spec == "gpt2":
            return SimpleNamespace(adapter_dir=None, base_dir=other, kind=None, method=None)
        if spec in ("prefix-run", "ia3-run"):
            adapter = tmp_path / spec
            adapter.mkdir(exist_ok=True)
            peft_type = "PREFIX_TUNING" if spec == "prefix-run" else "IA3"
            (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))
            return SimpleNamespace(adapter_dir=adapter, base_dir=tiny_model_dir, kind=peft_type,
                                   method="prefix" if spec == "prefix-run" else "ia3")
        return real_resolve(spec)

    monkeypatch.setattr("weaver.models.loading.resolve", fake_resolve)
    assert choose_backend("auto", "gpt2") == ("transformers", "the GGUF export does not write a GPT2LMHeadModel")
    name, why = choose_backend("auto", "prefix-run")
    assert name == "transformers" and "prefix" in why
    # an IA3 run merges (served merged on llama.cpp), but as a served --adapter only plain LoRA applies per request
    assert choose_backend("auto", "ia3-run")[0] == "llamacpp"
    name, why = choose_backend("auto", "ia3-run", served=True)  # served next to its base: applied per request
    assert name == "transformers" and "plain LoRA" in why
    name, why = choose_backend("auto", str(tiny_model_dir), adapters={"news": "ia3-run"})
    assert name == "transformers" and "plain LoRA" in why
    name, why = choose_backend("auto", "ia3-run", adapters={"news": str(tiny_model_dir)})
    assert name == "transformers" and "plain LoRA" in why  # with --adapter, the --model run is applied per request too
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert choose_backend("auto", str(tiny_model_dir)) == ("transformers", "xllamacpp is not installed")


def test_one_default_backend_everywhere_a_model_decodes():
    """generate, eval (generate.backend), serve and the apps share one default backend (no drift)."""
    import argparse
    import inspect

    from weaver.apps.source import LocalSource, open_source
    from weaver.cli import generate as generate_cli
    from weaver.cli import newsroom as app_cli
    from weaver.config import GenerateConfig
    from weaver.generate.engine import load_generator
    from weaver.serve.settings import ServeSettings

    default = GenerateConfig().backend
    assert ServeSettings().backend == default in BACKEND_NAMES
    for fn in (load_generator, LocalSource.__init__, open_source):
        assert inspect.signature(fn).parameters["backend"].default == default, fn
    for add, argv in ((generate_cli.add_arguments, ["--prompt", "p"]), (app_cli.add_source_arguments, [])):
        parser = argparse.ArgumentParser()
        add(parser)
        assert parser.parse_args(argv).backend == default, add


def test_auto_leaves_a_missing_model_to_the_loader_which_names_it(tmp_path):
    name, why = choose_backend("auto", str(tmp_path / "missing"))
    assert name == "transformers" and "missing" in why
