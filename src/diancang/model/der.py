"""Dynamically expandable representations (DER, Yan et al., CVPR 2021) for a tagger: the top
``k`` transformer layers become per-step **branches**. The encoder keeps the bottom layers (the
trunk, run once); every branch runs its own copy of the top layers on the trunk's states, and
the head reads the branches' states side by side. A step adds a branch (a copy of the newest)
and freezes the older ones, so what an old step learned sits in layers nothing overwrites.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diancang.errors import ConfigError


def _layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"DER branches need a BERT- or XLM-R-style encoder, not {type(encoder).__name__}",
            fix="use such an encoder (e5-small, minilm-l6, tiny-random), or another strategy",
        )
    return layers


class Branches(nn.Module):
    """Per-step copies of the top layers: trunk states (B, T, H), attention mask (B, T) ->
    the branches' states side by side (B, T, n x H)."""

    def __init__(self, branches: list[nn.ModuleList]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask[:, None, None, :].to(states.dtype)
        mask = (1.0 - mask) * torch.finfo(states.dtype).min  # additive (B, 1, 1, T)
        outs = []
        for branch in self.branches:
            h = states
            for layer in branch:  # type: ignore[attr-defined]
                out: Any = layer(h, mask)
                h = out[0] if isinstance(out, tuple) else out
            outs.append(h)
        return torch.cat(outs, dim=-1)

    def add(self) -> nn.ModuleList:
        """A new branch, a copy of the newest one; returns it."""
        new = copy.deepcopy(self.branches[-1])
        self.branches.append(new)
        assert isinstance(new, nn.ModuleList)
        return new


def split_top(encoder: nn.Module, k: int) -> Branches:
    """Move the encoder's top ``k`` layers into a first branch (outputs unchanged)."""
    layers = _layers(encoder)
    if not 0 < k < len(layers):
        raise ConfigError(
            f"DER needs 1 <= layers < {len(layers)} (the encoder's layers), got {k}",
            fix=f"set strategy_params.der.layers between 1 and {len(layers) - 1}",
        )
    top = nn.ModuleList(list(layers)[-k:])
    getattr(encoder, "encoder").layer = nn.ModuleList(list(layers)[:-k])  # noqa: B009
    getattr(encoder, "config").num_hidden_layers = len(layers) - k  # noqa: B009
    return Branches([top])


def build(encoder: nn.Module, k: int, n: int) -> Branches:
    """``n`` branches of ``k`` fresh layers shaped like the encoder's (weights loaded after)."""
    layers = _layers(encoder)
    config = getattr(encoder, "config")  # noqa: B009
    make = type(layers[0])
    return Branches([nn.ModuleList([make(config) for _ in range(k)]) for _ in range(n)])
