"""``ema``: an exponential moving average of the weights during each step (parameter averaging).

After every optimizer step the average is updated; at the end of the step the model takes the
averaged weights. Combine it with any other strategy (``strategies: [distill, ema]``).
"""

from __future__ import annotations

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

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        self._shadow: dict[str, torch.Tensor] = {}
        self._updates = 0

    @torch.no_grad()
    def after_update(self, ctx: StepContext) -> None:
        current = {k: v for k, v in ctx.model.state_dict().items() if v.is_floating_point()}
        if not self._shadow or any(
            k not in self._shadow or self._shadow[k].shape != v.shape for k, v in current.items()
        ):  # a new step (the head grew) starts a new average
            self._shadow = {k: v.detach().clone() for k, v in current.items()}
            self._updates = 0
            return
        self._updates += 1
        n = self._updates
        decay = (
            min(self.params.decay, (1 + n) / (10 + n)) if self.params.warmup else self.params.decay
        )
        for k, v in current.items():
            self._shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        shadow, self._shadow = self._shadow, {}
        return shadow or None
