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
sentences. The reviewed weights are what the step keeps (``final_weights``), so the review's
time counts in the step's training seconds.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch
from pydantic import Field
from torch import nn

from diancang.data.record import Sentence
from diancang.model.tagger import Tagger
from diancang.strategies.base import StepContext, strategies
from diancang.strategies.synthetic_replay import SyntheticReplay


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Mean over rows of KL(teacher || student) at temperature ``t``, times t^2; (N, C) each."""
    log_p = nn.functional.log_softmax(student / t, -1)
    q = nn.functional.softmax(teacher / t, -1)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t


@strategies.register("review", version=1)
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

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        return data  # the learn stage is the other strategies' business

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        if ctx.previous is None:
            return None
        p = self.params
        rng = random.Random(ctx.config.seed * 31 + ctx.step.index)
        memory = [ctx.pool[m["index"]].keep_types(m["types"]) for m in ctx.state.get("memory", [])]
        old = self.generate(ctx) + memory
        new = list(ctx.step.train)
        new = rng.sample(new, min(p.new_sentences, len(new)))
        if not old:
            return None
        student = self.review(ctx.model, ctx.previous, old, new, rng)
        return {k: v.detach() for k, v in student.state_dict().items()}

    def review(
        self, learned: Tagger, previous: Tagger, old: list[Sentence], new: list[Sentence], rng: Any
    ) -> Tagger:
        """A reviewed copy of ``learned`` (which, like ``previous``, is left unchanged)."""
        p = self.params
        student = copy.deepcopy(learned).train()
        was_training = learned.training
        learned.eval()
        n_old = len(previous.labels)
        items = [(s.tokens, True) for s in old if s.tokens] + [(s.tokens, False) for s in new]
        opt = torch.optim.AdamW([w for w in student.parameters() if w.requires_grad], p.review_lr)
        for _ in range(p.review_epochs):
            rng.shuffle(items)
            for lo in range(0, len(items), p.review_batch):
                chunk = items[lo : lo + p.review_batch]
                batch = student.batch([tokens for tokens, _ in chunk])
                mask = batch["word_mask"]
                is_old = torch.tensor([flag for _, flag in chunk], device=mask.device)
                logits = student(**batch).logits  # (B, W, C)
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
                opt.zero_grad()
                loss.backward()
                opt.step()
        learned.train(was_training)
        return student.eval()

    def end_step(self, ctx: StepContext) -> dict[str, Any]:
        """The LMs (as ``synthetic_replay``) and a random memory of ``memory_per_type`` real
        sentences per new type."""
        state = super().end_step(ctx)
        rng = random.Random(ctx.config.seed + ctx.step.index)
        memory = list(ctx.state.get("memory", []))
        own = ctx.own_indices
        for t in ctx.step.new_types:
            having = [i for i in own if any(sp.label == t for sp in ctx.pool[i].spans)]
            for i in rng.sample(having, min(self.params.memory_per_type, len(having))):
                memory.append({"index": i, "types": list(ctx.step.new_types)})
        return {**state, "memory": memory}
