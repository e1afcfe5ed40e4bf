"""A two-node launch, as two `torchrun --nnodes 2` groups (one process each) rendezvousing on 127.0.0.1: the
commands docs/TUNING.md gives for two machines, here on one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_overrides

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_one_run(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    port = str(_free_port())
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
