"""The run folder of `weaver tune`: what may be written there, what `--fresh` may delete, and cleanup on failure.

    folder = RunFolder.open(cfg)        # checks, creates the folder, records the run manifest
    ...load the model and the data...   # bad data fails here, before anything is deleted
    folder.clear_previous()             # --fresh: delete only what earlier runs recorded as theirs
    folder.discard()                    # the run failed before training: remove what it created, nothing else

`weaver-run.json` (the run manifest) lists the entries of the folder that Weaver runs created. A folder
without one (and without the config.yaml + versions.json of a run written before manifests existed) is
not a run: when it holds anything, `weaver tune` refuses it rather than write over, or delete, files it
does not own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from weaver.config import RunConfig, parse_yaml, to_dict
from weaver.errors import ConfigError
from weaver.files import atomic_write_text
from weaver.tuning.checkpoint import latest_checkpoint

log = logging.getLogger(__name__)
MANIFEST = "weaver-run.json"
OUTPUTS = ("config.yaml", "versions.json", "metrics.jsonl", "run.json", "adapter", "model", "best", "checkpoints",
           "tb", "reference_logps.json")
"""What `weaver tune` writes into a run folder (besides the manifest and the temporary `.NAME.*` files)."""
FOREIGN_OK = ("sweep-trial.log",)
"""Files other Weaver verbs put into a run folder before `weaver tune` runs there (weaver sweep's trial log)."""
# Settings that may change between a killed run and its resumption (budgets, logging, bookkeeping).
RESUMABLE_CHANGES = {"max_minutes", "max_steps", "epochs", "resume", "logging", "eval_every", "save_every",
                     "keep_checkpoints", "patience", "out_dir"}


def outputs(cfg: RunConfig) -> list[str]:
    """The entries this run may create in its folder (OUTPUTS, plus wandb/ and eval/ when they land there)."""
    names = list(OUTPUTS)
    if "wandb" in cfg.train.logging and not os.environ.get("WANDB_DIR"):
        names.append("wandb")
    if cfg.eval.after_tune and cfg.eval.out_dir is None:
        names.append("eval")
    return names


def _manifest(path: Path) -> dict | None:
    """The run manifest of a folder, {} for a run written before manifests, None for a folder that is no run."""
    file = path / MANIFEST
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("wrote"), list):
            raise ConfigError(f"{file} is damaged: delete the folder by hand or pass a new --train.out_dir")
        return data
    if (path / "config.yaml").is_file() and (path / "versions.json").is_file():
        return {}
    return None


def _old_config(run_dir: Path) -> dict:
    """The resolved config.yaml a run folder holds (parsed), checked to be a Weaver run config.

    Raises:
        ConfigError: a broken or foreign config.yaml, naming the file.
    """
    file = run_dir / "config.yaml"
    why = ""
    try:
        old = parse_yaml(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        old, why = None, f" ({getattr(exc, 'problem', None) or getattr(exc, 'strerror', None) or exc})"
    sections = ("model", "data", "train")
    if not isinstance(old, dict) or not all(isinstance(old.get(s), dict) for s in sections):
        raise ConfigError(f"{file} is not a Weaver run config{why}: pass a new --train.out_dir, or --fresh to start "
                          "over in this folder")
    return old


def check_resumable(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to continue in a run folder whose checkpoints come from different settings.

    Raises:
        ConfigError: the folder's config.yaml is broken, foreign, or differs in a setting resuming cannot change.
    """
    if not (run_dir / "config.yaml").is_file():
        return
    old, new = _old_config(run_dir), to_dict(cfg)
    if not (run_dir / "checkpoints").is_dir():
        return
    for section in ("model", "data", "train"):
        for key, value in new[section].items():
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if old[section].get(key, value) != value:
                raise ConfigError(
                    f"{run_dir} holds a run with {section}.{key}={old[section][key]!r}, not {value!r}: pass a new "
                    "--train.out_dir, or --fresh (--train.resume never) to start over in it"
                )


@dataclass
class RunFolder:
    """A run folder opened for one `weaver tune`: what it held before and what this run may create."""

    path: Path
    created: Path | None = None
    """The topmost folder this run created (the run folder or one of its parents); None when it existed."""
    claimed: set[str] = field(default_factory=set)
    """Entries earlier runs recorded as theirs (what --fresh may delete)."""
    new: set[str] = field(default_factory=set)
    """Outputs absent when this run began: what it creates, and removes again if it fails before training."""
    fresh: bool = False

    @classmethod
    def open(cls, cfg: RunConfig) -> RunFolder:
        """Check the folder, create it and record the manifest; writes nothing else and deletes nothing.

        Raises:
            ConfigError: one sentence naming --train.out_dir (a file, not creatable or writable, a folder that
                is not a run, a foreign or broken config.yaml, settings that differ from its checkpoints).
        """
        path = Path(cfg.train.out_dir)
        fresh = cfg.train.resume == "never"
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--train.out_dir {path} is a file, not a folder: pass a folder for the run")
        manifest = _manifest(path) if path.is_dir() else None
        if path.is_dir() and manifest is None:
            strangers = sorted(p.name for p in path.iterdir() if p.name not in FOREIGN_OK)
            if strangers:
                shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
                raise ConfigError(f"--train.out_dir {path} is not empty ({shown}) and is not a Weaver run: pass a new "
                                  "or empty folder (nothing in it was touched)")
        if manifest == {} and fresh:
            raise ConfigError(f"--train.out_dir {path} was written by a Weaver without run manifests, so --fresh "
                              f"cannot tell what is safe to delete: delete it by hand or pass a new folder")
        if not fresh:
            if cfg.train.resume == "always" and latest_checkpoint(path) is None:
                raise ConfigError(f"train.resume is always (--resume) but {path}/checkpoints holds no usable "
                                  "checkpoint: drop --resume to start the run")
            check_resumable(cfg, path)
        folder = cls(path, fresh=fresh, claimed=set((manifest or {}).get("wrote", [])))
        folder.new = {name for name in outputs(cfg) if not (path / name).exists()}
        folder._create()
        return folder

    def _create(self) -> None:
        """mkdir the folder (and missing parents, remembering the topmost) and write the manifest."""
        top = self.path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        self.created = None if self.path.is_dir() else top
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_manifest()
        except OSError as exc:
            self.discard()
            raise ConfigError(f"--train.out_dir {self.path} cannot be written ({exc.strerror or exc}): pass a "
                              "writable folder") from None

    def write_manifest(self) -> None:
        """Record claimed + new outputs as this folder's run entries."""
        data = {"weaver_run": 1, "wrote": sorted(self.claimed | self.new)}
        atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1) + "\n")

    def clear_previous(self) -> None:
        """--fresh: delete what earlier runs recorded (and their leftover temporary `.NAME.*` entries), nothing else."""
        if not self.fresh:
            return
        for name in sorted(self.claimed):
            _remove(self.path / name)
            for tmp in self.path.glob(f".{name}.*"):
                _remove(tmp)
        self.new |= self.claimed & set(OUTPUTS)

    def discard(self) -> None:
        """Remove what this run created (the folders it made, or the outputs that were absent); keep the rest."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            return
        for name in self.new:
            _remove(self.path / name)
            for tmp in self.path.glob(f".{name}.*"):
                _remove(tmp)
        self.new = set()
        if not self.claimed:
            _remove(self.path / MANIFEST)
            return
        try:
            self.write_manifest()  # back to what earlier runs wrote
        except OSError:
            pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
