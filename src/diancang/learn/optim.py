"""The optimizer and learning-rate schedule every training phase uses, and seeding."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from diancang.config import TrainConfig
from diancang.model.tagger import Tagger


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def linear_warmup(total: int, warmup: float, start: int = 0) -> Callable[[int], float]:
    """The learning-rate factor of update ``i`` (0-based): 0 before ``start``, then a linear
    warm-up over ``warmup`` of the remaining ``total - start`` updates and a linear decay to
    0 at ``total``."""
    span = max(1, total - start)
    n_warm = max(1, int(span * warmup))

    def factor(i: int) -> float:
        k = i - start
        if k < 0:
            return 0.0
        if k < n_warm:
            return (k + 1) / n_warm
        return max(0.0, (span - k) / max(1, span - n_warm))

    return factor


def make_optimizer(
    model: Tagger,
    n_batches: int,
    epochs: int,
    lr: float,
    head_lr: float,
    train: TrainConfig,
    extra: Sequence[nn.Module] = (),
) -> tuple[Any, Any]:
    """AdamW with the encoder (and any DER branches) at ``lr`` and everything else trainable
    (head, CRF, towers, the ``extra`` modules) at ``head_lr``; linear warm-up over
    ``train.warmup`` of ``n_batches * epochs`` updates, then linear decay to 0."""
    towers = [model.encoder] + ([model.branches] if model.branches is not None else [])
    enc = [p for m in towers for p in m.parameters() if p.requires_grad]  # encoder rate
    enc_ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    rest += [p for m in extra for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": enc, "lr": lr}, {"params": rest, "lr": head_lr}],
        weight_decay=train.weight_decay,
    )
    total = max(1, n_batches * epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(total, train.warmup))
    return opt, sched
