"""Hostile configs and run folders (issue 15, items 9-12): one sentence naming the flag, and no folder is lost.

    .venv/bin/pytest -q tests/reliability/test_hostile_config.py

Each probe is what a careless or hostile user would type: `--fresh` on a folder that is not a run, a run
folder that is a file or read-only, NaN and negative budgets, a run that names itself as its base, YAML
alias bombs in a run config and in a safety policy, and a run that fails before it trained anything.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from tuning.conftest import tiny_overrides, write_jsonl

from weaver import cli
from weaver.config import load_config
from weaver.errors import ConfigError, ModelNotFoundError

QUICK = dict(max_steps=2, eval_every=0, save_every=1)


def _tune_cli(capsys, args: list[str], config: Path) -> tuple[int, str]:
    """Run `weaver tune CONFIG ARGS...`; return (exit code, stderr)."""
    code = cli.main(["tune", str(config), *args])
    return code, capsys.readouterr().err


def _one_sentence(err: str, needle: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert needle in err, err


@pytest.fixture
def empty_config(tmp_path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("# weaver tune c.yaml\n")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", 24)


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# ---- item 9: --fresh deletes only what a run wrote, and only after the data checked out -------------------

def test_fresh_refuses_a_folder_that_is_not_a_weaver_run(tiny_model_dir, data, tmp_path, capsys, empty_config):
    folder = tmp_path / "mine"
    for name in ("model", "best", "tb"):
        (folder / name).mkdir(parents=True)
        (folder / name / "keep.txt").write_text(name)
    (folder / "run.json").write_text("{}")
    (folder / "notes.txt").write_text("my notes")
    before = _tree(folder)
    for flag in (["--fresh"], []):
        code, err = _tune_cli(capsys, [*flag, *tiny_overrides(tiny_model_dir, data, folder, **QUICK)], empty_config)
        assert code == 2
        _one_sentence(err, "--train.out_dir")
        assert _tree(folder) == before


def test_fresh_deletes_only_what_the_run_wrote(tiny_model_dir, data, tmp_path, capsys, empty_config):
    run = tmp_path / "run"
    args = tiny_overrides(tiny_model_dir, data, run, **QUICK)
    assert _tune_cli(capsys, args, empty_config)[0] == 0
    manifest = json.loads((run / "weaver-run.json").read_text())
    assert {"config.yaml", "checkpoints", "adapter", "run.json"} <= set(manifest["wrote"])
    (run / "notes.txt").write_text("the user's own file")
    (run / "drafts").mkdir()
    (run / "drafts" / "a.txt").write_text("draft")
    assert _tune_cli(capsys, ["--fresh", *args, "--train.max_steps", "1"], empty_config)[0] == 0
    assert (run / "notes.txt").read_text() == "the user's own file" and (run / "drafts" / "a.txt").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]  # old steps gone
    steps = {json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert steps == {1}  # the first run's steps 1 and 2 are gone with its metrics.jsonl


def test_fresh_checks_the_data_before_deleting_anything(tiny_model_dir, data, tmp_path, capsys, empty_config):
    run = tmp_path / "run"
    assert _tune_cli(capsys, tiny_overrides(tiny_model_dir, data, run, **QUICK), empty_config)[0] == 0
    before = _tree(run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{not json\n')
    code, err = _tune_cli(capsys, ["--fresh", *tiny_overrides(tiny_model_dir, bad, run, **QUICK)], empty_config)
    assert code == 3 and "bad.jsonl:2" in err, err
    assert _tree(run) == before


# ---- item 10: one sentence naming the flag -------------------------------------------------------------

def _read_only_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.mkdir()
    except OSError:
        return folder / "run"
    probe.rmdir()
    folder.chmod(0o755)
    return Path("/sys/weaver-probe-run")  # root ignores file modes; sysfs refuses even root


@pytest.mark.parametrize("where", ["file", "proc", "read_only", "sys"])
def test_unusable_out_dir_is_one_sentence(where, tiny_model_dir, data, tmp_path, capsys, empty_config):
    out = {"file": tmp_path / "a_file", "proc": Path("/proc/weaver-probe/run"),
           "read_only": _read_only_dir(tmp_path), "sys": Path("/sys/weaver-probe-run")}[where]
    if where == "file":
        out.write_text("not a folder")
    if where == "sys" and not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    code, err = _tune_cli(capsys, tiny_overrides(tiny_model_dir, data, out, **QUICK), empty_config)
    assert code == 2
    _one_sentence(err, "--train.out_dir")
    if where == "file":
        assert out.read_text() == "not a folder"


@pytest.mark.parametrize(("flag", "value"), [
    ("lr", "nan"), ("lr", "inf"), ("lr", "-1e-4"), ("lr", "0"), ("seed", "-1"), ("epochs", "0"), ("epochs", "nan"),
    ("max_steps", "-1"), ("max_steps", "0"), ("max_minutes", "nan"), ("dropout", "1.5"), ("lora_dropout", "-0.1"),
    ("momentum", "nan"), ("weight_decay", "-1"), ("max_grad_norm", "inf"), ("warmup_steps", "-1"),
    ("eval_every", "-1"), ("save_every", "-1"), ("keep_checkpoints", "0"), ("patience", "0"), ("lora_r", "0"),
    ("num_virtual_tokens", "0"),
])
def test_nonsense_numbers_are_config_errors_naming_the_flag(flag, value):
    with pytest.raises(ConfigError, match=rf"--train\.{flag}\b"):
        load_config(None, [f"--train.{flag}", value])


def test_budgets_mean_what_they_say():
    assert load_config(None, ["--train.max_steps", "none"]).train.max_steps is None  # train for train.epochs
    assert load_config(None, ["--train.epochs", "0.5"]).train.epochs == 0.5


@pytest.mark.parametrize("content", ["- a list, not a run config\n", "model: [unclosed\n", "model: 3\ntrain: x\n"])
def test_foreign_or_broken_config_in_the_run_folder(content, tiny_model_dir, data, tmp_path, capsys, empty_config):
    run = tmp_path / "run"
    args = tiny_overrides(tiny_model_dir, data, run, **QUICK)
    assert _tune_cli(capsys, args, empty_config)[0] == 0
    (run / "config.yaml").write_text(content)
    before = _tree(run)
    code, err = _tune_cli(capsys, args, empty_config)
    assert code == 2
    _one_sentence(err, "config.yaml")
    assert _tree(run) == before
    foreign = tmp_path / "foreign"  # another tool's folder: a config.yaml and checkpoints of its own
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "config.yaml").write_text(content)
    code, err = _tune_cli(capsys, tiny_overrides(tiny_model_dir, data, foreign, **QUICK), empty_config)
    assert code == 2
    _one_sentence(err, "--train.out_dir")


def _fake_run(folder: Path, base: str) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (folder / "config.yaml").write_text(f"model:\n  name: {base}\n")
    return folder


def test_a_run_that_names_itself_or_a_cycle_as_its_base(tmp_path, data, capsys, empty_config):
    from weaver.models.loading import resolve

    me = _fake_run(tmp_path / "me", str(tmp_path / "me"))
    a, b = tmp_path / "a", tmp_path / "b"
    _fake_run(a, str(b))
    _fake_run(b, str(a))
    for run in (me, a):
        with pytest.raises(ModelNotFoundError, match="base"):
            resolve(run)
    code, err = _tune_cli(capsys, ["--model.name", str(me), "--data.train", str(data),
                                   "--train.out_dir", str(tmp_path / "out")], empty_config)
    assert code == 2
    _one_sentence(err, str(me))
    assert not (tmp_path / "out").exists()


# ---- item 11: YAML alias bombs --------------------------------------------------------------------------

def _bomb(word: str = "lol", levels: int = 9) -> str:
    """A flow sequence of `levels` anchors, each a list of nine aliases of the previous one: 9**8 words."""
    items = [f'&a0 ["{word}"]'] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def _bounded(fn) -> tuple[float, float]:
    """(seconds, peak MiB of Python allocations) of fn(), which must raise ConfigError mentioning aliases."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match="alias"):
            fn()
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak


def test_alias_bomb_in_a_run_config_is_refused_fast(tmp_path, figures):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"data:\n  augment:\n    synonym: {_bomb()}\n")
    seconds, peak = _bounded(lambda: load_config(path))
    assert seconds < 1.0 and peak < 20, (seconds, peak)
    _bounded(lambda: load_config(None, ["--train.target_modules", _bomb("q_proj")]))
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("data:\n  augment: &r {synonym: *r}\n")
    with pytest.raises(ConfigError, match="alias"):
        load_config(recursive)
    figures.setdefault("yaml_alias_bombs", {}).update(
        {"config_bytes": path.stat().st_size, "config_refused_s": round(seconds, 4), "config_peak_mib": round(peak, 2)})


def test_alias_bomb_in_a_safety_policy_is_refused_fast(tmp_path, figures):
    from weaver.safety import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(f"blocklist:\n  en: {_bomb('badword')}\n")
    seconds, peak = _bounded(lambda: load_policy(path))
    assert seconds < 1.0 and peak < 20, (seconds, peak)
    figures.setdefault("yaml_alias_bombs", {}).update(
        {"policy_bytes": path.stat().st_size, "policy_refused_s": round(seconds, 4), "policy_peak_mib": round(peak, 2)})


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  target_modules: &mods [q_proj, v_proj]\n  layers: &l [0, 1]\n"
                    "data:\n  columns: &c {input: text, output: summary}\n")
    cfg = load_config(path)
    assert cfg.train.target_modules == ["q_proj", "v_proj"] and cfg.data.columns["input"] == "text"


# ---- item 12: a failed run leaves nothing it created ----------------------------------------------------

def test_failed_run_removes_only_what_it_created(tiny_model_dir, data, tmp_path, capsys, empty_config):
    new = tmp_path / "runs" / "deep" / "run"
    code, err = _tune_cli(capsys, ["--model.name", str(tmp_path / "no-such-model"), "--data.train", str(data),
                                   "--train.out_dir", str(new)], empty_config)
    assert code == 2 and "does not exist" in err, err
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _ = _tune_cli(capsys, ["--model.name", str(tmp_path / "no-such-model"), "--data.train", str(data),
                                 "--train.out_dir", str(existing)], empty_config)
    assert code == 2 and existing.is_dir() and not list(existing.iterdir())
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    code, _ = _tune_cli(capsys, tiny_overrides(tiny_model_dir, bad, new, **QUICK), empty_config)
    assert code == 3 and not (tmp_path / "runs").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "c.yaml", "existing", "train.jsonl"]
