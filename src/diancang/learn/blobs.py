"""Blobs of strategy state (e.g. a replay language model's weights), named by content hash.

A step puts new blobs into its scratch folder; blobs of the version it started from are read
from that version's ``blobs/`` folder. Saving a version copies every blob its strategies' states
refer to into the version's own ``blobs/``, so a version folder is self-contained (the archive
stores each file once by content, so a blob shared by many versions costs its size once).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from diancang.archive.blobs import hash_file
from diancang.errors import DiancangError


class Blobs:
    """Put files by content hash into ``write_dir``; find them there or in ``read_dirs``."""

    def __init__(self, write_dir: Path, read_dirs: Sequence[Path] = ()) -> None:
        self.write_dir = write_dir
        self.read_dirs = list(read_dirs)

    def put(self, src: Path) -> str:
        """Store the file ``src``; return its sha256 (the name it is found by)."""
        digest, _ = hash_file(src)
        dest = self.write_dir / digest
        if not dest.is_file():
            self.write_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".tmp-{os.getpid()}-{digest}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # whole or absent, even with several processes
        return digest

    def path(self, digest: str) -> Path:
        """The file of blob ``digest`` (a clear error when no folder has it)."""
        for folder in [self.write_dir, *self.read_dirs]:
            if (folder / digest).is_file():
                return folder / digest
        raise DiancangError(
            f"strategy state refers to blob {digest[:12]}, which is in none of "
            f"{', '.join(str(f) for f in [self.write_dir, *self.read_dirs])}",
            fix="start from a complete version folder (one saved by diancang 0.2 or later); "
            "a version's blobs/ folder must come with it",
        )

    def export(self, digests: Iterable[str], dest: Path) -> None:
        """Copy the named blobs into ``dest`` (a version's ``blobs/``)."""
        for digest in sorted(set(digests)):
            dest.mkdir(parents=True, exist_ok=True)
            if not (dest / digest).is_file():
                shutil.copyfile(self.path(digest), dest / digest)
