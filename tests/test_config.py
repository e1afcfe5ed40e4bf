"""Config: precedence defaults < YAML < CLI, unknown keys rejected with a suggestion, presets load."""

from pathlib import Path

import pytest
import yaml

from weaver.config import RunConfig, load_config, save_resolved
from weaver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_then_yaml_then_cli(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 0.001\n  batch_size: 4\ndata:\n  task: headline\n")
    assert load_config().train.lr == RunConfig().train.lr
    from_yaml = load_config(cfg_file)
    assert from_yaml.train.lr == 0.001 and from_yaml.train.batch_size == 4 and from_yaml.data.task == "headline"
    both = load_config(cfg_file, ["--train.lr", "5e-5", "--data.task=summarize"])
    assert both.train.lr == 5e-5 and both.train.batch_size == 4 and both.data.task == "summarize"


def test_override_types_are_coerced():
    cfg = load_config(None, ["--train.max_steps", "7", "--eval.after_tune", "true", "--train.layers", "[-1, -2]"])
    assert cfg.train.max_steps == 7 and cfg.eval.after_tune is True and cfg.train.layers == [-1, -2]
    assert load_config(None, ["--train.max_steps", "none"]).train.max_steps is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--train.lrr", "1"], "did you mean 'lr'"),
        (["--trian.lr", "1"], "did you mean 'train'"),
        (["--train.lr", "abc"], "expects float"),
        (["--train.method", "lorra"], "did you mean 'lora'"),
        (["--train.batch_size", "0"], "batch_size"),
    ],
)
def test_bad_values_name_the_flag(args, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, args)


def test_unknown_yaml_key_and_bad_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  taks: headline\n")
    with pytest.raises(ConfigError, match="did you mean 'task'"):
        load_config(f)
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_preset_loads():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        cfg = load_config(preset)
        raw = yaml.safe_load(preset.read_text())
        for section, values in raw.items():  # every key the preset sets is the value the run gets
            for key, value in values.items():
                assert getattr(getattr(cfg, section), key) == value, f"{preset.name}: {section}.{key}"
        first = preset.read_text().splitlines()[0]
        assert first.startswith("# weaver tune"), f"{preset.name} must open with its launch command"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["--train.lr", "0.002", "--data.task", "headline"])
    save_resolved(cfg, tmp_path)
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert "torch" in (tmp_path / "versions.json").read_text()
