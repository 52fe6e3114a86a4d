"""Distilling a model into a smaller one on a step's data: the consolidation that parameter
isolation strategies (``der``, ``ctr``) offer when a model's inference cost passes a bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diancang.data.record import Sentence
    from diancang.model.tagger import Tagger
    from diancang.strategies.base import StepContext


def distil_into(
    ctx: StepContext,
    student: Tagger,
    teacher: Tagger,
    data: list[Sentence],
    epochs: int,
    lr: float,
    *,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    after_update: Callable[[], None] | None = None,
) -> None:
    """Train ``student``'s trainable parameters outside its encoder (frozen meanwhile) at 10 x
    ``lr``, and its DER branches at ``lr``, through the step runner's loop to match
    ``teacher``'s label distribution on every word of ``data`` (KL at temperature 1), plus
    ``extra_loss()`` if given."""
    from torch.utils.data import DataLoader

    from diancang.model.features import collate
    from diancang.strategies.review import soft_kl

    teacher.eval()
    rows = [student.encode(s.tokens) for s in data if s.tokens]
    gen = torch.Generator().manual_seed(ctx.config.seed * 53 + ctx.step.index)
    loader: DataLoader[Any] = DataLoader(
        rows,  # type: ignore[arg-type]
        batch_size=ctx.config.train.batch_size,
        shuffle=True,
        generator=gen,
        collate_fn=lambda chunk: collate(chunk, None, student.token_encoder.pad_id),
    )

    def loss_fn(wrapped: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(**batch).logits
        logits = wrapped(**batch).logits
        mask = batch["word_mask"]
        loss = soft_kl(logits[mask], target[mask], 1.0)
        return loss if extra_loss is None else loss + extra_loss()

    trainable = [q for q in student.encoder.parameters() if q.requires_grad]
    for q in trainable:
        q.requires_grad_(False)
    ctx.fit(
        student,
        loader,
        loss_fn,
        epochs=epochs,
        lr=lr,
        head_lr=10 * lr,
        desc=f"step {ctx.step.index + 1} consolidate",
        after_update=after_update,
    )
    for q in trainable:
        q.requires_grad_(True)
