"""Content-addressed file storage: ``blobs/<2 hex>/<sha256>``, each blob whole or absent.

A blob is written to a temp file in its own folder, flushed and fsync'ed, then ``os.replace``d
into place, so a process killed at any moment leaves either the whole blob or none (plus, at
worst, a ``.tmp-*`` file that :meth:`BlobStore.sweep` removes once it is stale).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from diancang.errors import DiancangError

_CHUNK = 1 << 20
_TMP = ".tmp-"
#: Temp files older than this were left by killed processes (live writers finish much sooner).
STALE_TMP_S = 3600.0


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size in bytes of a file."""
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, out_path: str | Path, fd: int | None = None) -> str:
    """Copy ``src`` to ``out_path`` (or the open ``fd``), fsync it, return its sha256."""
    h = hashlib.sha256()
    out_file = os.fdopen(fd, "wb") if fd is not None else open(out_path, "wb")  # noqa: SIM115
    with out_file as out, src.open("rb") as inp:
        for chunk in iter(lambda: inp.read(_CHUNK), b""):
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


class BlobStore:
    """Files stored once per content under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not exist)."""
        return self.root / sha256[:2] / sha256

    def write(self, src: Path, digest: str) -> None:
        """Copy ``src`` into blob ``digest``: temp file, fsync, ``os.replace``."""
        target = self.path(digest)
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)
        fd, tmp = tempfile.mkstemp(prefix=_TMP, dir=target.parent)
        try:
            if _copy(src, tmp, fd) != digest:
                raise DiancangError(
                    "the file changed while it was being archived",
                    path=src,
                    fix="add it again once whatever writes it has finished",
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(target.parent)

    def store(self, src: Path) -> tuple[str, int]:
        """Store one file (once per content); return its sha256 and size."""
        digest, size = hash_file(src)
        if not self.path(digest).is_file():
            self.write(src, digest)
        return digest, size

    def ensure(self, sources: dict[str, Path]) -> None:
        """Rewrite any of these blobs that is missing (a concurrent sweep removed it)."""
        for digest, src in sources.items():
            if not self.path(digest).is_file():
                self.write(src, digest)

    def copy_verified(self, digest: str, dest: Path, what: str) -> None:
        """Copy blob ``digest`` to ``dest``, checking its hash (DiancangError when missing or
        corrupt; ``what`` names the owner in the message)."""
        blob = self.path(digest)
        fix = "restore the archive folder from a backup, or add the model again as a new version"
        if not blob.is_file():
            raise DiancangError(f"{what} needs a missing blob", path=blob, fix=fix)
        if _copy(blob, dest) != digest:
            raise DiancangError(f"a blob of {what} is corrupt", path=blob, fix=fix)

    def sweep(self, used: Iterable[str]) -> int:
        """Remove blobs not in ``used`` and stale temp files; return how many blobs went."""
        keep = set(used)
        stale = time.time() - STALE_TMP_S
        removed = 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for blob in sub.iterdir():
                if blob.name.startswith(_TMP):
                    with suppress(FileNotFoundError):
                        if blob.stat().st_mtime < stale:
                            blob.unlink()
                elif blob.name not in keep:
                    blob.unlink(missing_ok=True)
                    removed += 1
        return removed
