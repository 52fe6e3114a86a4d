"""The label-semantic head: words are scored against what the type *names mean*.

Type ``T``'s embedding ``e_T`` is the encoder's mean output over a short text for ``T`` (its
one-line description, else its name), computed by the tagger with the same encoder it tags with.
``B-T`` and ``I-T`` compare a word feature with two learned projections of ``e_T`` (one for
"begins an entity", one for "continues it"); ``O`` has one learned vector. Scores are scaled
cosines plus one learned offset per label kind (O, B, I).

So a new type adds **no parameter**: its rows come from its text, which also lets a type be
tried zero-shot, before any example of it was seen. The B/I choice is two label prompts sharing
one text (rather than span boundaries), so the tagger's BIO decoding and CRF work unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LabelSemanticHead(nn.Module):
    """``(features (B, W, H), types (n, D)) -> logits (B, W, 1 + 2n)`` in the label order
    ``O, B-T1, I-T1, B-T2, ...``."""

    def __init__(self, in_features: int, type_dim: int, scale: float = 10.0) -> None:
        super().__init__()
        self.begin = nn.Linear(type_dim, in_features)
        self.inside = nn.Linear(type_dim, in_features)
        self.outside = nn.Parameter(torch.randn(in_features) * 0.02)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.offsets = nn.Parameter(torch.zeros(3))  # O, B, I

    def rows(self, types: torch.Tensor) -> torch.Tensor:
        """(1 + 2n, H) unit label vectors for type embeddings ``types`` (n, D)."""
        pairs = torch.stack([self.begin(types), self.inside(types)], dim=1)  # (n, 2, H)
        rows = torch.cat([self.outside[None], pairs.reshape(-1, pairs.shape[-1])])
        return nn.functional.normalize(rows, dim=-1)

    def forward(self, features: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Scaled cosine of each word with each label vector, plus the label kind's offset."""
        logits = self.log_scale.exp() * (
            nn.functional.normalize(features, dim=-1) @ self.rows(types).T
        )
        kind = torch.tensor([0] + [1, 2] * types.shape[0], device=logits.device)
        return logits + self.offsets[kind]
