"""``cpfd``: Continual NER without Catastrophic Forgetting (Zhang et al., EMNLP 2023).

With the previous step's model as teacher:

- **Confidence-based pseudo-labels.** At the start of the step (``begin_step``), a threshold per
  old label is the median (normalised) entropy of the teacher on the step's ``O`` tokens
  predicted as that label (at least ``base_threshold``). An ``O`` token whose teacher entropy is
  below the threshold of the teacher's label takes that label (possibly ``O``); an uncertain one
  is left out of the loss. The cross-entropy is scaled per sentence by the share of confident
  ``O`` tokens (at least ``min_factor``), and pseudo-labelled old-entity tokens weigh
  ``0.5 + sigmoid(#old / #new)`` (type balance). These are the base loss's target and weights
  (``targets``), so a CRF's transitions learn from the pseudo-labels too.
- **Distillation on the original ``O`` tokens**: KL on the old labels' probabilities, plus pooled
  feature distillation across every encoder layer, scaled by ``sqrt((C_old - 1) / C_new_labels)``.

Deviation from the paper, on purpose: the paper pools each layer's *attention maps*; here each
layer's *hidden states* are pooled (mean over tokens, and mean over channels) and matched by MSE.
Attention maps need transformers' eager attention, which is much slower on CPUs.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence, spans_to_bio
from diancang.model.tagger import Tagger
from diancang.strategies.base import StepBatch, StepContext, Strategy, Target, strategies
from diancang.strategies.distill import o_word_kl


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(..., C) probabilities -> (...) entropy divided by log C (in [0, 1])."""
    c = probs.shape[-1]
    ent = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
    return ent / math.log(c) if c > 1 else ent * 0.0


@torch.no_grad()
def entropy_thresholds(
    teacher: Tagger, sentences: list[Sentence], base: float, batch_size: int = 64
) -> torch.Tensor:
    """(C_old,) median teacher entropy of ``O`` tokens per predicted old label (>= ``base``)."""
    n_labels = len(teacher.labels)
    ents: list[torch.Tensor] = []
    preds: list[torch.Tensor] = []
    for lo in range(0, len(sentences), batch_size):
        chunk = sentences[lo : lo + batch_size]
        batch = teacher.batch([s.tokens for s in chunk])
        probs = teacher(**batch).logits.softmax(-1)
        o_mask = batch["word_mask"].clone()
        for i, s in enumerate(chunk):
            tags = spans_to_bio(len(s.tokens), s.spans)[: o_mask.shape[1]]
            for j, tag in enumerate(tags):
                o_mask[i, j] &= tag == "O"
        ents.append(normalized_entropy(probs)[o_mask])
        preds.append(probs.argmax(-1)[o_mask])
    ent, pred = torch.cat(ents), torch.cat(preds)
    out = torch.full((n_labels,), base)
    for c in range(n_labels):
        if bool((pred == c).any()):
            out[c] = max(float(ent[pred == c].median()), base)
    return out


def pseudo_label(
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    thresholds: torch.Tensor,
    min_factor: float,
    type_balance: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (B, W) with confident ``O`` tokens relabelled by the teacher and uncertain ones
    -100, and per-token loss weights (B, W): adaptive factor x type balance."""
    probs = teacher_logits.softmax(-1)
    c_old = teacher_logits.shape[-1]
    pred = probs.argmax(-1)
    background = labels == 0
    certain = normalized_entropy(probs) < thresholds.to(probs.device)[pred]
    out = labels.clone()
    out[background & ~certain] = -100
    out[background & certain] = pred[background & certain]
    n_bg = background.sum(1).float()
    factor = ((background & certain).sum(1).float() / (n_bg + 1e-6)).clamp(min=min_factor)
    weights = factor[:, None].expand_as(labels).clone()
    if type_balance:
        old = (out > 0) & (out < c_old)
        ratio = old.sum(1).float() / (labels >= c_old).sum(1).clamp(min=1).float()
        balance = 0.5 + torch.sigmoid(ratio)
        weights = torch.where(old, weights * balance[:, None], weights)
    return out, weights


def pooled_feature_loss(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], mask: torch.Tensor
) -> torch.Tensor:
    """Mean over layers of MSE(token-pooled) + MSE(channel-pooled) hidden states.

    Each layer (B, T, H); mask (B, T) is the attention mask."""
    m = mask.unsqueeze(-1).float()
    total = student[0].new_zeros(())
    layers = list(zip(student[1:], teacher[1:], strict=True))  # skip the embedding output
    for s, t in layers:
        tok_s, tok_t = (s * m).sum(1) / m.sum(1), (t * m).sum(1) / m.sum(1)  # (B, H)
        ch_s, ch_t = s.mean(-1) * mask, t.mean(-1) * mask  # (B, T)
        total = total + torch.mean((tok_s - tok_t) ** 2) + torch.mean((ch_s - ch_t) ** 2)
    return total / max(1, len(layers))


@strategies.register("cpfd", version=1)
class CPFD(Strategy):
    """CPFD: pooled feature distillation + confidence-based pseudo-labels for O tokens."""

    name = "cpfd"
    resumes_mid_step = True
    needs_previous = True
    needs_hidden_states = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        distill_weight: float = Field(1.0, ge=0, description="Weight of KL + pooled features.")
        t_student: float = Field(1.0, gt=0, description="Student softmax temperature (KL).")
        t_teacher: float = Field(1.0, gt=0, description="Teacher softmax temperature (KL).")
        base_threshold: float = Field(0.001, ge=0, description="Lowest entropy threshold.")
        min_factor: float = Field(0.5, ge=0, le=1, description="Lowest adaptive CE factor.")
        type_balance: bool = Field(True, description="Weigh pseudo-labelled old tokens up.")
        adaptive_distill: bool = Field(
            True, description="Scale distillation by sqrt((C_old - 1) / new labels)."
        )

    params: Params

    def begin_step(self, ctx: StepContext) -> torch.Tensor | None:
        """The entropy threshold per old label (C_old,), from the teacher on the step's data."""
        if ctx.previous is None:
            return None
        return entropy_thresholds(ctx.previous, ctx.step.train, self.params.base_threshold)

    def targets(self, ctx: StepContext, batch: StepBatch, target: Target) -> Target:
        """With a teacher: confident ``O`` words take the teacher's label, uncertain ones leave
        the loss, and every word is weighted (adaptive factor x type balance)."""
        teacher = batch.teacher
        if teacher is None or ctx.work is None:
            return target
        p = self.params
        gold = batch.inputs["labels"]
        labels = torch.where(gold == 0, gold, target.labels)  # another strategy's O stays O
        pseudo, weights = pseudo_label(
            teacher.logits, labels, ctx.work, p.min_factor, p.type_balance
        )
        if target.weights is not None:
            weights = weights * target.weights
        return Target(pseudo, weights)

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        teacher, p, out = batch.teacher, self.params, batch.out
        kl = o_word_kl(batch, p.t_student, p.t_teacher)
        if teacher is None or kl is None:
            return {}
        pfd = out.logits.sum() * 0.0
        if out.hidden_states is not None and teacher.hidden_states is not None:
            pfd = pooled_feature_loss(
                out.hidden_states, teacher.hidden_states, batch.inputs["attention_mask"]
            )
        c_old, c_all = teacher.logits.shape[-1], out.logits.shape[-1]
        coef = math.sqrt((c_old - 1) / max(1, c_all - c_old)) if p.adaptive_distill else 1.0
        return {"distill": coef * p.distill_weight * (kl + pfd)}
