"""Learning jobs kept in the archive's database, so they outlive the process that ran them.

A job is a row: kind, status (queued, running, done, failed, cancelled), progress in [0, 1],
its log lines, and its result or error. :meth:`JobStore.interrupt` marks the jobs a killed or
stopped service left queued or running as failed ("interrupted"), so a client polling an old id
reads what happened to it; ids are never reused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diancang.archive import db

FINISHED = ("done", "failed", "cancelled")
#: The error of a job its service stopped before it finished.
INTERRUPTED = "interrupted: the service stopped before the job finished; upload it again"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JobStore:
    """The ``jobs`` table of an archive's database (``db_path``)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def add(self, kind: str) -> int:
        """A new queued job; returns its id."""
        with db.connect(self.db_path, write=True) as con:
            cur = con.execute(
                "INSERT INTO jobs (kind, status, progress, log, created, updated) "
                "VALUES (?, 'queued', 0.0, '[]', ?, ?)",
                (kind, _now(), _now()),
            )
            return int(cur.lastrowid or 0)

    def save(self, job: dict[str, Any]) -> None:
        """Write a job's status, progress, log, result and error (``job`` as :meth:`get`)."""
        with db.connect(self.db_path, write=True) as con:
            con.execute(
                "UPDATE jobs SET status = ?, progress = ?, log = ?, result = ?, error = ?, "
                "updated = ? WHERE id = ?",
                (
                    job["status"],
                    float(job["progress"]),
                    json.dumps(job["log"][-200:], ensure_ascii=False),
                    None if job["result"] is None else json.dumps(job["result"]),
                    job["error"],
                    _now(),
                    job["id"],
                ),
            )

    def get(self, id: int) -> dict[str, Any] | None:
        """The job as a JSON-able dict, or None when there is no such job."""
        with db.connect(self.db_path) as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (id,)).fetchone()
        return None if row is None else _job(row)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` jobs, newest first."""
        with db.connect(self.db_path) as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
            return [_job(r) for r in rows]

    def interrupt(self) -> int:
        """Mark every queued or running job failed (interrupted); returns how many."""
        with db.connect(self.db_path, write=True) as con:
            cur = con.execute(
                "UPDATE jobs SET status = 'failed', error = ?, updated = ? "
                "WHERE status IN ('queued', 'running')",
                (INTERRUPTED, _now()),
            )
            return cur.rowcount


def _job(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "status": row["status"],
        "progress": round(row["progress"], 3),
        "log": json.loads(row["log"]),
        "result": None if row["result"] is None else json.loads(row["result"]),
        "error": row["error"],
        "created": row["created"],
        "updated": row["updated"],
    }
