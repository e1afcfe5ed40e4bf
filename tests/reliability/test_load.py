"""Load: 64 concurrent clients on 127.0.0.1 against `weaver serve` (tiny model), bounded and self-stopping.

    .venv/bin/pytest -q tests/reliability/test_load.py            # 12 s below capacity + 6 s above
    .venv/bin/pytest -q tests/reliability/test_load.py --long     # 60 s + 20 s

Below capacity (max_queue 64 >= clients) every request must succeed; the server's resident memory is
sampled from /proc and must not keep growing (the last third of the run may not exceed the first by
more than a small margin). Above capacity (max_queue 4) the surplus gets 429 in OpenAI's envelope,
nothing else fails, and /health keeps answering quickly throughout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 64
BODY = {"prompt": "Write one line about the sea.", "max_tokens": 8, "temperature": 0}
RSS_MARGIN_MB = 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _drive(url: str, seconds: float, on_tick=None) -> dict:
    """CLIENTS clients send requests back to back until the deadline; a health prober runs alongside."""
    status: Counter = Counter()
    failures: list[str] = []
    health: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)

    async def worker(client: httpx.AsyncClient):
        while time.monotonic() < deadline:
            try:
                resp = await client.post("/v1/completions", json=BODY)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc!r} at {seconds - deadline + time.monotonic():.2f} s")
                continue
            status[resp.status_code] += 1
            if resp.status_code == 429:
                assert resp.json()["error"]["code"] == "queue_full" and resp.headers["retry-after"] == "1"
                await asyncio.sleep(0.05)
            elif resp.status_code != 200:
                failures.append(f"{resp.status_code}: {resp.text[:200]}")

    # The health prober is a separate monitor: its own thread and connection, as a load balancer's would be,
    # so what it measures is the server's answer time, not this client's event loop under 64 workers.
    def prober():
        with httpx.Client(base_url=url, timeout=10) as mon:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    resp = mon.get("/health")
                except httpx.HTTPError as exc:
                    failures.append(f"/health {type(exc).__name__}: {exc!r}")
                    continue
                health.append(time.monotonic() - t0)
                if resp.status_code != 200:
                    failures.append(f"/health {resp.status_code}: {resp.text[:200]}")
                if on_tick:
                    on_tick()
                time.sleep(0.5)

    probe = threading.Thread(target=prober, daemon=True)
    probe.start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(CLIENTS)))
    finally:
        probe.join(timeout=15)
    return {"status": status, "failures": failures, "health_s": health}


def _start_server(model_dir: Path, port: int, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "weaver.cli", "serve", "--model", str(model_dir), "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("weaver serve did not become ready within 180 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def test_64_clients_below_capacity_all_succeed_and_memory_stays_flat(tiny_model_dir, long_mode, figures):
    port = _free_port()
    proc = _start_server(tiny_model_dir, port, "--max-queue", "64", "--max-batch", "8")
    seconds = 60.0 if long_mode else 12.0
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    try:
        result = asyncio.run(_drive(f"http://127.0.0.1:{port}", seconds,
                                    on_tick=lambda: samples.append((time.monotonic() - t0, _rss_mb(proc.pid)))))
        stats = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["batching"]
    finally:
        _stop(proc)
    assert result["failures"] == [], result["failures"][:5]
    served = result["status"][200]
    assert served > 0 and set(result["status"]) == {200}
    rss = [m for _, m in samples]
    third = max(1, len(rss) // 3)
    first, last = max(rss[:third]), max(rss[-third:])
    figures["load_below_capacity"] = {
        "clients": CLIENTS, "seconds": seconds, "requests_served": served, "failed": 0,
        "requests_per_s": round(served / seconds, 1), "max_batch_rows_seen": stats["max_batch_rows"],
        "rss_mb_first_third_max": round(first, 1), "rss_mb_last_third_max": round(last, 1),
        "rss_samples": len(rss), "health_max_s": round(max(result["health_s"]), 3),
    }
    assert last - first < RSS_MARGIN_MB, figures["load_below_capacity"]
    assert stats["max_batch_rows"] > 1  # the clients really ran concurrently (batched together)


def test_64_clients_above_capacity_get_429_and_health_keeps_answering(tiny_model_dir, long_mode, figures):
    seconds = 20.0 if long_mode else 6.0
    port = _free_port()
    proc = _start_server(tiny_model_dir, port, "--max-queue", "4", "--max-batch", "4")
    url = f"http://127.0.0.1:{port}"
    try:
        result = asyncio.run(_drive(url, seconds))
        assert httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        _stop(proc)
    status = result["status"]
    assert result["failures"] == [], result["failures"][:5]
    assert status[429] > 0 and status[200] > 0 and set(status) == {200, 429}, status
    assert max(result["health_s"]) < 5.0, max(result["health_s"])
    figures["load_above_capacity"] = {
        "clients": CLIENTS, "seconds": seconds, "max_queue": 4, "requests_served": status[200],
        "rejected_429": status[429], "other_errors": 0, "health_checks": len(result["health_s"]),
        "health_max_s": round(max(result["health_s"]), 3),
    }


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
