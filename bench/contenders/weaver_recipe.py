"""Weaver's default recipe as a contender: `weaver tune <the shipped dialogsum preset>` with the benchmark's data.

Only what the benchmark must control is overridden: the data files, the base model folder, the output
directory, the wall-clock budget (`train.max_minutes`), the number of epochs (the same for every
contender), the checkpoint cadence (every checkpoint is kept
so the curve can be drawn) and no evaluation after tuning. Everything else is the preset's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def find_preset(configs: Path = ROOT / "configs") -> Path | None:
    """The shipped summarisation preset for the embedded model (configs/*dialogsum*.yaml, else *summar*.yaml)."""
    for pattern in ("*dialogsum*.yaml", "*summar*.yaml"):
        found = sorted(configs.glob(pattern))
        preferred = [p for p in found if "smollm2" in p.name]
        if found:
            return (preferred or found)[0]
    return None


def defaults_preset(path: Path) -> Path:
    """A config holding only `data.task: summarize`: weaver's built-in defaults, when no preset is shipped."""
    path.write_text("# weaver's built-in defaults (weaver.config), task summarize\ndata:\n  task: summarize\n")
    return path


def command(preset: Path, model_dir: Path, train: Path, dev: Path, test: Path, out_dir: Path, s: dict) -> list[str]:
    """The `weaver tune` command line (run with this interpreter, so the same venv).

    Args:
        s: budget_min, save_steps, and optionally epochs (the same number of passes the other contenders
            get), max_steps (smoke) and extra (list of overrides).
    """
    cmd = [sys.executable, "-c", "import sys; from weaver.cli import main; sys.exit(main())", "tune", str(preset),
           "--model.name", str(model_dir), "--data.train", str(train), "--data.dev", str(dev),
           "--data.test", str(test), "--train.out_dir", str(out_dir), "--train.max_minutes", str(s["budget_min"]),
           "--train.save_every", str(s["save_steps"]), "--train.keep_checkpoints", "1000",
           "--train.resume", "never", "--eval.after_tune", "false"]
    if s.get("epochs"):
        cmd += ["--train.epochs", str(s["epochs"])]
    if s.get("max_steps"):
        cmd += ["--train.max_steps", str(s["max_steps"])]
    return cmd + list(s.get("extra", []))


def smoke_overrides(preset: Path) -> list[str]:
    """Overrides that fit the preset to the 2-layer smoke model (a top_layers above 1 becomes 1)."""
    train = (yaml.safe_load(Path(preset).read_text()) or {}).get("train") or {}
    top = train.get("top_layers")
    return ["--train.top_layers", "1"] if isinstance(top, int) and top > 1 else []
