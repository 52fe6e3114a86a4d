"""``relabel_o``: Learning "O" (Ma et al., ACL 2023) for the unlabelled-entity problem.

Two parts:

- **Relabelling.** Before a step (from the second on) the previous model reads the step's
  training data once. A word labelled ``O`` there may be an old-type entity nobody annotated. In
  the previous model's feature space (words' head inputs, L2-normalised) it is compared with
  - ``prototype`` mode: each label's prototype, the normalised mean of its words. Old entity
    labels' prototypes come from a small memory of ``per_type`` sentences per old type; ``O``'s
    from this step's ``O`` words. The word takes the most similar label if that is an old entity
    label and the similarity is at least ``threshold`` x tau, tau being the lowest similarity
    of that label's real member words to their prototype (the calibration of the paper);
  - ``nn`` mode: its nearest memory word (old entity words of the memory, and this step's
    ``O`` words other than itself); it takes that word's label if it is an old entity label and
    the cosine is at least ``t_nn``.

  Relabelled words become spans (a lone ``I-X`` starts its own entity) added to the sentence,
  so every other strategy sees them as ordinary labels.
- **Entity-aware contrastive learning** on the word features of each batch: every entity word is
  an anchor whose positives are the other words of its label (supervised contrastive loss,
  temperature ``temperature``); ``O`` words are negatives only.

The memory (the carried state: ``per_type`` sentences per type, stored whole) is used for
prototypes only (combine with ``exemplars`` to replay). Deviations from the paper's code: no
projection head (the loss acts on the tagger's features directly), and no second phase with
``O`` anchors.
"""

from __future__ import annotations

import logging
import random
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence, Span
from diancang.strategies.base import (
    StepBatch,
    StepContext,
    StoredSentence,
    Strategy,
    StrategyState,
    Target,
    strategies,
)
from diancang.strategies.words import word_outputs

logger = logging.getLogger("diancang.strategies")


def prototypes(
    features: torch.Tensor, labels: torch.Tensor, n_labels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label: its prototype (C, H), the normalised mean of its normalised ``features`` (N, H)
    with ``labels`` (N,), and tau (C,), the lowest cosine of a member to it (NaN: no member)."""
    x = torch.nn.functional.normalize(features, dim=-1)
    protos = torch.zeros(n_labels, x.shape[1])
    tau = torch.full((n_labels,), float("nan"))
    for c in range(n_labels):
        members = x[labels == c]
        if len(members):
            protos[c] = torch.nn.functional.normalize(members.mean(0), dim=0)
            tau[c] = (members @ protos[c]).min()
    return protos, tau


def relabel_by_prototype(
    features: torch.Tensor,
    protos: torch.Tensor,
    tau: torch.Tensor,
    entity_labels: list[int],
    threshold: float,
) -> torch.Tensor:
    """(N,) the label each word takes (-1: stays ``O``). ``features`` (N, H); ``protos`` (C, H)
    and ``tau`` (C,) as from :func:`prototypes` (NaN tau: label has no prototype)."""
    x = torch.nn.functional.normalize(features, dim=-1)
    sims = x @ protos.T  # (N, C)
    sims[:, torch.isnan(tau)] = float("-inf")
    best, label = sims.max(1)
    ok = torch.zeros_like(best, dtype=torch.bool)
    for c in entity_labels:
        if not torch.isnan(tau[c]):
            ok |= (label == c) & (best >= threshold * tau[c])
    return torch.where(ok, label, torch.full_like(label, -1))


def relabel_by_neighbour(
    features: torch.Tensor,
    support: torch.Tensor,
    support_labels: torch.Tensor,
    entity_labels: list[int],
    t_nn: float,
    exclude_self: bool = False,
) -> torch.Tensor:
    """(N,) the label of each word's nearest ``support`` word (M, H) if that is an entity label
    and the cosine is >= ``t_nn``, else -1. With ``exclude_self``, row i never matches support
    row i (the support starts with the queried words themselves)."""
    x = torch.nn.functional.normalize(features, dim=-1)
    s = torch.nn.functional.normalize(support, dim=-1)
    out = torch.full((len(x),), -1, dtype=torch.long)
    for lo in range(0, len(x), 1024):  # bounded memory: 1024 x M similarities at a time
        sims = x[lo : lo + 1024] @ s.T
        if exclude_self:
            rows = torch.arange(len(sims))
            sims[rows, rows + lo] = float("-inf")
        best, idx = sims.max(1)
        label = support_labels[idx]
        ok = torch.isin(label, torch.tensor(entity_labels)) & (best >= t_nn)
        out[lo : lo + 1024] = torch.where(ok, label, torch.full_like(label, -1))
    return out


def supervised_contrastive(
    features: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over words: ``features`` (N, H),
    ``labels`` (N,) with 0 = ``O`` and -100 = ignored. Anchors are entity words with at least one
    positive (another word of the same label); every other kept word is in the denominator."""
    keep = labels != -100
    x = torch.nn.functional.normalize(features[keep], dim=-1)
    y = labels[keep]
    if len(y) < 2:
        return features.sum() * 0.0
    logits = x @ x.T / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=x.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~self_mask
    anchors = (y > 0) & positive.any(1)
    if not bool(anchors.any()):
        return features.sum() * 0.0
    pos_log = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp_min(1)
    return -pos_log[anchors].mean()


def words_to_spans(labels: list[int | None], names: list[str]) -> list[Span]:
    """Spans from per-word label ids (None: no label); an ``I-X`` not after ``B-X``/``I-X`` starts
    a new entity."""
    spans: list[Span] = []
    start, current = 0, None
    for i, lab in enumerate([*labels, None]):
        tag = names[lab] if lab is not None else "O"
        kind, typ = (tag[:2], tag[2:]) if tag != "O" else ("O", None)
        if current is not None and (kind != "I-" or typ != current):
            spans.append(Span(start, i, current))
            current = None
        if kind == "B-" or (kind == "I-" and current is None):
            start, current = i, typ
    return spans


@strategies.register("relabel_o", version=2)
class RelabelO(Strategy):
    """Learning-O: relabel O words as old types (prototypes or nearest neighbour) + contrast."""

    name = "relabel_o"
    needs_previous = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mode: Literal["prototype", "nn"] = Field(
            "prototype", description="Relabel by class prototypes or by nearest memory word."
        )
        threshold: float = Field(
            0.95, ge=0, description="prototype mode: accept at >= threshold x calibrated tau."
        )
        t_nn: float = Field(0.9, ge=-1, le=1, description="nn mode: least cosine to accept.")
        per_type: int = Field(20, ge=1, description="Memory sentences per type (prototypes).")
        max_o_support: int = Field(
            20000, ge=1, description="nn mode: at most this many O words of the step as support."
        )
        contrast_weight: float = Field(
            0.1, ge=0, description="Weight of the contrastive loss (0: relabelling only)."
        )
        temperature: float = Field(0.1, gt=0, description="Contrastive temperature.")

    params: Params

    class State(StrategyState):
        memory: list[StoredSentence] = Field(
            default_factory=list, description="Sentences per type for the prototypes."
        )
        relabelled: list[int] = Field(
            default_factory=list, description="O words relabelled at each step so far."
        )

    def begin_step(self, ctx: StepContext) -> dict[str, int]:
        return {"relabelled": 0}

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        memory = ctx.state.memory
        if ctx.previous is None or not memory or not data:
            return data
        old = ctx.previous
        names = old.labels
        entity = [i for i, lab in enumerate(names) if lab != "O"]
        mem = word_outputs(old, [m.sentence() for m in memory])
        mem_y = mem.label_ids(names)
        mem_ent = torch.isin(mem_y, torch.tensor(entity))
        step = word_outputs(old, data)
        is_o = torch.tensor([t == "O" for t in step.tags], dtype=torch.bool)
        o_feats = step.features[is_o]
        p = self.params
        if p.mode == "prototype":
            feats = torch.cat([mem.features[mem_ent], o_feats])
            labels = torch.cat([mem_y[mem_ent], torch.zeros(len(o_feats), dtype=torch.long)])
            protos, tau = prototypes(feats, labels, len(names))
            new = relabel_by_prototype(o_feats, protos, tau, entity, p.threshold)
        else:
            gen = torch.Generator().manual_seed(ctx.config.seed)
            k = min(len(o_feats), p.max_o_support)
            sub = torch.randperm(len(o_feats), generator=gen)[:k].sort().values
            support = torch.cat([o_feats[sub], mem.features[mem_ent]])
            support_y = torch.cat([torch.zeros(k, dtype=torch.long), mem_y[mem_ent]])
            new = torch.full((len(o_feats),), -1, dtype=torch.long)
            # Each O word may not match itself: query the sampled ones against the support with
            # their own row excluded, the others against the whole support.
            in_sub = torch.zeros(len(o_feats), dtype=torch.bool)
            in_sub[sub] = True
            new[sub] = relabel_by_neighbour(
                o_feats[sub], support, support_y, entity, p.t_nn, exclude_self=True
            )
            new[~in_sub] = relabel_by_neighbour(
                o_feats[~in_sub], support, support_y, entity, p.t_nn
            )
        o_where = [w for w, o in zip(step.where, is_o.tolist(), strict=True) if o]
        per_sentence: dict[int, dict[int, int]] = {}
        for (si, wi), lab in zip(o_where, new.tolist(), strict=True):
            if lab >= 0:
                per_sentence.setdefault(si, {})[wi] = lab
        out = list(data)
        for si, words in per_sentence.items():
            s = data[si]
            seq: list[int | None] = [words.get(i) for i in range(len(s.tokens))]
            out[si] = Sentence(
                tokens=s.tokens,
                spans=sorted(s.spans + words_to_spans(seq, names)),
                source=s.source,
                text=s.text,
                offsets=s.offsets,
            )
        n = int((new >= 0).sum())
        logger.info("relabel_o: %d of %d O words relabelled as old types", n, len(new))
        ctx.work["relabelled"] = n
        return out

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        if self.params.contrast_weight == 0:
            return {}
        out = batch.out
        labels = batch.inputs["labels"].masked_fill(~batch.inputs["word_mask"], -100)
        loss = supervised_contrastive(
            out.features.reshape(-1, out.features.shape[-1]),
            labels.reshape(-1),
            self.params.temperature,
        )
        return {"contrast": self.params.contrast_weight * loss}

    def end_step(self, ctx: StepContext) -> State:
        rng = random.Random(ctx.config.seed * 31 + ctx.step.index)
        kept: list[Sentence] = []
        for label in ctx.step.new_types:
            having = [s for s in ctx.step.train if label in s.types() and s not in kept]
            kept += rng.sample(having, min(self.params.per_type, len(having)))
        return self.State(
            memory=ctx.state.memory + [StoredSentence.of(s) for s in kept],
            relabelled=[*ctx.state.relabelled, ctx.work["relabelled"]],
        )
