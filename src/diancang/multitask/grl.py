"""Gradient reversal (Ganin and Lempitsky, 2015): identity forward, ``-lambda x`` gradient back.

Put between shared features and a task discriminator, it trains the discriminator to tell the
tasks apart while pushing the shared features to make that impossible (task-neutral).
"""

from __future__ import annotations

from typing import Any

import torch


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged (any shape); the gradient flowing back through it is multiplied by
    ``-scale``."""
    out: torch.Tensor = _Reverse.apply(x, scale)
    return out


class GradientReversal(torch.nn.Module):
    """:func:`reverse_gradient` as a module with weight ``scale`` (lambda)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)
