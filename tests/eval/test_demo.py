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
