"""The arbiter: which step's expert to trust for a word when several claim it (class-incremental
prediction over per-step modules, e.g. CTR's task plugins).

Each expert t gives per word its log-probability of ``O`` and of its best entity label; the
arbiter, one linear layer over those 2 x T numbers, scores ``O`` and each expert. It starts as
the calibrated rule (an expert's entity score against the mean of the experts' ``O`` scores)
and is trained at each step on the step's data plus the replay memory, whose gold labels say
which expert was right. The newest expert's words come from a whole step's data, an older
one's from the memory alone (a few hundred against thousands), so each expert's words are
weighed to count the same in the loss (:func:`expert_weights`); unweighed, the arbiter learns
to prefer the newest expert wherever experts disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Arbiter(nn.Module):
    """features (..., T, 2): per expert (log p(O), best entity log p) -> logits (..., T + 1),
    0 meaning ``O`` and t + 1 expert t."""

    def __init__(self, experts: int) -> None:
        super().__init__()
        self.experts = experts
        self.linear = nn.Linear(2 * experts, experts + 1)
        with torch.no_grad():  # start as the rule
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            self.linear.weight[0, 0::2] = 1.0 / experts  # O: the experts' mean O score
            for t in range(experts):
                self.linear.weight[t + 1, 2 * t + 1] = 1.0  # expert t: its entity score

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.flatten(-2))


def expert_features(logps: list[torch.Tensor], keeps: list[torch.Tensor]) -> torch.Tensor:
    """Per expert t: logps[t] (B, W, C) over its labels keeps[t] (C,) (label 0 is ``O``) ->
    features (B, W, T, 2)."""
    feats = []
    for logp, keep in zip(logps, keeps, strict=True):
        entity = keep.clone()
        entity[0] = False
        best = logp.masked_fill(~entity.to(logp.device), -1e4).max(-1).values
        feats.append(torch.stack([logp[..., 0], best], dim=-1))
    return torch.stack(feats, dim=-2)


def expert_weights(targets: torch.Tensor, experts: int) -> torch.Tensor:
    """Class weights (T + 1,) for targets (N,) in 0..T: ``O`` 1, expert t the mean word count
    of the experts with words over t's count (every expert's words weigh the same in total;
    an expert without words 1)."""
    counts = torch.bincount(targets, minlength=experts + 1)[1:].float()
    present = counts > 0
    mean = counts[present].mean() if bool(present.any()) else counts.new_ones(())
    weights = torch.where(present, mean / counts.clamp(min=1), torch.ones_like(counts))
    return torch.cat([counts.new_ones(1), weights])


def fit_arbiter(
    features: torch.Tensor,
    targets: torch.Tensor,
    epochs: int = 200,
    lr: float = 0.05,
    balance: bool = True,
) -> Arbiter:
    """Train an arbiter on words: features (N, T, 2), targets (N,) in 0..T (0: ``O``);
    ``balance``: weigh the experts' words by :func:`expert_weights`."""
    arbiter = Arbiter(features.shape[-2])
    weight = expert_weights(targets, arbiter.experts) if balance else None
    opt = torch.optim.Adam(arbiter.parameters(), lr=lr)
    for _ in range(epochs):
        loss = F.cross_entropy(arbiter(features), targets, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return arbiter.eval()


def arbitrate(
    arbiter: Arbiter, logps: list[torch.Tensor], keeps: list[torch.Tensor]
) -> torch.Tensor:
    """Merged log-scores (B, W, C): ``O`` from the arbiter; a label of expert t as the arbiter's
    score for t plus the label's log-probability among t's entity labels."""
    choice = arbiter(expert_features(logps, keeps)).log_softmax(-1)  # (B, W, T + 1)
    merged = torch.full_like(logps[0], -1e4)
    for t, (logp, keep) in enumerate(zip(logps, keeps, strict=True)):
        entity = keep.clone().to(logp.device)
        entity[0] = False
        within = logp.masked_fill(~entity, -1e4).log_softmax(-1)
        merged = torch.where(entity, choice[..., t + 1 : t + 2] + within, merged)
    merged[..., 0] = choice[..., 0]
    return merged
