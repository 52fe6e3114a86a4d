"""The archive (典藏): every version of a continually updated recognizer, kept by content hash.

Layout under ``root/``: ``archive.sqlite3`` (SQLite in WAL mode: versions, files, datasets,
events), ``blobs/<2 hex>/<sha256>`` (each file stored once, written whole or not at all),
``checkouts/<id>/`` (version folders rebuilt from blobs on demand; see
:mod:`diancang.learn.version`) and ``scratch/`` (the working folders of learning steps and
uploads, named after their process, which :meth:`Archive.gc` removes once it is gone).

Crash safety: a version's blobs are written and fsync'ed first, then its rows go in with one
transaction, so a killed process leaves no version or a whole one (at worst orphan blobs, which
:meth:`Archive.gc` removes). Every call opens its own connection, so one :class:`Archive` may be
shared by threads and processes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diancang.archive import db
from diancang.archive import scratch as scratch_dirs
from diancang.archive.blobs import STALE_TMP_S, BlobStore
from diancang.archive.diff import version_diff
from diancang.errors import DataError, DiancangError, NotFound

STATUSES = ("candidate", "live", "retired")


@dataclass
class Version:
    """One archived model version and what is known about it."""

    id: int
    parent: int | None
    types: list[str]
    strategies: list[str]
    config: dict[str, Any]
    datasets: dict[str, str]
    metrics: dict[str, Any]
    created: str
    status: str
    gate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def _id_list(ids: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    if not ids:
        return "none: the archive is empty"
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class Archive:
    """Versions, their model files and the datasets they were judged on, under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.db_path = self.root / "archive.sqlite3"
        self.checkouts = self.root / "checkouts"
        try:
            self.checkouts.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(self.root / "blobs")
        except (FileExistsError, NotADirectoryError):
            raise DiancangError(
                "the archive root is not a folder", path=self.root, fix="give a folder path"
            ) from None
        db.init(self.db_path)

    # ------------------------------------------------------------------------------ plumbing
    def _db(self, write: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        return db.connect(self.db_path, write)

    def _log(self, con: sqlite3.Connection, kind: str, version: int | None, **detail: Any) -> None:
        con.execute(
            "INSERT INTO events (time, kind, version, detail) VALUES (?, ?, ?, ?)",
            (_now(), kind, version, _dumps(detail)),
        )

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not exist)."""
        return self.blobs.path(sha256)

    def _ids(self, con: sqlite3.Connection) -> list[int]:
        return [r[0] for r in con.execute("SELECT id FROM versions ORDER BY id")]

    def _check_id(self, con: sqlite3.Connection, id: int, what: str = "version") -> None:
        if con.execute("SELECT 1 FROM versions WHERE id = ?", (id,)).fetchone() is None:
            raise NotFound(
                f"no {what} {id} in the archive (versions: {_id_list(self._ids(con))})",
                path=self.root,
                fix="use one of the listed version ids",
            )

    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
        return Version(
            id=row["id"],
            parent=row["parent"],
            types=json.loads(row["types"]),
            strategies=json.loads(row["strategies"]),
            config=json.loads(row["config"]),
            datasets=json.loads(row["datasets"]),
            metrics=json.loads(row["metrics"]),
            created=row["created"],
            status=row["status"],
            gate=json.loads(row["gate"]) if row["gate"] is not None else None,
        )

    def _get(self, con: sqlite3.Connection, id: int) -> Version:
        self._check_id(con, id)
        return self._version(con.execute("SELECT * FROM versions WHERE id = ?", (id,)).fetchone())

    # ------------------------------------------------------------------------------ versions
    def add_version(
        self,
        model_dir: str | Path,
        *,
        parent: int | None,
        types: list[str],
        strategies: list[str],
        config: dict[str, Any],
        datasets: dict[str, str],
        metrics: dict[str, Any],
        gate: dict[str, Any] | None = None,
        status: str = "candidate",
    ) -> Version:
        """Archive every file under ``model_dir`` as a new version (blobs first, then one
        transaction for the rows). ``status="live"`` also retires the current live version."""
        src = Path(model_dir)
        if status not in STATUSES:
            raise DiancangError(f"unknown status {status!r}", fix=f"use one of {list(STATUSES)}")
        if not src.is_dir():
            raise DiancangError("not a model folder", path=src, fix="give a saved model folder")
        files = sorted(p for p in src.rglob("*") if p.is_file())
        if not files:
            raise DiancangError("the model folder has no files", path=src, fix="save a model")
        if parent is not None:
            with self._db() as con:
                self._check_id(con, parent, "parent version")
        stored = [(p.relative_to(src).as_posix(), *self.blobs.store(p)) for p in files]
        created = _now()
        with self._db(write=True) as con:
            if parent is not None:
                self._check_id(con, parent, "parent version")
            self.blobs.ensure({digest: p for p, (_, digest, _) in zip(files, stored, strict=True)})
            previous = None
            if status == "live":
                row = con.execute("SELECT id FROM versions WHERE status = 'live'").fetchone()
                previous = row[0] if row else None
                con.execute("UPDATE versions SET status = 'retired' WHERE status = 'live'")
            cur = con.execute(
                "INSERT INTO versions (parent, types, strategies, config, datasets, metrics, "
                "created, status, gate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    parent,
                    _dumps(list(types)),
                    _dumps(list(strategies)),
                    _dumps(config),
                    _dumps(datasets),
                    _dumps(metrics),
                    created,
                    status,
                    None if gate is None else _dumps(gate),
                ),
            )
            vid = int(cur.lastrowid or 0)
            con.executemany(
                "INSERT INTO files (version, path, sha256, size) VALUES (?, ?, ?, ?)",
                [(vid, rel, digest, size) for rel, digest, size in stored],
            )
            self._log(con, "add", vid, parent=parent, files=len(stored))
            if status == "live":
                self._log(con, "promote", vid, previous=previous)
            return self._get(con, vid)

    def get(self, id: int) -> Version:
        """The version ``id`` (DiancangError listing the ids there are when unknown)."""
        with self._db() as con:
            return self._get(con, id)

    def versions(self) -> list[Version]:
        """Every version, by id."""
        with self._db() as con:
            return [self._version(r) for r in con.execute("SELECT * FROM versions ORDER BY id")]

    def live(self) -> Version | None:
        """The live version, if one has been promoted."""
        with self._db() as con:
            row = con.execute("SELECT * FROM versions WHERE status = 'live'").fetchone()
            return None if row is None else self._version(row)

    def pick(self, id: int | None = None) -> Version:
        """The version ``id``, or the live one when ``id`` is None (DiancangError when the
        archive has no live version yet, or no version ``id``)."""
        if id is not None:
            return self.get(id)
        live = self.live()
        if live is None:
            raise DiancangError(
                "the archive has no live version",
                path=self.root,
                fix="create one (`diancang demo`), promote one (`diancang promote ID`) "
                "or name a version",
            )
        return live

    def files(self, id: int) -> list[dict[str, Any]]:
        """``{"path", "sha256", "size"}`` of each file of version ``id``, by path."""
        with self._db() as con:
            self._check_id(con, id)
            rows = con.execute(
                "SELECT path, sha256, size FROM files WHERE version = ? ORDER BY path", (id,)
            )
            return [dict(r) for r in rows]

    def model_dir(self, id: int) -> Path:
        """A model folder for version ``id`` (``checkouts/<id>``), built once from verified
        blobs in a temp folder and renamed into place, then reused."""
        final = self.checkouts / str(id)
        if final.is_dir():
            return final
        files = self.files(id)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{id}-", dir=self.checkouts))
        try:
            for f in files:
                dest = tmp / f["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.blobs.copy_verified(f["sha256"], dest, f"version {id}")
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # not a lost race with another builder
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    # ------------------------------------------------------------------------------ status
    def promote(self, id: int) -> Version:
        """Make ``id`` live and retire the current live version (one transaction)."""
        with self._db(write=True) as con:
            version = self._get(con, id)
            if version.status == "live":
                return version
            row = con.execute("SELECT id FROM versions WHERE status = 'live'").fetchone()
            con.execute("UPDATE versions SET status = 'retired' WHERE status = 'live'")
            con.execute("UPDATE versions SET status = 'live' WHERE id = ?", (id,))
            self._log(con, "promote", id, previous=row[0] if row else None)
            return self._get(con, id)

    def rollback(self) -> Version:
        """Retire the live version and bring back the one that was live before it (from the
        events log; else its parent). Returns the version now live."""
        with self._db(write=True) as con:
            row = con.execute("SELECT id, parent FROM versions WHERE status = 'live'").fetchone()
            if row is None:
                raise DiancangError(
                    "there is no live version to roll back", fix="promote a version first"
                )
            current, target = row["id"], None
            event = con.execute(
                "SELECT detail FROM events WHERE kind = 'promote' AND version = ? "
                "ORDER BY id DESC LIMIT 1",
                (current,),
            ).fetchone()
            if event is not None:
                target = json.loads(event["detail"]).get("previous")
            if target is None:
                target = row["parent"]
            if target is None:
                raise DiancangError(
                    f"live version {current} has no earlier live version and no parent to roll "
                    "back to",
                    fix="promote the version you want with promote(id)",
                )
            self._check_id(con, target)
            con.execute("UPDATE versions SET status = 'retired' WHERE id = ?", (current,))
            con.execute("UPDATE versions SET status = 'live' WHERE id = ?", (target,))
            self._log(con, "rollback", target, previous=current)
            return self._get(con, target)

    def set_gate(self, id: int, gate: dict[str, Any]) -> Version:
        """Store the promotion gate's decision for version ``id``."""
        with self._db(write=True) as con:
            self._check_id(con, id)
            con.execute("UPDATE versions SET gate = ? WHERE id = ?", (_dumps(gate), id))
            self._log(con, "gate", id, accepted=gate.get("accepted"))
            return self._get(con, id)

    def diff(self, a: int, b: int) -> dict[str, Any]:
        """What changed from version ``a`` to ``b``: types, metric deltas (b - a), config."""
        return version_diff(self.get(a), self.get(b))

    # ------------------------------------------------------------------------------ datasets
    def put_dataset(self, path: str | Path, *, name: str, types: list[str]) -> str:
        """Store a JSONL dataset file; return its fingerprint (sha256). Idempotent."""
        src = Path(path)
        if not src.is_file():
            raise DiancangError("no such dataset file", path=src, fix="give a JSONL file")
        n = 0
        with src.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    json.loads(line.decode("utf-8"))
                except ValueError as err:  # UnicodeDecodeError is a ValueError too
                    raise DataError(
                        f"not a JSONL line ({err})",
                        path=src,
                        line=lineno,
                        fix="give a UTF-8 file with one JSON object per line",
                    ) from None
                n += 1
        digest, _ = self.blobs.store(src)
        with self._db(write=True) as con:
            self.blobs.ensure({digest: src})
            cur = con.execute(
                "INSERT OR IGNORE INTO datasets (fingerprint, name, types, n_sentences, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (digest, name, _dumps(list(types)), n, _now()),
            )
            if cur.rowcount:
                self._log(con, "dataset", None, fingerprint=digest, name=name)
        return digest

    def datasets(self) -> list[dict[str, Any]]:
        """Every stored dataset: fingerprint, name, types, n_sentences, created."""
        with self._db() as con:
            rows = con.execute("SELECT * FROM datasets ORDER BY created, fingerprint")
            return [{**dict(r), "types": json.loads(r["types"])} for r in rows]

    def dataset_path(self, fingerprint: str) -> Path:
        """The stored file of a dataset (DiancangError when the fingerprint is unknown)."""
        with self._db() as con:
            row = con.execute(
                "SELECT 1 FROM datasets WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
            known = [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name")]
        if row is None:
            raise DiancangError(
                f"no dataset with fingerprint {fingerprint!r} in the archive "
                f"(datasets: {', '.join(known) or 'none'})",
                path=self.root,
                fix="store it first with put_dataset, or use a fingerprint from datasets()",
            )
        return self.blob_path(fingerprint)

    # ------------------------------------------------------------------------------ scratch
    def new_scratch(self, prefix: str) -> Path:
        """A new working folder ``scratch/<prefix>-<pid>-<random>`` (the caller removes it;
        :meth:`gc` removes those of processes that are gone)."""
        return scratch_dirs.new(self.root / "scratch", prefix)

    def scratch(self, prefix: str) -> AbstractContextManager[Path]:
        """A working folder for the block, removed after it."""
        return scratch_dirs.folder(self.root / "scratch", prefix)

    def clean_scratch(self) -> int:
        """Remove scratch folders whose process is gone (a crash or kill -9 left them);
        returns how many went."""
        return scratch_dirs.clean(self.root / "scratch")

    # ------------------------------------------------------------------------------ upkeep
    def events(self) -> list[dict[str, Any]]:
        """The events log, oldest first: id, time, kind, version, detail."""
        with self._db() as con:
            rows = con.execute("SELECT * FROM events ORDER BY id")
            return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def gc(self) -> int:
        """Remove blobs no version or dataset references, stale temp files and the scratch
        folders of processes that are gone; return how many blobs went. Holds the write lock,
        so no version can be added halfway meanwhile."""
        with self._db(write=True) as con:
            used = {r[0] for r in con.execute("SELECT sha256 FROM files")}
            used |= {r[0] for r in con.execute("SELECT fingerprint FROM datasets")}
            removed = self.blobs.sweep(used)
            stale = time.time() - STALE_TMP_S
            for tmp in self.checkouts.glob(".tmp-*"):
                if tmp.stat().st_mtime < stale:
                    shutil.rmtree(tmp, ignore_errors=True)
            scratch = self.clean_scratch()
            self._log(con, "gc", None, removed=removed, scratch=scratch)
        return removed
