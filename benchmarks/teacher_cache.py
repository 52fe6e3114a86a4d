"""What keeping the teacher's outputs saves: ``python -m benchmarks.teacher_cache``.

The main job's data and encoder (MSRA demo, e5-small 4 layers), cpfd, two steps: the first step
once, then the second step twice from it, with ``train.teacher_cache_mb: 0`` (the teacher runs
on every batch of every epoch) and with the default cache (once per sentence and step). Writes
``results/teacher-cache.{json,md}`` (:mod:`benchmarks.step_cost` with two arms). Run it alone
on the machine.
"""

from __future__ import annotations

import sys

from benchmarks.step_cost import main as step_cost


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``--epochs N`` as in :mod:`benchmarks.step_cost`)."""
    step_cost(
        ["--arms", "cpfd:live,cpfd", *(argv or [])],
        name="teacher-cache",
        title="Teacher outputs kept per step (cpfd, second step of the main job's stream)",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
