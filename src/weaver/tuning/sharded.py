"""`train.distributed fsdp`: parameters, gradients and optimizer state sharded across processes (torch FSDP2).

    wrapped = shard(loss_module, model, device)      # each block one FSDP unit, the loss module the root
    with no_sync(wrapped): ...backward...           # gradient accumulation without a reduce-scatter
    save_sharded_checkpoint(run_dir, step, model, optimizer, scheduler, state, keep)   # every process
    state = load_sharded_checkpoint(folder, model, optimizer, scheduler)               # every process
    tensors = full_state(model, names)              # the main process gets whole CPU tensors, others None

Why not accelerate's FSDP: accelerate 1.15's FSDP plugin refuses a machine without an accelerator ("no
available devices"), while torch's own `fully_shard` runs over gloo on CPUs as well as NCCL on GPUs, so Weaver
calls it directly (launched by torchrun; the Accelerator still owns the process group and the device).
Every process keeps 1/N of each block's weights (and of the root's: embeddings, final norm, LM head) and of
the optimizer state; a block's weights are gathered for its forward and backward and freed after.

Checkpoints go through torch.distributed.checkpoint, which writes each process's shards of the trainable
weights and of the optimizer state (a resumed run is tested with the same number of processes); the crash-safety
rules of weaver.tuning.checkpoint are kept: everything is written into a temporary folder, the main process
hashes it into a manifest and renames it, and a folder whose manifest does not verify is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import json
import os
import pickle
from pathlib import Path

import torch
import torch.distributed as dist

from weaver.errors import ConfigError
from weaver.tuning import checkpoint as ckpt

TMP_SUFFIX = ".tmp-sharded"
"""The temporary folder's suffix: one name that every process agrees on (begin_checkpoint removes stale ones)."""


def check_launch(accelerator, world: int) -> None:
    """Refuse a launch that `train.distributed fsdp` cannot shard over.

    Raises:
        ConfigError: one process, or an accelerate FSDP/DeepSpeed config that would shard the model a second time.
    """
    from accelerate.utils import DistributedType

    if world < 2:
        raise ConfigError("train.distributed fsdp shards the model across processes and this run has one: launch it "
                          "with torchrun --nproc_per_node 2 (or more) -m weaver.cli tune ..., or drop the setting")
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError("train.distributed fsdp shards the model itself, and this launch asks accelerate to shard "
                          "it too: launch with torchrun (or an accelerate multi-cpu/multi-gpu config), or drop "
                          "--train.distributed fsdp to use accelerate's own FSDP/DeepSpeed")


def blocks(model) -> list[torch.nn.Module]:
    """The model's repeated blocks (transformers' `_no_split_modules` classes, e.g. LlamaDecoderLayer): each one
    FSDP unit, so that only one block's weights are whole at a time."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    found = [m for m in base.modules() if type(m).__name__ in names]
    if not found and hasattr(base, "get_decoder"):
        found = list(getattr(base.get_decoder(), "layers", []))
    return found


def shard(loss_module: torch.nn.Module, model, device: torch.device) -> torch.nn.Module:
    """Shard every block of model, then the rest of loss_module (the FSDP root), across the default process group.

    The optimizer must be built after this call: the parameters are replaced by sharded DTensors.
    Returns:
        loss_module, now an FSDP module.
    """
    from torch.distributed.fsdp import fully_shard

    loss_module.to(device)
    for block in blocks(model):
        fully_shard(block)
    fully_shard(loss_module)
    return loss_module


@contextlib.contextmanager
def no_sync(module):
    """Accumulate this backward's gradients locally (no reduce-scatter); the next synced backward reduces them all."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def trainable_names(model) -> set[str]:
    """The state-dict names of the trainable parameters (those a checkpoint holds)."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _states(model, optimizer) -> dict:
    """{"model": the trainable weights, "optimizer": its state}, both keyed by parameter name, as local shards."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    names = trainable_names(model)
    return {"model": {k: v for k, v in weights.items() if k in names}, "optimizer": optim}


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_sharded_checkpoint(run_dir, step: int, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Write checkpoints/step-NNNNNN with every process's shards; called by every process.

    The folder holds torch.distributed.checkpoint's files (.metadata, one __RANK_0.distcp per process: trainable
    weights and optimizer state), rank-R.pt per process (scheduler and RNG states), state.json and the manifest.
    Returns:
        The checkpoint folder.
    Raises:
        DiskFullError: the disk filled up while writing (the previous checkpoint is kept).
    """
    import torch.distributed.checkpoint as dcp

    rank = _rank()
    root, final = Path(run_dir) / "checkpoints", Path(run_dir) / "checkpoints" / f"step-{step:06d}"
    tmp = root / f".{final.name}{TMP_SUFFIX}"
    if rank == 0:
        ckpt.begin_checkpoint(run_dir, step)
        tmp.mkdir()
    _barrier()
    with ckpt.disk_full_guard(tmp, step):
        dcp.save(_states(model, optimizer), checkpoint_id=tmp)  # collective; fsyncs its files
        rank_file = tmp / f"rank-{rank}.pt"
        torch.save({"scheduler": scheduler.state_dict(), "rng": ckpt.rng_state()}, rank_file)
        with open(rank_file, "rb+") as fh:
            os.fsync(fh.fileno())
    _barrier()
    if rank == 0:
        with ckpt.disk_full_guard(tmp, step):
            (tmp / "state.json").write_text(json.dumps({**state, "step": step, "sharded": True}, indent=1))
            ckpt.fsync_files(tmp)
            ckpt.write_manifest(tmp)
        ckpt.commit_checkpoint(run_dir, tmp, final, keep)
    _barrier()
    return final


def load_sharded_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore this process's shards of the weights and optimizer state, the scheduler and its RNG states.

    Returns:
        The loop state of state.json.
    Raises:
        CheckpointError: the folder was not written by a sharded run, or lacks some trainable weights.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    folder = Path(folder)
    if not (folder / ".metadata").is_file():
        raise ckpt.CheckpointError(f"checkpoint {folder} was written without train.distributed fsdp: resume it "
                                   "without that setting, or start over with --fresh")
    states = _states(model, optimizer)
    import torch.distributed.checkpoint as dcp

    try:
        safe_load(states, folder)
    except (dcp.CheckpointException, RuntimeError, KeyError, ValueError) as exc:  # DCP: a BaseException per rank
        raise ckpt.CheckpointError(f"checkpoint {folder} does not fit this run's trainable weights ({_reason(exc)}"
                                   "): it was written by another method or model; start over with --fresh") from None
    set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
                   options=StateDictOptions(strict=False))
    own = folder / f"rank-{_rank()}.pt"
    blob = torch.load(own if own.is_file() else folder / "rank-0.pt", weights_only=True)
    scheduler.load_state_dict(blob["scheduler"])
    ckpt.set_rng_state(blob["rng"])
    state = json.loads((folder / "state.json").read_text())
    state.pop("sharded", None)
    return state


def _reason(exc: BaseException) -> str:
    """The telling line of an error (DCP's CheckpointException holds each rank's traceback: its last "...Error: ")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error: " in line]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:200]


def full_state(model, names: set[str] | None = None) -> dict[str, torch.Tensor] | None:
    """The model's state dict with every sharded tensor gathered whole, on CPU, on the main process (None on the
    others). Collective: every process calls it, and each tensor is gathered in turn, so only one is whole at a
    time on the other processes.

    Args:
        names: only these entries (the adapter's trainable weights); None = all (a whole model's save).
    """
    from torch.distributed.tensor import DTensor

    main = _rank() == 0
    out, seen = {}, set()
    for name, value in model.state_dict(keep_vars=True).items():  # the parameters themselves: ties show
        if (names is not None and name not in names) or id(value) in seen:  # a tied weight is saved once
            continue
        seen.add(id(value))
        whole = value.full_tensor() if isinstance(value, DTensor) else value
        if main:
            out[name] = whole.detach().to("cpu").clone()
    return out if main else None


# ---- loading without running code from the run folder --------------------------------------------------------------
# torch.distributed.checkpoint's own reader unpickles .metadata and its planner torch.loads non-tensor values with
# weights_only=False: a checkpoint planted in a run folder (whoever can write it can rewrite its manifest too) would
# run code on --resume. These two read the same files with only data types allowed.
_SAFE_GLOBALS = {("torch", "Size"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
                 ("collections", "OrderedDict"), ("torch.serialization", "_get_layout")}
NOT_METADATA = "is not checkpoint metadata"
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's .metadata: its own dataclasses and enums, torch's dtypes, sizes and layouts, paths; nothing callable."""

    def find_class(self, module: str, name: str):
        if "." not in name:
            if module in _METADATA_MODULES:
                obj = getattr(importlib.import_module(module), name, None)
                if isinstance(obj, type) and obj.__module__ == module and (
                        dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
                    return obj
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            if (module, name) in _SAFE_GLOBALS:
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} {NOT_METADATA}")


def safe_load(states: dict, folder: Path) -> None:
    """dcp.load(states, folder) with .metadata read by _MetadataUnpickler and every other value by torch.load's
    weights_only unpickler.

    Raises:
        CheckpointError: .metadata (or a value) holds something other than data.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(Path(self.path) / ".metadata", "rb") as fh:
                metadata = _MetadataUnpickler(fh).load()
            metadata.storage_meta = getattr(metadata, "storage_meta", None) or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    try:
        dcp.load(states, storage_reader=Reader(folder), planner=Planner())
    except pickle.UnpicklingError as exc:
        raise _refused(folder, exc) from None
    except dcp.CheckpointException as exc:  # a BaseException wrapping each rank's failure
        if "UnpicklingError" in str(exc) or NOT_METADATA in str(exc):
            raise _refused(folder, exc) from None
        raise


def _refused(folder: Path, exc: BaseException) -> ckpt.CheckpointError:
    return ckpt.CheckpointError(f"checkpoint {folder} holds objects other than tensors and plain values "
                                f"({_reason(exc)}), so Weaver does not load it (unpickling can run code); start "
                                "over with --fresh or remove that checkpoint")
