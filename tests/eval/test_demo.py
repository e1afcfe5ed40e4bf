"""`make demo`'s configuration: shipped data, the support-reply task, a held-out test split, a time budget."""

from __future__ import annotations

from pathlib import Path

from weaver.demo import DATA, demo_config


def test_demo_config_points_at_shipped_data(tmp_path):
    cfg = demo_config(str(tmp_path / "run"), minutes=6, epochs=2, limit=100)
    for f in (cfg.data.train, cfg.data.dev, cfg.data.test):
        assert Path(f).is_file() and Path(f).parent == DATA
    assert cfg.data.task == "support_reply" and cfg.model.name == "smollm2-135m-instruct"
    assert cfg.train.max_minutes == 6 and cfg.eval.limit == 100
    assert cfg.eval.out_dir == str(tmp_path / "run" / "eval")


def test_demo_test_split_is_held_out():
    from weaver.data.splits import load_splits

    cfg = demo_config("unused", minutes=1, epochs=1, limit=None)
    splits = load_splits(cfg.data)
    assert len(splits.test) == 100 and len(splits.train) >= 250
    train_inputs = {r.input for r in splits.train}
    assert not any(r.input in train_inputs for r in splits.test)


def test_zh_demo_config_is_the_chinese_title_preset_on_shipped_data(tmp_path):
    from weaver.demo import DEMOS

    cfg = demo_config(str(tmp_path / "run"), minutes=5, epochs=2, limit=100, lang="zh")
    for f in (cfg.data.train, cfg.data.dev, cfg.data.test):
        assert Path(f).is_file() and Path(f).parent == DEMOS["zh"].data
    assert DEMOS["zh"].data.name == "csl_title" and (DEMOS["zh"].data / "SOURCE.md").is_file()
    assert cfg.model.name == "gemma3-270m" and cfg.data.task == "headline" and cfg.data.lang == "zh"
    assert cfg.train.max_minutes == 5 and cfg.eval.limit == 100 and cfg.train.top_layers == 6
    smoke = demo_config(str(tmp_path / "s"), minutes=5, epochs=2, limit=4, lang="zh", smoke=True)
    assert smoke.train.max_steps == 2 and smoke.data.limit_train == 16 and smoke.generate.max_new_tokens == 12


def test_demo_refuses_a_missing_model_in_one_sentence(monkeypatch, capsys):
    from weaver.demo import main
    from weaver.models import catalog

    monkeypatch.setattr(catalog.CatalogEntry, "chunk_paths", lambda self: None)
    assert main(["--lang", "zh", "--smoke", "--out", "unused"]) != 0
    err = capsys.readouterr().err
    assert "gemma3-270m" in err and "make models-multilingual" in err and "Traceback" not in err
