"""What the user sees during a run, and the rules that stop it: loggers, early stopping, NaN guard.

`RunLogger` appends one JSON line per event to `metrics.jsonl`, writes TensorBoard event files under
`tb/` (default) and, when asked with `train.logging: [mlflow]` / `[wandb]` (`pip install 'weaver[track]'`),
logs there too: the resolved config as parameters, every event's numbers as metrics at their step, and the
final adapter (or model) folder as an artifact. MLflow follows its own environment (MLFLOW_TRACKING_URI,
default `sqlite:///mlflow.db` in the working directory; MLFLOW_EXPERIMENT_NAME); W&B follows WANDB_MODE
(`offline` writes the run under `wandb/` of WANDB_DIR, default the run directory, for a later `wandb sync`),
WANDB_PROJECT (default weaver) and WANDB_ENTITY. Only the main process logs.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from weaver.errors import ConfigError, WeaverError

HIGHER_IS_BETTER = {"dev_loss": False, "rougeL": True, "reward_accuracy": True, "reward_margin": True}
TRACKERS = ("tensorboard", "mlflow", "wandb", "none")


class TrainingDiverged(WeaverError):
    """The loss became NaN or infinite."""


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists and None stay values (trackers print them)."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class RunLogger:
    """metrics.jsonl + TensorBoard (+ MLflow / W&B on request) for the main process.

    Args:
        run_dir: the run directory (metrics.jsonl, tb/ and, for W&B, wandb/ are written there).
        backends: train.logging (tensorboard, mlflow, wandb, none).
        enabled: False on the non-main processes: nothing is written.
        run_name: the run's name in MLflow / W&B.
        params: the resolved config (nested dict), logged as the run's parameters.
    Raises:
        ConfigError: an unknown logger, a tracker that is not installed, or one that cannot start a run.
    """

    def __init__(self, run_dir: Path, backends: list[str], enabled: bool = True, run_name: str = "weaver",
                 params: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.run_name = enabled, run_name
        self.tb = self.mlflow = self.wandb = None
        unknown = set(backends) - set(TRACKERS)
        if unknown:
            raise ConfigError(f"train.logging has unknown logger(s) {sorted(unknown)}: use tensorboard, mlflow, wandb")
        if not enabled:
            return
        params = params or {}
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        if "mlflow" in backends:
            self.mlflow = _start_mlflow(run_name, params)
        if "wandb" in backends:
            self.wandb = _start_wandb(Path(run_dir), run_name, params)

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

    def log_artifact(self, folder: Path) -> None:
        """Upload the final weights folder (adapter/ or model/) to MLflow / W&B under the folder's name."""
        if not self.enabled:
            return
        folder = Path(folder)
        if self.mlflow is not None:
            self.mlflow.log_artifacts(str(folder), artifact_path=folder.name)
        if self.wandb is not None:
            import wandb

            safe = re.sub(r"[^\w.-]+", "-", f"{self.run_name}-{folder.name}")
            artifact = wandb.Artifact(safe, type="model")
            artifact.add_dir(str(folder))
            self.wandb.log_artifact(artifact)

    def close(self, failed: bool = False) -> None:
        """Flush and finish every sink; a failed run is marked FAILED in MLflow and exit code 1 in W&B."""
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run(status="FAILED" if failed else "FINISHED")
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)
        self.tb = self.mlflow = self.wandb = None


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"train.logging asks for {name} but it is not installed: `pip install 'weaver[track]'` or remove "
            f"{name} from train.logging"
        ) from None


def _start_mlflow(run_name: str, params: dict):
    """The mlflow module with an active run named run_name whose parameters are the flattened config."""
    mlflow = _require("mlflow")
    from mlflow.exceptions import MlflowException

    try:
        mlflow.start_run(run_name=run_name)
        # MLflow params are strings of at most 6000 characters, sent 100 at a time.
        flat = [(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            mlflow.log_params(dict(flat[i:i + 100]))
    except MlflowException as exc:
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"MLflow could not start a run at {mlflow.get_tracking_uri()} ({first}); set "
                          "MLFLOW_TRACKING_URI or remove mlflow from train.logging") from None
    return mlflow


def _start_wandb(run_dir: Path, run_name: str, params: dict):
    """A wandb Run writing under $WANDB_DIR (default run_dir)/wandb, with the config (nested) as its parameters."""
    wandb = _require("wandb")
    try:
        return wandb.init(project=os.environ.get("WANDB_PROJECT", "weaver"), name=run_name,
                          dir=os.environ.get("WANDB_DIR") or str(run_dir), config=params, reinit="finish_previous")
    except (wandb.errors.Error, OSError) as exc:
        raise ConfigError(f"W&B could not start a run ({exc}); run `wandb login`, set WANDB_MODE=offline, or "
                          "remove wandb from train.logging") from None


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
