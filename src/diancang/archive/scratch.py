"""Scratch folders: the working folders of learning steps and uploads, named
``<prefix>-<pid>-<random>`` after the process that made them, so that a later process can
remove those whose process is gone (a crash or ``kill -9`` left them)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new(root: Path, prefix: str) -> Path:
    """A new folder ``root/<prefix>-<pid>-<random>`` (the caller removes it)."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=root))


@contextmanager
def folder(root: Path, prefix: str) -> Iterator[Path]:
    """A new folder under ``root`` for the block, removed after it."""
    path = new(root, prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clean(root: Path) -> int:
    """Remove the folders under ``root`` whose process is gone; returns how many went."""
    removed = 0
    for path in sorted(root.glob("*-*-*")):
        pid = path.name.split("-")[-2]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
