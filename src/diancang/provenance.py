"""Where a result came from: the code's git commit and the process's peak memory."""

from __future__ import annotations

import resource
import subprocess


def git_commit() -> str:
    """The current git commit ("-dirty" if tracked files other than benchmark results changed;
    "unknown" outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        # Benchmark result files are written while benchmarks run; they do not make code dirty.
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks/results",
                ":!benchmarks/README.md",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip()
        return (commit + ("-dirty" if dirty.stdout.strip() else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
