"""DeepSpeed (the `deepspeed` extra): the shipped accelerate config is one DeepSpeed's own parser accepts, and on a
machine without a GPU `weaver tune` refuses accelerate's DeepSpeed instead of silently training data-parallel.

What ran and what did not is in docs/TUNING.md ("More than one process"): DeepSpeed 0.19.8 ZeRO-2/3 train on 2
CPU processes (gloo) when called directly, but accelerate 1.15 either sets a DeepSpeed config aside on a CPU-only
machine (use_cpu) or counts each process as process 0 of 1, so Weaver's loop is not run under it here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import free_port, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
ZERO2 = ROOT / "configs" / "accelerate" / "deepspeed-zero2.yaml"


def _deepspeed_config(accelerate_yaml: dict, batch_size: int = 8, max_grad_norm: float = 1.0):
    """The DeepSpeed config accelerate builds from an accelerate config file for Weaver's batch, parsed by
    DeepSpeed's own DeepSpeedConfig (one process)."""
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig

    plugin = DeepSpeedPlugin(**accelerate_yaml["deepspeed_config"])
    plugin.set_mixed_precision(accelerate_yaml["mixed_precision"])
    accum = plugin.deepspeed_config["gradient_accumulation_steps"]
    # the "auto" values accelerate.prepare fills in from the training setup
    plugin.deepspeed_config_process(must_match=False, train_micro_batch_size_per_gpu=batch_size,
                                    train_batch_size=batch_size * accum, gradient_clipping=max_grad_norm)
    return DeepSpeedConfig(plugin.deepspeed_config)


def test_the_zero2_config_is_valid_for_deepspeed():
    shipped = yaml.safe_load(ZERO2.read_text())
    parsed = _deepspeed_config(shipped)
    assert parsed.zero_optimization_stage == 2
    assert parsed.bfloat16_config.enabled
    assert parsed.gradient_accumulation_steps == 1 and parsed.gradient_clipping == 1.0
    broken = {**shipped, "deepspeed_config": {**shipped["deepspeed_config"], "zero_stage": 7}}
    with pytest.raises(Exception, match="stage"):  # pydantic's ValidationError names the field
        _deepspeed_config(broken)


@pytest.mark.slow
def test_accelerate_deepspeed_without_a_gpu_is_refused_with_the_alternative(tiny_model_dir, tiny_data, tmp_path):
    import torch

    pytest.importorskip("deepspeed")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: accelerate runs DeepSpeed")
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO2),
                          "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "weaver.cli", "tune",
                          str(config), *tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "DeepSpeed needs a GPU" in res.stderr and "--train.distributed fsdp" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "run").exists()
