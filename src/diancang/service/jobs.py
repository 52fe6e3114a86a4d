"""Learning jobs of the service: run one at a time on a background thread, kept in the archive.

Every job is a row of the archive's ``jobs`` table (:class:`~diancang.archive.jobs.JobStore`):
its id is never reused, and a job that a killed service left unfinished reads
``failed: interrupted`` after the restart. While a job runs, its progress moves with every
training batch (saved at most every ``save_every_s``); a queued job can be cancelled at once, a
running one at its next batch.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diancang.archive.jobs import FINISHED, JobStore
from diancang.errors import DiancangError


class JobCancelled(Exception):
    """Raised inside a running job's progress callback once its cancellation is asked for."""


@dataclass
class Job:
    """A queued or running job as the runner holds it."""

    id: int
    kind: str
    status: str = "queued"
    progress: float = 0.0
    log: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``GET /v1/jobs/{id}``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": round(self.progress, 3),
            "log": self.log[-200:],
            "result": self.result,
            "error": self.error,
        }


class JobRunner:
    """Runs jobs one after another on a daemon thread; :meth:`note` is their progress callback."""

    def __init__(self, store: JobStore, save_every_s: float = 0.5) -> None:
        self.store = store
        self.save_every_s = save_every_s
        self.interrupted = store.interrupt()  # what a previous process left unfinished
        self._active: dict[int, Job] = {}
        self._queue: list[tuple[Job, Callable[[Job], dict[str, Any]], Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._saved = 0.0
        self._thread = threading.Thread(target=self._run, name="diancang-jobs", daemon=True)
        self._thread.start()

    def submit(
        self,
        kind: str,
        work: Callable[[Job], dict[str, Any]],
        cleanup: Callable[[], None] = lambda: None,
    ) -> Job:
        """Queue ``work(job)`` (its return value becomes the result); ``cleanup()`` runs once
        the job has finished, failed or been cancelled."""
        job = Job(self.store.add(kind), kind)
        with self._lock:
            self._active[job.id] = job
            self._queue.append((job, work, cleanup))
            self._wake.notify()
        return job

    def get(self, id: int) -> dict[str, Any] | None:
        """A job (live from memory while it runs, else from the archive) or None."""
        job = self._active.get(id)
        return job.to_dict() if job is not None else _public(self.store.get(id))

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` jobs, newest first, without their logs."""
        out = []
        for row in self.store.recent(limit):
            job = self.get(row["id"]) or row
            out.append({k: v for k, v in job.items() if k != "log"})
        return out

    def cancel(self, id: int) -> dict[str, Any] | None:
        """Cancel a queued job now or a running one at its next batch; a finished job is
        returned unchanged. None when there is no such job."""
        with self._lock:
            job = self._active.get(id)
            queued = next((q for q in self._queue if q[0].id == id), None)
            if queued is not None:
                self._queue.remove(queued)
        if job is None:
            return self.get(id)
        job.cancel = True
        if queued is not None:
            self._finish(job, "cancelled", queued[2], error="cancelled before it started")
        return job.to_dict()

    def note(self, job: Job, fraction: float, message: str | None) -> None:
        """``job``'s progress callback: moves its progress, keeps ``message`` in its log, saves
        now and then, and stops the job (:class:`JobCancelled`) once it is cancelled."""
        if job.cancel:
            raise JobCancelled
        job.progress = fraction
        if message:
            job.log.append(message)
        if message or time.monotonic() - self._saved > self.save_every_s:
            self._saved = time.monotonic()
            self.store.save(job.to_dict())

    def _finish(
        self, job: Job, status: str, cleanup: Callable[[], None], error: str | None = None
    ) -> None:
        job.status, job.error = status, error
        if status == "done":
            job.progress = 1.0
        try:
            cleanup()
        finally:
            self.store.save(job.to_dict())
            with self._lock:
                self._active.pop(job.id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job, work, cleanup = self._queue.pop(0)
            job.status = "running"
            self.store.save(job.to_dict())
            try:
                job.result = work(job)
                self._finish(job, "done", cleanup)
            except JobCancelled:
                self._finish(job, "cancelled", cleanup, error="cancelled while running")
            except DiancangError as err:
                self._finish(job, "failed", cleanup, error=str(err))
            except Exception as err:  # a job's crash is reported, not raised
                job.log.append(traceback.format_exc(limit=5))
                self._finish(job, "failed", cleanup, error=f"{type(err).__name__}: {err}")


def _public(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: v for k, v in row.items() if k not in ("created", "updated")} | (
        {"finished": row["updated"]} if row["status"] in FINISHED else {}
    )
