"""What the user sees during a run, and the rules that stop it: loggers, early stopping, NaN guard.

`RunLogger` appends one JSON line per event to `metrics.jsonl`, writes TensorBoard event files under
`tb/` (default) and, when asked with `train.logging: [mlflow]` / `[wandb]`, logs there too.
Only the main process logs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from weaver.errors import ConfigError, WeaverError

HIGHER_IS_BETTER = {"dev_loss": False, "rougeL": True}


class TrainingDiverged(WeaverError):
    """The loss became NaN or infinite."""


class RunLogger:
    """metrics.jsonl + TensorBoard (+ MLflow / W&B on request) for the main process."""

    def __init__(self, run_dir: Path, backends: list[str], enabled: bool = True, run_name: str = "weaver"):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = self.mlflow = self.wandb = None
        unknown = set(backends) - {"tensorboard", "mlflow", "wandb", "none"}
        if unknown:
            raise ConfigError(f"train.logging has unknown logger(s) {sorted(unknown)}: use tensorboard, mlflow, wandb")
        if not enabled:
            return
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        if "mlflow" in backends:
            self.mlflow = _require("mlflow")
            self.mlflow.start_run(run_name=run_name)
        if "wandb" in backends:
            self.wandb = _require("wandb")
            self.wandb.init(project=os.environ.get("WANDB_PROJECT", "weaver"), name=run_name, dir=str(run_dir))

    def log(self, record: dict) -> None:
        """Append one event ({"step", ...}) to every enabled sink."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        step = int(record.get("step", 0))
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if self.wandb is not None:
            self.wandb.finish()


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"train.logging asks for {name} but it is not installed: `pip install {name}` or remove it from "
            "train.logging"
        ) from None


class EarlyStopping:
    """Tracks the best value of the validation metric and counts validations without improvement."""

    def __init__(self, metric: str, patience: int | None, best: float | None = None, bad: int = 0):
        self.metric = metric
        self.patience = patience
        self.best = best
        self.bad = bad

    def update(self, value: float) -> bool:
        """Record a validation result; True when it is a new best."""
        better = self.best is None or (value > self.best if HIGHER_IS_BETTER[self.metric] else value < self.best)
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


def check_finite(loss: float, step: int, last_good: str | None) -> None:
    """Raise TrainingDiverged with advice when the loss is NaN/inf."""
    if not math.isfinite(loss):
        kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"training loss became {loss} at step {step}; stopped ({kept}); lower --train.lr, set "
            "--train.max_grad_norm 1.0, or try --train.precision fp32"
        )
