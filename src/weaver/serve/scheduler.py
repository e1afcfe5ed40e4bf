"""Dynamic batching: a bounded queue of requests and one thread that runs them in shared forward passes.

    scheduler = Scheduler(backend, max_batch=8, max_queue=64, wait_s=0.01)
    scheduler.start()
    scheduler.submit(job)        # raises QueueFull when max_queue requests are already waiting
    ...
    scheduler.stop()

The scheduler thread takes the oldest waiting job, waits up to `wait_s` for more to arrive, then runs
every waiting job with the same adapter and decoding settings (`Job.key`) together, up to `max_batch`
rows (a job with n candidates is n rows), as one `backend.generate` call. Jobs of other adapters or
settings wait for the next round, oldest first. Generation never runs on the server's event loop.
`stats` counts batches and the largest batch seen, so batching is observable (GET /health).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from weaver.serve.backend import Backend, BatchParams, Row

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """max_queue requests are already waiting."""


@dataclass
class Job:
    """One request: its rows (prompts x n), the adapter and decoding settings they share."""

    rows: list[Row]
    adapter: str | None
    params: BatchParams
    on_done: Callable[[Job], None] = lambda job: None
    """Called from the scheduler thread once every row is finished (or the batch failed)."""
    error: str | None = None
    """Set when the backend failed on this job's batch (a server fault, reported as 500)."""
    submitted: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        # Seeded sampling only shares a batch with the same seed; greedy ignores the seed.
        seed = self.params.seed if self.params.temperature > 0 else None
        return (self.adapter, self.params.temperature, self.params.top_p, self.params.repetition_penalty, seed)


class Scheduler:
    """Groups queued jobs into batches and runs them on a backend in one background thread."""

    def __init__(self, backend: Backend, max_batch: int = 8, max_queue: int = 64, wait_s: float = 0.01):
        self.backend = backend
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.wait_s = wait_s
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.stats = {"requests": 0, "rejected": 0, "batches": 0, "rows": 0, "max_batch_rows": 0, "busy_s": 0.0,
                      "tokens": 0, "cancelled_rows": 0, "timed_out_rows": 0}

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="weaver-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after the running batch; waiting jobs are cancelled."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        while self._waiting:
            self._finish([self._waiting.popleft()], "cancelled")

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            QueueFull: max_queue jobs are already waiting (the client should retry later: 429).
        """
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"{self.max_queue} requests are already waiting")
            self._waiting.append(job)
            self.stats["requests"] += 1
            self._cond.notify_all()

    def _waiting_rows(self) -> int:
        return sum(len(j.rows) for j in self._waiting)

    def _next_batch(self) -> list[Job]:
        with self._cond:
            while not self._waiting and not self._stopped:
                self._cond.wait()
            deadline = time.monotonic() + self.wait_s
            while not self._stopped and self._waiting_rows() < self.max_batch and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._stopped:
                return []
            key = self._waiting[0].key
            batch, rows, rest = [], 0, deque()
            while self._waiting:
                job = self._waiting.popleft()
                fits = not batch or rows + len(job.rows) <= self.max_batch
                if job.key == key and fits:
                    batch.append(job)
                    rows += len(job.rows)
                else:
                    rest.append(job)
            self._waiting = rest
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            now = time.monotonic()
            live = []
            for job in batch:
                if all(r.cancel.is_set() for r in job.rows):
                    self._finish([job], "cancelled")
                elif all(now > r.deadline for r in job.rows):
                    self._finish([job], "timeout")
                else:
                    live.append(job)
            if live:
                self._run(live)

    def _run(self, jobs: list[Job]) -> None:
        rows = [r for j in jobs for r in j.rows]
        t0 = time.perf_counter()
        try:
            self.backend.generate(rows, jobs[0].params, jobs[0].adapter)
        except Exception as exc:  # noqa: BLE001 - a backend fault fails this batch's requests, not the server
            log.exception("generation failed for a batch of %d rows", len(rows))
            for job in jobs:
                job.error = f"generation failed: {type(exc).__name__}: {exc}"
            self._finish(jobs, "error")
            return
        finally:
            self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(rows))
        self.stats["tokens"] += sum(r.completion_tokens for r in rows)
        self.stats["cancelled_rows"] += sum(r.finish_reason == "cancelled" for r in rows)
        self.stats["timed_out_rows"] += sum(r.finish_reason == "timeout" for r in rows)
        self._finish(jobs, None)

    @staticmethod
    def _finish(jobs: list[Job], reason: str | None) -> None:
        for job in jobs:
            for row in job.rows:
                if row.finish_reason is None:
                    row.finish_reason = reason or "length"
            try:
                job.on_done(job)
            except Exception:  # noqa: BLE001 - a client-side callback must not kill the scheduler
                log.exception("on_done callback failed")
