"""``distill``: ExtendNER (Monaikul et al., AAAI 2021), learning without forgetting for NER.

The previous step's model is the teacher. Tokens labelled with a new type are learned with
cross-entropy; tokens labelled ``O`` (which may be old-type entities, unlabelled here) are not in
the cross-entropy: the student's probabilities of the old labels there are matched to the
teacher's by KL divergence with a temperature.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.model.tagger import TaggerOutput
from diancang.strategies.base import StepBatch, StepContext, Strategy, Target, strategies


def old_label_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    t_student: float = 1.0,
    t_teacher: float = 1.0,
) -> torch.Tensor:
    """Mean over masked tokens of KL(p_teacher || q_student[:C_old]).

    student (B, W, C), teacher (B, W, C_old) logits, mask (B, W) bool. ``q_student`` is the
    softmax over all C labels, sliced to the first C_old (the old labels, same ids in both).
    """
    if not bool(mask.any()):
        return student.sum() * 0.0
    log_q = torch.log_softmax(student[mask] / t_student, dim=-1)[:, : teacher.shape[-1]]
    p = torch.softmax(teacher[mask] / t_teacher, dim=-1)
    return (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(-1).mean()


def teacher_on_o(batch: StepBatch) -> tuple[TaggerOutput, torch.Tensor] | None:
    """The teacher's output on the batch and the mask (B, W) of its gold-``O`` words; None
    before there is a teacher."""
    teacher = batch.teacher
    if teacher is None:
        return None
    return teacher, batch.inputs["word_mask"] & (batch.inputs["labels"] == 0)


def o_word_kl(batch: StepBatch, t_student: float, t_teacher: float) -> torch.Tensor | None:
    """:func:`old_label_kl` of the student against the teacher on the batch's gold-``O`` words
    (a scalar); None before there is a teacher."""
    seen = teacher_on_o(batch)
    if seen is None:
        return None
    teacher, mask = seen
    return old_label_kl(batch.out.logits, teacher.logits, mask, t_student, t_teacher)


class DistilsO(Strategy):
    """Base of strategies that, once there is a teacher, take ``O`` words out of the
    cross-entropy (they may be unlabelled old entities) and distil them in ``loss_terms``."""

    needs_previous = True

    def targets(self, ctx: StepContext, batch: StepBatch, target: Target) -> Target:
        if ctx.previous is None:
            return target
        o_words = batch.inputs["labels"] == 0  # O words are distilled, not labelled
        return replace(target, labels=target.labels.masked_fill(o_words, -100))


@strategies.register("distill", version=1)
class Distill(DistilsO):
    """ExtendNER/LwF: cross-entropy on new-type tokens, KL to the previous model on O tokens."""

    name = "distill"
    resumes_mid_step = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        weight: float = Field(1.0, ge=0, description="Weight of the distillation term.")
        t_student: float = Field(1.0, gt=0, description="Softmax temperature of the student.")
        t_teacher: float = Field(1.0, gt=0, description="Softmax temperature of the teacher.")

    params: Params

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        p = self.params
        kl = o_word_kl(batch, p.t_student, p.t_teacher)
        return {} if kl is None else {"kl": p.weight * kl}
