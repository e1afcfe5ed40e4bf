"""Config: precedence defaults < YAML < CLI, unknown keys rejected with a suggestion, presets load."""

import logging
from pathlib import Path

import pytest
import yaml

from weaver.config import METHOD_OPTIONS, METHODS, RunConfig, TrainConfig, load_config, read_yaml, save_resolved
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


PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_switches_to_every_method(preset, method, caplog):
    """`weaver tune PRESET --train.method M` resolves: the preset's options for other methods are dropped with
    one line of notice, everything else in the preset is kept."""
    with caplog.at_level(logging.WARNING, logger="weaver.config"):
        cfg = load_config(preset, ["--train.method", method])
    assert cfg.train.method == method
    defaults, written = TrainConfig(), read_yaml(preset).get("train", {})
    dropped = [k for k, v in written.items() if k in METHOD_OPTIONS and method not in METHOD_OPTIONS[k]
               and v != getattr(defaults, k)]
    for key, value in written.items():
        expected = getattr(defaults, key) if key in dropped else value
        assert key == "method" or getattr(cfg.train, key) == expected, key
    notices = [r.getMessage() for r in caplog.records if r.name == "weaver.config"]
    if dropped:
        assert len(notices) == 1 and all(f"train.{k}=" in notices[0] for k in dropped), notices
    else:
        assert not notices


def test_the_readme_method_switches():
    preset = ROOT / "configs" / "dialogsum-smollm2.yaml"
    ia3 = load_config(preset, ["--train.method", "ia3"]).train
    assert ia3.top_layers is None and ia3.gradient_checkpointing is True  # ia3 checkpoints; it adapts every block
    prefix = load_config(preset, ["--train.method", "prefix"]).train
    assert prefix.gradient_checkpointing is False and prefix.top_layers is None


@pytest.mark.parametrize(("args", "flag"), [
    (["--train.method", "ia3", "--train.top_layers", "3"], "--train.top_layers"),
    (["--train.method", "prefix", "--train.gradient_checkpointing", "true"], "--train.gradient_checkpointing"),
    (["--train.method", "full", "--train.lora_r", "8"], "--train.lora_r"),
    (["--train.num_virtual_tokens", "8"], "--train.num_virtual_tokens"),  # the preset's lora, a prefix option
])
def test_an_option_set_on_the_command_line_for_another_method_is_an_error(args, flag):
    with pytest.raises(ConfigError, match=rf"^{flag} applies only to train\.method"):
        load_config(ROOT / "configs" / "dialogsum-smollm2.yaml", args)


def test_dpo_loss_type_is_checked_and_needs_the_dpo_objective():
    assert TrainConfig(objective="dpo", dpo_loss_type="ipo").dpo_loss_type == "ipo"
    with pytest.raises(ConfigError, match="train.dpo_loss_type"):
        TrainConfig(objective="dpo", dpo_loss_type="orpo")
    with pytest.raises(ConfigError, match="--train.dpo_loss_type applies only to --train.objective dpo"):
        TrainConfig(dpo_loss_type="hinge")
