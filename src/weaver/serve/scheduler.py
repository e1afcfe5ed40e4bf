"""Dynamic batching: a bounded queue of requests and one thread that runs them in shared forward passes.

    scheduler = Scheduler(backend, max_batch=8, max_queue=64, wait_s=0.01)
    scheduler.start()
    scheduler.submit(job)        # raises QueueFull when max_queue requests are already waiting
    ...
    scheduler.stop()

The scheduler thread takes the oldest waiting job, waits up to `wait_s` for more to arrive, then runs
every waiting job with the same adapter and decoding settings (`Job.key`) together, up to `max_batch`
rows (a job with n candidates is n rows), as one `backend.generate` call. Jobs of other adapters or
settings wait for the next round, oldest first. A job with more rows than `max_batch` (64 prompts x n=8)
runs in parts of at most `max_batch` rows (filling what room a batch has): after each part it goes to the
back of the queue, so the rows generated together never exceed `max_batch` and other requests are served
between its parts. Jobs whose rows are all cancelled (their client hung up) leave the queue at the next
round without running. Generation never runs on the server's event loop. `stats` counts batches and the
largest batch seen, so batching is observable (GET /health).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from weaver.generate.rows import Backend, BatchParams, Row

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
    started: int = 0
    """How many of `rows` have been handed to a batch (the scheduler runs a large job in parts)."""

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
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            self._finish_rest(job, "cancelled")

    def check_room(self) -> None:
        """Refuse early, before a request is rendered and tokenized, when the queue is already full.

        A flood above capacity is then answered from the event loop without a worker thread per request,
        which keeps /health and the requests already admitted responsive. submit() checks again.

        Raises:
            QueueFull: max_queue jobs are already waiting.
        """
        with self._cond:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        """Raise QueueFull (counted as rejected) when max_queue jobs wait; the caller holds self._cond."""
        if len(self._waiting) >= self.max_queue:
            self.stats["rejected"] += 1
            raise QueueFull(f"{self.max_queue} requests are already waiting")

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            QueueFull: max_queue jobs are already waiting (the client should retry later: 429).
        """
        with self._cond:
            self._refuse_if_full()
            self._waiting.append(job)
            self.stats["requests"] += 1
            self._cond.notify_all()

    def _waiting_rows(self) -> int:
        return sum(len(j.rows) - j.started for j in self._waiting)

    def _next_batch(self) -> list[tuple[Job, list[Row]]]:
        """The next batch as (job, rows) parts: the oldest job's key, at most max_batch rows in all."""
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                deadline = time.monotonic() + self.wait_s
                while not self._stopped and self._waiting_rows() < self.max_batch and time.monotonic() < deadline:
                    self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
                if self._stopped:
                    return []
                gone = [j for j in self._waiting if all(r.cancel.is_set() for r in j.rows[j.started :])]
                for job in gone:
                    self._waiting.remove(job)
                batch, room, rest, again = [], self.max_batch, deque(), []
                key = self._waiting[0].key if self._waiting else None
                for job in self._waiting:
                    left = len(job.rows) - job.started
                    # A job joins when it fits whole, or is the first, or could never fit whole anyway (more rows
                    # than max_batch): those run in parts. Others wait for a batch they fit, so they run in one.
                    if job.key == key and room and (not batch or left <= room or left > self.max_batch):
                        rows = job.rows[job.started : job.started + room]
                        job.started += len(rows)
                        room -= len(rows)
                        batch.append((job, rows))
                        if job.started < len(job.rows):
                            again.append(job)  # the rest of a large job waits behind everyone else
                    else:
                        rest.append(job)
                rest.extend(again)
                self._waiting = rest
            for job in gone:
                self._finish_rest(job, "cancelled")
            if batch:
                return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            now = time.monotonic()
            live = []
            for job, rows in batch:
                if all(r.cancel.is_set() for r in rows):
                    self._finish(job, rows, "cancelled")
                elif all(now > r.deadline for r in rows):
                    self._finish(job, rows, "timeout")
                else:
                    live.append((job, rows))
            if live:
                self._run(live)

    def _run(self, parts: list[tuple[Job, list[Row]]]) -> None:
        rows = [r for _, part in parts for r in part]
        job = parts[0][0]
        t0 = time.perf_counter()
        try:
            self.backend.generate(rows, job.params, job.adapter)
        except Exception as exc:  # noqa: BLE001 - a backend fault fails this batch's requests, not the server
            log.exception("generation failed for a batch of %d rows", len(rows))
            for job, part in parts:
                job.error = f"generation failed: {type(exc).__name__}: {exc}"
                with self._cond:  # a failed request ends now, not after the rest of its rows has run
                    if job in self._waiting:
                        self._waiting.remove(job)
                rest, job.started = job.rows[job.started :], len(job.rows)
                self._finish(job, part + rest, "error")
            return
        finally:
            self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(rows))
        self.stats["tokens"] += sum(r.completion_tokens for r in rows)
        for job, part in parts:
            self._finish(job, part, None)

    def _finish_rest(self, job: Job, reason: str) -> None:
        """End the rows of a job (no longer queued) that never reached a batch."""
        rows, job.started = job.rows[job.started :], len(job.rows)
        self._finish(job, rows, reason)

    def _finish(self, job: Job, rows: list[Row], reason: str | None) -> None:
        """Mark rows finished (reason for those the backend did not finish); on_done once the whole job is."""
        for row in rows:
            if row.finish_reason is None:
                row.finish_reason = reason or "length"
        self.stats["cancelled_rows"] += sum(r.finish_reason == "cancelled" for r in rows)
        self.stats["timed_out_rows"] += sum(r.finish_reason == "timeout" for r in rows)
        if job.started < len(job.rows) or any(r.finish_reason is None for r in job.rows):
            return
        try:
            job.on_done(job)
        except Exception:  # noqa: BLE001 - a client-side callback must not kill the scheduler
            log.exception("on_done callback failed")
