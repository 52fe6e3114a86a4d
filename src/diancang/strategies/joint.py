"""``joint``: the upper bound. Each step trains on all data so far, labelled with every seen type.

It breaks the continual protocol on purpose (old data, relabelled): it is the ceiling the
continual strategies are compared with.
"""

from __future__ import annotations

from diancang.data.record import Sentence
from diancang.strategies.base import ALL_HEADS, StepContext, Strategy, strategies


@strategies.register("joint", version=1)
class Joint(Strategy):
    """Replace the step's data by every training sentence of steps <= t, all seen types kept."""

    name = "joint"
    resumes_mid_step = True
    heads = ALL_HEADS

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        seen = ctx.step.seen_types
        t = ctx.step.index
        return [
            s.keep_types(seen) for s, a in zip(ctx.pool, ctx.assignment, strict=True) if 0 <= a <= t
        ]
