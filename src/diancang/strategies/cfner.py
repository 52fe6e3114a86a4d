"""``cfner``: causal-effect distillation of the ``O`` class (CFNER, Zheng et al., EMNLP 2022).

The previous step's model is the teacher. New-type words are learned by cross-entropy; the new
data's ``O`` words leave the cross-entropy and are distilled instead:

- a word the teacher tags as an old entity ("defined O") is trained towards the teacher's label,
  with its prediction averaged with those of its ``k`` nearest other defined-O words in the
  teacher's feature space (theirs detached): the neighbours' shared evidence is the causal
  effect the paper distils;
- every other ``O`` word is distilled as in ExtendNER (KL to the teacher on the old labels).

The term is weighted by ``weight * sqrt((C_old - 1) / C_new)`` over label counts (the paper's
self-adaptive weight, which grows as old labels outnumber new ones). Student probabilities are
the softmax over all labels cut to the old ones, not renormalised, as in the paper.

Deviation, on purpose: neighbours are searched among the defined-O words of the same batch, not
of the whole step, which would re-encode ``k`` more sentences per word on every batch.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.strategies.base import StepBatch, StepContext, Target, strategies
from diancang.strategies.distill import DistilsO, teacher_on_o


def causal_o_loss(
    student: torch.Tensor, teacher: torch.Tensor, features: torch.Tensor, k: int
) -> torch.Tensor:
    """Mean loss over ``O`` words: ``student`` (N, C) and ``teacher`` (N, C_old) logits,
    ``features`` (N, H) the teacher's word features. Defined-O words (teacher argmax is not
    ``O``, label 0): -log of the averaged own/neighbour probability of the teacher's label;
    other words: KL(teacher || student) on the old labels."""
    if len(student) == 0:
        return student.sum() * 0.0
    c_old = teacher.shape[-1]
    log_q = torch.log_softmax(student, dim=-1)[:, :c_old]
    p = torch.softmax(teacher, dim=-1)
    per_word = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(-1)
    target = teacher.argmax(-1)
    defined = target != 0
    n = int(defined.sum())
    if n:
        q = log_q[defined].exp()
        if n > 1 and k > 0:
            f = torch.nn.functional.normalize(features[defined], dim=-1)
            sims = (f @ f.T).fill_diagonal_(float("-inf"))
            near = sims.topk(min(k, n - 1), dim=1).indices  # (n, k)
            q = 0.5 * (q + q.detach()[near].mean(1))
        chosen = q.gather(1, target[defined][:, None]).squeeze(1)
        per_word = per_word.masked_scatter(defined, -torch.log(chosen.clamp_min(1e-12)))
    return per_word.mean()


@strategies.register("cfner", version=1)
class CFNER(DistilsO):
    """CFNER: O words distilled, defined-O words by their causal effect (in-batch neighbours)."""

    name = "cfner"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        weight: float = Field(2.0, ge=0, description="lambda of the self-adaptive weight.")
        k: int = Field(3, ge=0, description="Neighbours averaged with a defined-O word.")

    params: Params

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        seen = teacher_on_o(batch)
        if seen is None:
            return {}
        teacher, mask = seen
        out = batch.out
        loss = causal_o_loss(
            out.logits[mask], teacher.logits[mask], teacher.features[mask], self.params.k
        )
        c_all, c_old = out.logits.shape[-1], teacher.logits.shape[-1]
        weight = self.params.weight * math.sqrt((c_old - 1) / max(1, c_all - c_old))
        return {"o_distill": weight * loss}
