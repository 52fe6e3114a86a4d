"""``review``: Learn and Review (after Xia et al., Findings of ACL 2022).

*Learn*: the step trains as the other strategies say (compose with ``distill`` for the paper's
learn stage). *Review*: when that training ends, a copy of the model is trained for
``review_epochs`` more on

- synthetic old-type sentences from this strategy's own per-step LSTM language models, labelled
  by the previous model (exactly as ``synthetic_replay`` makes them), plus the stored real
  sentences when ``memory_per_type`` > 0 (a bounded memory, chosen at random per type), and
- ``new_sentences`` of the step's own data,

distilling two teachers at temperature ``kd_temperature``: the previous model on the old labels
of the old-type sentences, and the model as the learn stage left it on all labels of the new
sentences. The review trains through the step runner's own loop (``ctx.fit``: the same
optimiser, schedule, clipping and ``accelerate``); the reviewed weights are what the step keeps
(``final_weights``), so the review's time counts in the step's training seconds.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from diancang.data.record import Sentence
from diancang.model.features import collate
from diancang.model.tagger import Tagger
from diancang.strategies.base import StepContext, StoredSentence, strategies
from diancang.strategies.synthetic_replay import SyntheticReplay


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Mean over rows of KL(teacher || student) at temperature ``t``, times t^2; (N, C) each."""
    log_p = nn.functional.log_softmax(student / t, -1)
    q = nn.functional.softmax(teacher / t, -1)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t


@strategies.register("review", version=2)
class Review(SyntheticReplay):
    """A review phase on synthetic (and stored) old-type data after each step, distilling the old
    and the just-trained model."""

    name = "review"
    heads = frozenset({"linear", "label_semantic"})  # it distils logits as label scores

    class Params(SyntheticReplay.Params):
        review_epochs: int = Field(1, ge=1, description="Epochs of the review phase.")
        review_lr: float = Field(5e-5, gt=0, description="Learning rate of the review phase.")
        review_batch: int = Field(16, ge=1, description="Sentences per review batch.")
        new_sentences: int = Field(200, ge=0, description="Step sentences mixed into the review.")
        memory_per_type: int = Field(0, ge=0, description="Real sentences stored per type.")
        kd_temperature: float = Field(2.0, gt=0, description="Distillation temperature.")

    params: Params

    class State(SyntheticReplay.State):
        memory: list[StoredSentence] = Field(
            default_factory=list, description="Real sentences kept per type (memory_per_type)."
        )

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        return data  # the learn stage is the other strategies' business

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        if ctx.previous is None:
            return None
        p = self.params
        rng = random.Random(ctx.config.seed * 31 + ctx.step.index)
        old = self.generate(ctx) + [m.sentence() for m in ctx.state.memory]
        new = rng.sample(list(ctx.step.train), min(p.new_sentences, len(ctx.step.train)))
        if not old:
            return None
        student = self.review(ctx, old, new)
        return {k: v.detach() for k, v in student.state_dict().items()}

    def review(self, ctx: StepContext, old: list[Sentence], new: list[Sentence]) -> Tagger:
        """A reviewed copy of the step's model, trained through the step runner's loop
        (``ctx.fit``); the model and the previous one are left unchanged."""
        p = self.params
        learned, previous = ctx.model, ctx.previous
        assert previous is not None
        student = copy.deepcopy(learned)
        was_training = learned.training
        learned.eval()
        n_old = len(previous.labels)
        flagged = [(s, True) for s in old] + [(s, False) for s in new]
        rows = [(student.encode(s.tokens), flag) for s, flag in flagged if s.tokens]
        pad = student.token_encoder.pad_id

        def collate_fn(chunk: list[Any]) -> dict[str, torch.Tensor]:
            batch = collate([e for e, _ in chunk], None, pad)
            return {**batch, "is_old": torch.tensor([flag for _, flag in chunk])}

        gen = torch.Generator().manual_seed(ctx.config.seed * 31 + ctx.step.index)
        loader: DataLoader[Any] = DataLoader(
            rows,  # type: ignore[arg-type]
            batch_size=p.review_batch,
            shuffle=True,
            generator=gen,
            collate_fn=collate_fn,
        )

        def loss_fn(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            mask = batch["word_mask"]
            is_old = batch["is_old"]
            logits = model(**batch).logits  # (B, W, C)
            loss = logits.sum() * 0.0
            with torch.no_grad():
                teacher_old = previous(**batch).logits  # (B, W, n_old)
                teacher_new = learned(**batch).logits  # (B, W, C)
            rows_old = mask & is_old[:, None]
            rows_new = mask & ~is_old[:, None]
            if bool(rows_old.any()):
                s, t = logits[rows_old][:, :n_old], teacher_old[rows_old]
                loss = loss + soft_kl(s, t, p.kd_temperature)
            if bool(rows_new.any()):
                s, t = logits[rows_new], teacher_new[rows_new]
                loss = loss + soft_kl(s, t, p.kd_temperature)
            return loss

        ctx.fit(
            student,
            loader,
            loss_fn,
            epochs=p.review_epochs,
            lr=p.review_lr,
            head_lr=p.review_lr,
            desc=f"step {ctx.step.index + 1} review",
        )
        learned.train(was_training)
        return student.eval()

    def end_step(self, ctx: StepContext) -> State:
        """The LMs (as ``synthetic_replay``) and a random memory of ``memory_per_type`` real
        sentences per new type."""
        base = super().end_step(ctx)
        rng = random.Random(ctx.config.seed + ctx.step.index)
        n = self.params.memory_per_type
        kept: list[StoredSentence] = []
        for t in ctx.step.new_types:
            having = [s for s in ctx.step.train if t in s.types()]
            kept += [StoredSentence.of(s) for s in rng.sample(having, min(n, len(having)))]
        return self.State(**base.model_dump(exclude={"memory"}), memory=ctx.state.memory + kept)
