"""A linear classification head whose output rows grow when new labels arrive."""

from __future__ import annotations

import torch
from torch import nn


class GrowableLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (C, H); :meth:`grow` appends rows and keeps the old ones."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.02)

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., C)."""
        return nn.functional.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def grow(self, n_new: int) -> None:
        """Append ``n_new`` rows (small random weights, zero bias). Rebuild optimizers after."""
        w_new = torch.empty(n_new, self.weight.shape[1], device=self.weight.device)
        nn.init.normal_(w_new, std=0.02)
        self.weight = nn.Parameter(torch.cat([self.weight.data, w_new.to(self.weight.dtype)]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, self.bias.new_zeros(n_new)]))

    @torch.no_grad()
    def grow_inputs(self, n_new: int) -> None:
        """Append ``n_new`` input columns at zero, so the outputs do not change until they are
        trained (a new feature block, e.g. a DER branch). Rebuild optimizers after."""
        cols = self.weight.new_zeros(self.weight.shape[0], n_new)
        self.weight = nn.Parameter(torch.cat([self.weight.data, cols], dim=1))
