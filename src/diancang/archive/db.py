"""The archive's SQLite database: schema, and one short-lived connection per operation.

WAL mode (readers never block the writer), ``synchronous=FULL`` (a committed version survives a
power cut), foreign keys on, and a busy timeout so concurrent writers wait instead of failing.
Connections are never shared across threads: each call opens, uses and closes its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diancang.errors import DiancangError

#: 1: versions, files, datasets, events; 2: jobs. Every statement is ``IF NOT EXISTS``, so
#: opening an older archive adds what it lacks.
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS versions (
        id INTEGER PRIMARY KEY,
        parent INTEGER REFERENCES versions(id),
        types TEXT NOT NULL, strategies TEXT NOT NULL, config TEXT NOT NULL,
        datasets TEXT NOT NULL, metrics TEXT NOT NULL, created TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('candidate', 'live', 'retired')),
        gate TEXT)""",
    # At most one live version, whatever the code above does.
    "CREATE UNIQUE INDEX IF NOT EXISTS one_live ON versions(status) WHERE status = 'live'",
    """CREATE TABLE IF NOT EXISTS files (
        version INTEGER NOT NULL REFERENCES versions(id),
        path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (version, path))""",
    "CREATE INDEX IF NOT EXISTS files_sha ON files(sha256)",
    """CREATE TABLE IF NOT EXISTS datasets (
        fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, types TEXT NOT NULL,
        n_sentences INTEGER NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
        version INTEGER, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_version ON events(version, kind)",
    # AUTOINCREMENT: a job id is never given twice, even across restarts.
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed',
            'cancelled')),
        progress REAL NOT NULL, log TEXT NOT NULL, result TEXT, error TEXT,
        created TEXT NOT NULL, updated TEXT NOT NULL)""",
]


@contextmanager
def connect(path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A fresh connection; with ``write`` the block is one ``BEGIN IMMEDIATE`` transaction,
    committed when it ends normally and rolled back on any exception."""
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA synchronous=FULL")
        if not write:
            yield con
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


def init(path: Path) -> None:
    """Create or check the database at ``path`` (WAL mode, current schema)."""
    try:
        with connect(path) as con:
            con.execute("PRAGMA journal_mode=WAL")
            found = con.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise DiancangError(
                    f"the archive has schema version {found}, newer than this diancang's "
                    f"{SCHEMA_VERSION}",
                    path=path,
                    fix="upgrade diancang",
                )
            if found == SCHEMA_VERSION:
                return
        with connect(path, write=True) as con:
            for statement in _SCHEMA:
                con.execute(statement)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as err:
        raise DiancangError(
            f"cannot open the archive database ({err})",
            path=path,
            fix="give the root of an archive made by diancang, or a new or empty folder",
        ) from None
