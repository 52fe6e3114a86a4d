"""Where a result came from: the code's git commit, the host's speed and the process's peak
memory."""

from __future__ import annotations

import resource
import subprocess
import time

import torch


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


def matmul_gflops(threads: int, seconds: float = 3.0, n: int = 2048) -> float:
    """fp32 GFLOP/s of repeated ``n x n`` matrix products on ``threads`` threads: the host's
    speed, so that seconds measured on different hosts can be compared."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)  # the global RNG, which training reads, is untouched
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        a @ b  # warm-up
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            a @ b
            count += 1
        return round(count * 2 * n**3 / (time.perf_counter() - began) / 1e9, 1)
    finally:
        torch.set_num_threads(before)
