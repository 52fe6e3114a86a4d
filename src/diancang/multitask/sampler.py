"""Which task each training batch comes from, when a main task trains beside auxiliary ones.

The main task (task 0) gives every batch once per epoch in all three. ``proportional``: every
batch of every auxiliary task once per epoch too, shuffled together (tasks in proportion to
their size). ``equal``: each auxiliary task exactly as many batches as the main one (a smaller
one cycles, a larger one is cut). ``subsample``: each auxiliary task at most as many batches as
the main one, a fresh random subset of a larger one every epoch (the seed article's
"subsampling the larger task each iteration"), all of a smaller one.
"""

from __future__ import annotations

import random
from typing import Literal

Sampling = Literal["proportional", "equal", "subsample"]


def schedule(batches: list[int], sampling: Sampling, seed: int) -> list[tuple[int, int]]:
    """One epoch's order: ``(task, batch index within that task)`` pairs; task 0 is the main
    one and ``batches[t]`` the batches task ``t`` has per epoch."""
    rng = random.Random(seed)
    if sampling == "proportional":
        picks = [(t, i) for t, n in enumerate(batches) for i in range(n)]
    elif sampling == "equal":
        target = batches[0]
        picks = [(t, i % n) for t, n in enumerate(batches) if n for i in range(target)]
    elif sampling == "subsample":
        cap = batches[0]
        picks = [(t, i) for t, n in enumerate(batches) for i in rng.sample(range(n), min(n, cap))]
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    rng.shuffle(picks)
    return picks
