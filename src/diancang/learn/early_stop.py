"""Early stopping of a step on its dev F1 (the converged protocol's ``train.patience``)."""

from __future__ import annotations

import torch

from diancang.model.tagger import Tagger


class Best:
    """Early stopping: the best dev F1 so far and its weights (on the CPU); with ``patience``
    None it only watches. Epochs before dev F1 first rises above 0 do not count against the
    patience (a step that has learned nothing yet has not stopped improving: on Weibo's small
    steps the first two or three epochs read 0.0), and their latest weights are kept."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.f1 = -1.0
        self.since = 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, f1: float, model: Tagger) -> bool:
        """Record an epoch's dev F1; True when training should stop."""
        if self.patience is None:
            return False
        if f1 > self.f1 or f1 == self.f1 == 0.0:
            self.f1, self.since = f1, 0
            self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.since += 1
        return self.since >= self.patience

    def restore(self, model: Tagger) -> None:
        """Load the best epoch's weights (nothing without patience or a scored epoch)."""
        if self.weights is not None:
            model.load_state_dict(self.weights)
