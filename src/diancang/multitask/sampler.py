"""Which task each training batch comes from, when a main task trains beside auxiliary ones.

``proportional``: tasks in proportion to their batches per epoch (every batch of every task
once per epoch, shuffled together). ``equal``: each task as often as the main one (smaller
ones cycle, larger ones are cut). ``subsample``: every task gives as many batches as the
*smallest* one, a fresh random subset of the larger ones each epoch (the seed article's
"subsampling the larger task each iteration").
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
        smallest = min(n for n in batches if n)
        picks = [(t, i) for t, n in enumerate(batches) if n for i in rng.sample(range(n), smallest)]
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    rng.shuffle(picks)
    return picks
