"""Fixtures of the reliability suite: CI or long mode, and the figures each test measured.

    .venv/bin/pytest -q tests/reliability                                   # CI mode (a few minutes)
    .venv/bin/pytest -q tests/reliability --long --reliability-summary docs/reliability-summary.json
                                                                            # long mode (`make reliability-long`)

Each test adds what it measured (trials survived, inputs tried, requests served, errors) to the
session's `figures`; with --reliability-summary the figures are written as JSON at the end, and
docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pytest


def pytest_configure(config):
    """Bound the API fuzzer: examples per operation in CI and in the long mode."""
    from hypothesis import settings

    settings.register_profile("reliability", max_examples=100 if config.getoption("--long") else 12)
    settings.load_profile("reliability")


@pytest.fixture(scope="session")
def long_mode(request) -> bool:
    """True under --long: more trials, longer load, more fuzzed inputs."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def figures(request, long_mode):
    """A dict each test fills with its measured figures; written to --reliability-summary PATH after each test
    that uses it (so an interrupted long run keeps what it measured) and at the end."""
    out: dict = {}
    out_path = request.config.getoption("--reliability-summary")

    def write() -> None:
        if out_path:
            summary = {"mode": "long" if long_mode else "ci", "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "machine": f"{platform.machine()} {platform.system()}, {_cpus()} CPUs (shared, busy)",
                       "figures": {k: v for k, v in out.items() if not k.startswith("_")}}
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            Path(out_path).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    out["_write"] = write
    yield out
    write()


@pytest.fixture(autouse=True)
def _save_figures(request):
    """After each test that recorded figures, write the summary so far."""
    yield
    if "figures" in request.fixturenames:
        request.getfixturevalue("figures")["_write"]()


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
