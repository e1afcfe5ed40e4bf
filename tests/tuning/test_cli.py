"""`weaver tune`: overrides and --resume / --fresh reach tune() as config values; errors are one line."""

from __future__ import annotations

from weaver import cli


def test_overrides_and_resume_flags_reach_tune(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr("weaver.tuning.run.tune", lambda cfg: seen.append(cfg) or tmp_path)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("# weaver tune c.yaml\ntrain:\n  lr: 0.001\n")
    assert cli.main(["tune", str(cfg_file), "--train.max_minutes", "5", "--resume"]) == 0
    assert seen[-1].train.lr == 0.001 and seen[-1].train.max_minutes == 5 and seen[-1].train.resume == "always"
    assert cli.main(["tune", "--fresh", str(cfg_file)]) == 0
    assert seen[-1].train.resume == "never"
    assert "run directory" in capsys.readouterr().out


def test_bad_override_is_one_line_error(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("# weaver tune c.yaml\n")
    assert cli.main(["tune", str(cfg_file), "--train.methd", "lora"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "did you mean 'method'" in err and "Traceback" not in err
    assert cli.main(["tune", str(cfg_file), "--resume", "--fresh"]) == 2
