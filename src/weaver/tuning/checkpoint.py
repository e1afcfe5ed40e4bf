"""Crash-safe checkpoints: write to a temporary folder, hash every file into a manifest, then rename.

    save_checkpoint(run_dir, step, model, optimizer, scheduler, state, keep=2)
    ckpt = latest_checkpoint(run_dir)          # newest checkpoint whose manifest verifies, or None
    state = load_checkpoint(ckpt, model, optimizer, scheduler)

A checkpoint holds the trainable weights, the optimizer and scheduler states, the torch/numpy/python
RNG states and the data position (epoch and batch index within the epoch's deterministic order), so a
resumed run continues exactly where the killed one stopped. A folder whose manifest is missing or
whose files do not match their recorded size and SHA-256 (a crash mid-write, a truncated copy) is
skipped with a warning and the previous good checkpoint is used. A sharded run (`train.distributed fsdp`)
writes the same kind of folder through weaver.tuning.sharded: every process writes its shards into the
temporary folder, then the main process writes the manifest and renames it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from weaver.errors import DiskFullError, WeaverError
from weaver.files import sha256_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
WEIGHTS = "trainable.safetensors"



class CheckpointError(WeaverError):
    """A checkpoint that does not fit the run, or that would need unpickling to load."""

def rng_state() -> dict:
    # Tensors and plain lists only, so the checkpoint loads with torch.load(weights_only=True): no pickle.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(folder.iterdir())}
    with open(folder / MANIFEST, "w", encoding="utf-8") as fh:
        json.dump({"files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def verify(folder: Path) -> bool:
    """True when every file listed in folder's manifest exists with its recorded size and SHA-256."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        return bool(files) and all(
            (folder / n).stat().st_size == m["size"] and sha256_file(folder / n) == m["sha256"]
            for n, m in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _steps(run_dir: Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    out = []
    for p in root.glob("step-*") if root.is_dir() else []:
        try:
            out.append((int(p.name.split("-", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out, reverse=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run whose manifest verifies (damaged ones are skipped with a warning)."""
    for _, path in _steps(Path(run_dir)):
        if verify(path):
            return path
        log.warning("checkpoint %s is incomplete or corrupted (manifest check failed); using an older one", path)
    return None


def trainable_tensors(model) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, as contiguous CPU tensors."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir, step: int, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Write checkpoints/step-NNNNNN atomically and prune all but the newest `keep` good ones.

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        model: the unwrapped model being trained.
        optimizer, scheduler: their states are saved.
        state: JSON-serialisable loop state (epoch, batch position, best metric, ...).
        keep: how many checkpoints to keep.
    Returns:
        The checkpoint folder.
    Raises:
        DiskFullError: the disk filled up while writing (the previous checkpoint is kept).
    """
    root, final = begin_checkpoint(run_dir, step)
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    tmp.mkdir()
    with disk_full_guard(tmp, step):
        _write_checkpoint_files(tmp, step, model, optimizer, scheduler, state)
    return commit_checkpoint(run_dir, tmp, final, keep)


def begin_checkpoint(run_dir, step: int) -> tuple[Path, Path]:
    """(checkpoints/, checkpoints/step-NNNNNN) with the temporary folders of killed or failed saves removed."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*.tmp*"):  # left by a killed or failed save (any process)
        shutil.rmtree(stale, ignore_errors=True)
    return root, root / f"step-{step:06d}"


@contextlib.contextmanager
def disk_full_guard(tmp: Path, step: int):
    """Remove the temporary folder tmp when writing into it fails; a full disk becomes a DiskFullError."""
    try:
        yield
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC,
                f"No space left on device while saving checkpoint step {step} in {tmp.parent}; the previous "
                "checkpoint is kept: free some space and rerun the same command with --resume to continue"
            ) from None
        raise


def commit_checkpoint(run_dir, tmp: Path, final: Path, keep: int) -> Path:
    """Rename the finished temporary folder tmp (its manifest written) to final; prune all but `keep` checkpoints."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for _, old in _steps(Path(run_dir))[max(keep, 1):]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def fsync_files(folder: Path) -> None:
    """fsync every file directly inside folder (its contents reach the disk before the manifest names them)."""
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())


def _write_checkpoint_files(tmp: Path, step: int, model, optimizer, scheduler, state: dict) -> None:
    save_file(trainable_tensors(model), str(tmp / WEIGHTS))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
    fsync_files(tmp)
    write_manifest(tmp)


def load_checkpoint(folder: Path, model, optimizer=None, scheduler=None) -> dict:
    """Restore weights, optimizer, scheduler and RNG states from a checkpoint; return its loop state.

    Raises:
        CheckpointError: the checkpoint does not match the model's trainable parameters, or its optimizer
            state holds objects other than tensors and plain values (it is never unpickled).
    """
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"checkpoint {folder} holds sharded weights (written with train.distributed fsdp): "
                              "resume with --train.distributed fsdp, or start over with --fresh")
    tensors = load_file(str(folder / WEIGHTS))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing:
        raise CheckpointError(f"checkpoint {folder} lacks {len(missing)} trainable tensors, e.g. {missing[0]}: it "
                              "was written by another method or model; start over with --fresh")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    try:
        blob = torch.load(folder / "optimizer.pt", weights_only=True)  # never unpickle code from a run folder
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {folder} holds objects other than tensors and plain values in "
                              "optimizer.pt, so Weaver does not load it (unpickling can run code); start over with "
                              "--fresh or remove that checkpoint") from None
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((folder / "state.json").read_text())


def save_model_dir(model, dest: Path, tokenizer=None, state_dict: dict | None = None) -> None:
    """Save the adapter (peft) or the whole model (freeze/full) to dest, atomically replacing it.

    Args:
        state_dict: the tensors to write instead of the model's own (a sharded model's, gathered:
            weaver.tuning.sharded.full_state).
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, **({} if state_dict is None else {"state_dict": state_dict}))
    if tokenizer is not None and not hasattr(model, "peft_config"):
        tokenizer.save_pretrained(tmp)
    write_manifest(tmp)
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
