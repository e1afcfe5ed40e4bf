"""The Chinese presets (configs/lcsts-gemma3.yaml, configs/adgen-gemma3.yaml): they open with their launch
command, say how to use one's own files, load and validate, and (with the shared data) split into a held-out set."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaver.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"lcsts-gemma3.yaml": ("headline", "lcsts"), "adgen-gemma3.yaml": ("adcopy", "advertisegen")}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_opens_with_its_command_and_validates(name):
    path = ROOT / "configs" / name
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# weaver tune configs/{name}"
    assert any("--data.train my_" in line for line in lines if line.startswith("#"))  # how to use one's own files
    cfg = load_config(path, [])
    task, folder = PRESETS[name]
    assert cfg.model.name == "gemma3-270m" and cfg.data.task == task and cfg.data.lang == "zh"
    assert Path(cfg.data.train).parent.name == folder and cfg.data.test is None
    own = load_config(path, ["--data.train", "my.jsonl", "--data.dev", "none"])
    assert own.data.train == "my.jsonl" and own.data.dev is None


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_carves_a_held_out_set_from_the_shared_data(name, shared_data):
    from weaver.data.splits import load_splits

    cfg = load_config(ROOT / "configs" / name, [])
    if not Path(cfg.data.train).is_file():
        pytest.skip("the shared data is not here")
    splits = load_splits(cfg.data)
    train_inputs = {r.input for r in splits.train}
    assert len(splits.test) >= 50 and not any(r.input in train_inputs for r in splits.test)
    assert len(splits.dev) == cfg.data.limit_dev
