"""The CPU allocator: `import weaver` puts torch's large tensors on transparent huge pages; train.mmap_threshold_kb
(under glibc) returns a freed block above the threshold to the system at once instead of keeping it on the heap
after glibc has raised its own threshold; both are recorded and can be left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from weaver.config import TrainConfig
from weaver.errors import ConfigError
from weaver.tuning import step

PROBE = """
import sys
from weaver.tuning.step import rss_mb, set_mmap_threshold
print(set_mmap_threshold(int(sys.argv[1]) if sys.argv[1] != "none" else None), file=sys.stderr)
big = bytearray(20 << 20)  # mapped; freeing it makes glibc raise its own threshold to 20 MiB
del big
block = bytearray(8 << 20)  # from the heap under glibc's raised threshold, its own map under a fixed one
guard = bytearray(4000)  # a live allocation above it: the heap's top cannot shrink past it
before = rss_mb()
del block
print(before - rss_mb())
"""


def _freed_mb(setting: str) -> float:
    res = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return float(res.stdout.strip())


@pytest.mark.skipif(not hasattr(step._libc(), "gnu_get_libc_version"), reason="glibc only")
def test_a_fixed_threshold_returns_a_freed_block_that_glibc_keeps_otherwise():
    assert _freed_mb("1024") > 7.0  # unmapped on free
    assert _freed_mb("none") < 1.0  # glibc's own threshold: the 8 MiB stay resident


def test_none_and_the_environment_leave_glibc_alone(monkeypatch):
    assert step.set_mmap_threshold(None).startswith("glibc's own")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "262144")
    assert step.set_mmap_threshold(1024) == "MALLOC_MMAP_THRESHOLD_=262144 from the environment"


def test_the_threshold_is_range_checked():
    for bad in (8, 65536):
        with pytest.raises(ConfigError, match="mmap_threshold_kb"):
            TrainConfig(mmap_threshold_kb=bad)
    TrainConfig(mmap_threshold_kb=None)


THP_PROBE = """
import weaver, torch
t = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
with open("/proc/self/smaps_rollup") as fh:
    print(next(int(line.split()[1]) for line in fh if line.startswith("AnonHugePages:")) / 1024)
"""


def _huge_mb(env: dict) -> float:
    res = subprocess.run([sys.executable, "-c", THP_PROBE], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", **env})
    return float(res.stdout.strip())


@pytest.mark.skipif(step.thp_mode() in (None, "never"), reason="no transparent huge pages on this kernel")
def test_import_weaver_puts_large_torch_tensors_on_huge_pages():
    assert _huge_mb({}) >= 32  # most of the 64 MiB tensor
    if step.thp_mode() == "madvise":  # only advised memory gets huge pages: the switch is what gives them
        assert _huge_mb({"THP_MEM_ALLOC_ENABLE": "0"}) < 8
