"""A two-node launch, as two `torchrun --nnodes 2` groups (one process each) rendezvousing on 127.0.0.1: the
commands docs/TUNING.md gives for two machines, here on one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port, tiny_overrides

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_two_nodes_train_one_run(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    config = tmp_path / "c.yaml"
    config.write_text("# weaver tune c.yaml\ndata:\n  task: summarize\n")
    overrides = tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=3, eval_every=3, save_every=3, batch_size=2)
    tune = ["-m", "weaver.cli", "tune", str(config), *overrides]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port, *tune],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for rank in (0, 1)]
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=300)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-2000:] for e in errs)
    facts = json.loads((out / "run.json").read_text())
    assert facts["processes"] == 2 and facts["steps"] == 3
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_fsdp_on_a_cpu_only_machine_is_refused_with_the_alternative(tiny_model_dir, tiny_data, tmp_path):
    """accelerate 1.15's FSDP plugin requires an accelerator device; `weaver tune` says so and names its own FSDP."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP can run")
    acc = tmp_path / "fsdp-cpu.yaml"
    acc.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n"
                   "  fsdp_sharding_strategy: FULL_SHARD\nmixed_precision: 'no'\nnum_machines: 1\n"
                   "num_processes: 2\nmachine_rank: 0\nuse_cpu: true\n")
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc),
                          "--main_process_port", str(free_port()), "-m", "weaver.cli", "tune", str(config),
                          *tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "FSDP needs a GPU" in res.stderr and "--train.distributed fsdp" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "run").exists()
