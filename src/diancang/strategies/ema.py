"""``ema``: an exponential moving average of the weights during each step (parameter averaging).

After every optimizer step the average is updated; at the end of the step the model takes the
averaged weights. Combine it with any other strategy (``strategies: [distill, ema]``).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.strategies.base import ALL_HEADS, StepContext, Strategy, strategies


@strategies.register("ema", version=1)
class EMA(Strategy):
    """Exponential moving average of the weights within each step; the average is kept."""

    name = "ema"
    heads = ALL_HEADS

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        decay: float = Field(0.995, gt=0, lt=1, description="Largest averaging decay.")
        warmup: bool = Field(
            True,
            description="Use decay min(decay, (1 + n) / (10 + n)) after n updates, so short "
            "steps are not dominated by the initial weights.",
        )

    params: Params

    def begin_step(self, ctx: StepContext) -> dict[str, Any]:
        """A new average per step: ``{"shadow": weights, "updates": n}``."""
        return {"shadow": {}, "updates": 0}

    @torch.no_grad()
    def after_update(self, ctx: StepContext) -> None:
        work = ctx.work
        current = {k: v for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        if not work["shadow"]:
            work["shadow"] = {k: v.detach().clone() for k, v in current.items()}
            return
        work["updates"] += 1
        n = work["updates"]
        p = self.params
        decay = min(p.decay, (1 + n) / (10 + n)) if p.warmup else p.decay
        for k, v in current.items():
            work["shadow"][k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        return ctx.work["shadow"] or None
