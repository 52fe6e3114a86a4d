"""``finetune``: plain training on each step's data only. The lower bound (it forgets)."""

from __future__ import annotations

from diancang.strategies.base import ALL_HEADS, Strategy, strategies


@strategies.register("finetune", version=1)
class Finetune(Strategy):
    """Train on the current step's data (non-current types appear as ``O``); nothing else."""

    name = "finetune"
    resumes_mid_step = True
    heads = ALL_HEADS
