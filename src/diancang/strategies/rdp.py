"""``rdp``: task Relation Distillation and Prototypical pseudo labels (Zhang et al., CIKM 2023).

With the previous step's model as teacher (the first step is plain cross-entropy):

- **Prototypical pseudo-labels.** At the start of the step (``begin_step``) the teacher reads
  the step's training sentences once. Every word labelled ``O`` there is assigned to the old
  label the teacher predicts (argmax, ``O`` included), and each old label's prototype is the
  mean teacher feature (the head's input) of its words. In training, a gold-``O`` word's
  teacher probabilities over the old labels are multiplied by ``softmax(-proto_temperature x
  ||f - prototype||)`` over the old labels (``f`` its teacher feature, Euclidean distance) and
  renormalised; the word is hard-relabelled with the argmax (possibly ``O``), no threshold, no
  weight. A word the teacher calls an old type but which lies far from that type's prototype
  and near ``O``'s goes back to ``O``. The pseudo-labels are the base loss's target
  (``targets``), so a CRF's transitions learn from them too; gold new-type labels stay.
- **Loss terms** (``loss_terms``):
  - KL(teacher || student) on the old labels at the gold-``O`` words (``distill_weight``,
    temperatures ``t_student``/``t_teacher``; student softmax over all labels, cut to the old);
  - inter-task relation distillation (``relation_weight``), on every word: cross-entropy of
    the student's softmax against ``softmax(t)``, ``t`` the teacher's sigmoid scores on the
    old labels and the gold one-hot on the new ones, averaged over labels;
  - intra-task self-entropy (``entropy_weight``), on every word: the student's entropy,
    averaged over labels.

Defaults are the authors' configs (the same for every dataset and split): weights 2.0, 0.3 and
0.1, temperatures 1. Deviations, on purpose: the relation and entropy terms average over real
words (the authors' code averages over every position, padding and later sub-words included);
a label no ``O`` word is predicted as has no prototype (the authors keep a zero vector as its
prototype), so it cannot be a pseudo-label; only gold-``O`` words are relabelled (the authors'
code also relabels gold old-type words, which only replayed data has); the old model's
prediction is the argmax of its word scores, with a CRF too (the authors tag with a token
classifier). Their cosine classifier with frozen old rows and new rows initialised from class
means is the training set-up all their baselines share, not part of RDP.

Report: each step with a teacher adds to the (optional) state the words behind each prototype,
the pseudo-labels given (each training sentence once) and how many the prototypes changed from
the teacher's own prediction; ``ctx.work`` (:class:`RDPWork`) holds the prototypes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence, spans_to_bio
from diancang.model.tagger import Tagger
from diancang.strategies.base import (
    StepBatch,
    StepContext,
    Strategy,
    StrategyState,
    Target,
    strategies,
)
from diancang.strategies.distill import o_word_kl


def class_means(
    features: torch.Tensor, labels: torch.Tensor, n_labels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label: the mean of the ``features`` (N, H) of the rows with ``labels`` (N,) equal to
    it, (n_labels, H) (a zero row for a label with no row), and the row counts (n_labels,)."""
    sums = features.new_zeros(n_labels, features.shape[-1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_labels)[:n_labels]
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts


@torch.no_grad()
def old_prototypes(
    teacher: Tagger, sentences: list[Sentence], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes (C_old, H) and member counts (C_old,) on the CPU: per old label, the mean
    teacher feature of the ``O`` words of ``sentences`` the teacher predicts as that label."""
    was_training = teacher.training
    teacher.eval()
    feats, preds = [], []
    todo = [s for s in sentences if s.tokens]
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        batch = teacher.batch([s.tokens for s in chunk])
        out = teacher(**batch)
        n_words = batch["word_mask"].shape[1]
        rows = [[t == "O" for t in spans_to_bio(len(s.tokens), s.spans)[:n_words]] for s in chunk]
        o_mask = torch.tensor([r + [False] * (n_words - len(r)) for r in rows])
        o_mask = o_mask.to(batch["word_mask"].device) & batch["word_mask"]
        feats.append(out.features[o_mask].float().cpu())
        preds.append(out.logits[o_mask].argmax(-1).cpu())
    teacher.train(was_training)
    n_labels = len(teacher.labels)
    if not feats:
        return torch.zeros(n_labels, teacher.feature_size), torch.zeros(n_labels, dtype=torch.long)
    return class_means(torch.cat(feats), torch.cat(preds), n_labels)


def prototype_log_weights(
    features: torch.Tensor, prototypes: torch.Tensor, members: torch.Tensor, scale: float
) -> torch.Tensor:
    """(..., C) log of ``softmax(-scale x ||f - prototype_c||)`` over the old labels, for words'
    ``features`` (..., H) and ``prototypes`` (C, H); labels without ``members`` (C,) get -inf
    (all zeros when no label has a prototype: no preference)."""
    shape = features.shape[:-1]
    present = (members > 0).to(features.device)
    if not bool(present.any()):
        return features.new_zeros(*shape, len(prototypes))
    flat = features.reshape(-1, features.shape[-1]).float()
    protos = prototypes.to(flat.device, flat.dtype)
    dist = torch.cdist(flat, protos, compute_mode="donot_use_mm_for_euclid_dist")  # (N, C)
    scores = (-scale * dist).masked_fill(~present, float("-inf"))
    return torch.log_softmax(scores, dim=-1).reshape(*shape, len(prototypes))


def prototypical_pseudo_labels(
    teacher_logits: torch.Tensor,
    features: torch.Tensor,
    prototypes: torch.Tensor,
    members: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """(...,) the rectified old label of each word: argmax over the old labels of the teacher's
    probability (``teacher_logits`` (..., C)) times the prototype weight (in log space, so the
    product never underflows; the renormalisation does not move the argmax)."""
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (log_p + prototype_log_weights(features, prototypes, members, scale)).argmax(-1)


def relation_loss(student: torch.Tensor, teacher: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Inter-task relation distillation, mean over words: ``student`` (N, C) and ``teacher``
    (N, C_old) logits, ``gold`` (N,) labels. The target is ``softmax(t)``, ``t`` the teacher's
    sigmoid scores on the old labels and the gold one-hot on the new ones (zeros for a word
    without a new label); the loss is its cross-entropy with the student averaged over labels."""
    if len(student) == 0:
        return student.sum() * 0.0
    c_old, c_all = teacher.shape[-1], student.shape[-1]
    new = gold >= c_old
    t = student.new_zeros(len(student), c_all)
    t[:, :c_old] = torch.sigmoid(teacher.to(t.dtype))
    t[new, gold[new]] = 1.0
    return -(torch.log_softmax(student, dim=-1) * torch.softmax(t, dim=-1)).mean(-1).mean()


def self_entropy(student: torch.Tensor) -> torch.Tensor:
    """Intra-task self-entropy: the mean over words (N, C) of ``-sum p log p / C``."""
    if len(student) == 0:
        return student.sum() * 0.0
    log_p = torch.log_softmax(student, dim=-1)
    return -(log_p.exp() * log_p).mean(-1).mean()


class StepReport(BaseModel):
    """What the prototypes did in one step (counts of words)."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(description="The step (0-based).")
    prototype_words: dict[str, int] = Field(
        default_factory=dict,
        description="Per old label: the step's O words the teacher predicts as it (members).",
    )
    pseudo_labels: dict[str, int] = Field(
        default_factory=dict,
        description="Per old label: gold-O words trained as it (each training sentence once).",
    )
    rectified: int = Field(0, description="Of those, words whose label the prototypes changed.")


@dataclass
class RDPWork:
    """A step's prototypes (``begin_step``): ``labels`` the C_old old labels, ``prototypes``
    (C_old, H) and ``members`` (C_old,) on the CPU; ``pseudo`` (C_old,) and ``rectified`` count
    the pseudo-labels given in training, each sentence (``index``) once."""

    step: int
    labels: list[str]
    prototypes: torch.Tensor
    members: torch.Tensor
    pseudo: torch.Tensor
    rectified: int = 0
    seen: set[int] = field(default_factory=set)

    def observe(
        self,
        index: list[int] | None,
        o_words: torch.Tensor,
        pseudo: torch.Tensor,
        pred: torch.Tensor,
    ) -> None:
        """Count a batch's pseudo-labels (B, W) at its ``o_words`` (B, W), in rows of sentences
        not counted before (every row without an ``index``); ``pred`` (B, W): the teacher's
        own argmax."""
        if index is None:
            rows = list(range(len(pseudo)))
        else:
            rows = [b for b, i in enumerate(index) if i not in self.seen]
            self.seen.update(index)
        mask = o_words[rows]
        given = pseudo[rows][mask].cpu()
        self.pseudo += torch.bincount(given, minlength=len(self.labels))[: len(self.labels)]
        self.rectified += int((given != pred[rows][mask].cpu()).sum())

    def report(self) -> StepReport:
        """The counts as a JSON-able report."""
        return StepReport(
            step=self.step,
            prototype_words=dict(zip(self.labels, self.members.tolist(), strict=True)),
            pseudo_labels=dict(zip(self.labels, self.pseudo.tolist(), strict=True)),
            rectified=self.rectified,
        )


@strategies.register("rdp", version=1)
class RDP(Strategy):
    """RDP: prototype-rectified pseudo-labels for O words, KL + relation + self-entropy terms."""

    name = "rdp"
    needs_previous = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        proto_temperature: float = Field(
            1.0,
            gt=0,
            description="Multiplies word-to-prototype distances before their softmax (the "
            "authors' proto_temperature; higher: sharper).",
        )
        pseudo_labels: Literal["prototype", "teacher", "off"] = Field(
            "prototype",
            description="How gold-O words are relabelled: teacher x prototype weights (RDP), "
            "the teacher's argmax alone, or not at all (ablations).",
        )
        distill_weight: float = Field(2.0, ge=0, description="Weight of the KL on O words.")
        t_student: float = Field(1.0, gt=0, description="Student softmax temperature (KL).")
        t_teacher: float = Field(1.0, gt=0, description="Teacher softmax temperature (KL).")
        relation_weight: float = Field(
            0.3, ge=0, description="Weight of the inter-task relation distillation."
        )
        entropy_weight: float = Field(0.1, ge=0, description="Weight of the self-entropy term.")

    params: Params

    class State(StrategyState):
        required = False  # a report only: nothing carries over between steps

        history: list[StepReport] = Field(
            default_factory=list, description="Per step with a teacher: prototype counts."
        )

    def begin_step(self, ctx: StepContext) -> RDPWork | None:
        """The old labels' prototypes from the teacher on the step's training data."""
        if ctx.previous is None or self.params.pseudo_labels == "off":
            return None
        protos, members = old_prototypes(ctx.previous, ctx.step.train)
        labels = list(ctx.previous.labels)
        zeros = torch.zeros(len(labels), dtype=torch.long)
        return RDPWork(ctx.step.index, labels, protos, members, zeros)

    def targets(self, ctx: StepContext, batch: StepBatch, target: Target) -> Target:
        """With a teacher, gold-``O`` words take their rectified old label (maybe ``O``)."""
        teacher, work = batch.teacher, ctx.work
        if teacher is None or work is None:
            return target
        o_words = batch.inputs["labels"] == 0  # padding and left-out words are -100
        pred = teacher.logits.argmax(-1)
        if self.params.pseudo_labels == "teacher":
            pseudo = pred
        else:
            pseudo = prototypical_pseudo_labels(
                teacher.logits,
                teacher.features,
                work.prototypes,
                work.members,
                self.params.proto_temperature,
            )
        index = batch.inputs.get("index")
        work.observe(None if index is None else index.tolist(), o_words, pseudo, pred)
        return Target(torch.where(o_words, pseudo, target.labels), target.weights)

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        teacher = batch.teacher
        if teacher is None:
            return {}
        p, logits = self.params, batch.out.logits
        words, gold = batch.inputs["word_mask"], batch.inputs["labels"]
        terms: dict[str, torch.Tensor] = {}
        kl = o_word_kl(batch, p.t_student, p.t_teacher) if p.distill_weight > 0 else None
        if kl is not None:
            terms["kd"] = p.distill_weight * kl
        if p.relation_weight > 0:
            rel = relation_loss(logits[words], teacher.logits[words], gold[words])
            terms["relation"] = p.relation_weight * rel
        if p.entropy_weight > 0:
            terms["entropy"] = p.entropy_weight * self_entropy(logits[words])
        return terms

    def end_step(self, ctx: StepContext) -> State:
        state = ctx.state if isinstance(ctx.state, self.State) else self.State()
        work = ctx.work
        history = list(state.history) + ([work.report()] if isinstance(work, RDPWork) else [])
        return self.State(history=history)
