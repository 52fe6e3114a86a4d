"""``exemplars``: a bounded replay memory chosen by herding (iCaRL, Rebuffi et al. 2017).

At the end of each step, for every new type, the ``per_type`` sentences of that step whose
entity features best track the type's mean feature (herding) are stored, plus ``all_o`` sentences
with no entity of the step's types (the step's own data is all it sees, as in ``learn``).
Later steps train on their own data plus the memory; a stored sentence keeps the labels it had
in its own step. The memory is the strategy's carried state (the sentences themselves), saved
with every version and bounded by ``per_type x types + all_o x steps`` sentences.

With ``classifier: nme`` the head is replaced after each step by a nearest-mean-of-exemplars
classifier: label ``c``'s row becomes the normalised mean of the normalised features of the
memory's words labelled ``c`` (cosine NME, which a linear row computes exactly up to a per-word
positive factor), scaled to the trained rows' mean norm so a CRF's transitions keep their weight.
Labels with no word in memory keep their trained row.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence
from diancang.model.tagger import Tagger
from diancang.strategies.base import (
    ALL_HEADS,
    StepContext,
    StoredSentence,
    Strategy,
    StrategyState,
    linear_head,
    strategies,
)
from diancang.strategies.words import word_outputs


def herding(features: torch.Tensor, k: int, normalize: bool = True) -> list[int]:
    """Indices of ``k`` rows of ``features`` (n, d), in the order chosen: each pick makes the
    running mean of the picked rows closest to the mean of all rows (rows L2-normalised first)."""
    x = torch.nn.functional.normalize(features, dim=1) if normalize else features
    target = x.mean(0)
    available = torch.ones(len(x), dtype=torch.bool)
    total = torch.zeros_like(target)
    chosen: list[int] = []
    for i in range(1, min(k, len(x)) + 1):
        dist = ((target - (total + x) / i) ** 2).sum(1)
        dist[~available] = float("inf")
        j = int(dist.argmin())
        chosen.append(j)
        available[j] = False
        total += x[j]
    return chosen


@torch.no_grad()
def entity_features(
    model: Tagger, sentences: list[Sentence], label: str, batch_size: int = 64
) -> torch.Tensor:
    """(n, H): per sentence, the mean word feature over its mentions of type ``label``."""
    was_training = model.training
    model.eval()
    rows = []
    for lo in range(0, len(sentences), batch_size):
        chunk = sentences[lo : lo + batch_size]
        batch = model.batch([s.tokens for s in chunk])
        feats = model(**batch).features  # (B, W, H)
        n_words = feats.shape[1]
        for i, s in enumerate(chunk):
            words = [w for sp in s.spans if sp.label == label for w in range(sp.start, sp.end)]
            words = [w for w in words if w < n_words] or [0]
            rows.append(feats[i, words].mean(0))
    model.train(was_training)
    return torch.stack(rows) if rows else torch.zeros(0, 1)


@torch.no_grad()
def nme_head(model: Tagger, memory: list[Sentence]) -> dict[str, torch.Tensor]:
    """Head weight (C, H) and bias (C,): each label's row becomes the normalised mean of its
    normalised memory word features, scaled to the current rows' mean norm, with bias 0; rows of
    labels absent from memory are kept."""
    head = linear_head(model, "exemplars with classifier: nme")
    weight = head.weight.detach().clone()
    bias = head.bias.detach().clone()
    words = word_outputs(model, memory)
    if not words.tags:
        return {"head.weight": weight, "head.bias": bias}
    x = torch.nn.functional.normalize(words.features, dim=-1).to(weight.device)
    y = words.label_ids(model.labels).to(weight.device)
    scale = weight.norm(dim=1).mean()
    for c in range(weight.shape[0]):
        if bool((y == c).any()):
            weight[c] = scale * torch.nn.functional.normalize(x[y == c].mean(0), dim=0)
            bias[c] = 0.0
    return {"head.weight": weight, "head.bias": bias}


@strategies.register("exemplars", version=3)
class Exemplars(Strategy):
    """Replay memory of k sentences per type, chosen by herding on entity features."""

    name = "exemplars"
    resumes_mid_step = True
    heads = ALL_HEADS

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        per_type: int = Field(5, ge=1, description="Sentences kept per entity type.")
        all_o: int = Field(5, ge=0, description="Sentences without entities kept per step.")
        repeat: int = Field(
            1,
            ge=1,
            description="Times the memory joins each epoch's data (old types rarely occur in a "
            "later step's own sentences, so the memory may be their only supervision).",
        )
        classifier: Literal["head", "nme"] = Field(
            "head", description="Predict with the trained head, or nearest mean of exemplars."
        )

    params: Params

    class State(StrategyState):
        memory: list[StoredSentence] = Field(
            default_factory=list, description="Stored sentences, each with its own step's labels."
        )

    def begin_step(self, ctx: StepContext) -> dict[str, Any]:
        return {}  # "memory": the memory after this step, chosen once when training ends

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        return data + [m.sentence() for m in ctx.state.memory] * self.params.repeat

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        if self.params.classifier == "head":
            return None
        return nme_head(ctx.model, [m.sentence() for m in self._updated(ctx)])

    def end_step(self, ctx: StepContext) -> State:
        return self.State(memory=self._updated(ctx))

    def _updated(self, ctx: StepContext) -> list[StoredSentence]:
        """The memory after this step (chosen once per step)."""
        if "memory" not in ctx.work:
            ctx.work["memory"] = ctx.state.memory + self._select(ctx)
        return list(ctx.work["memory"])

    def _select(self, ctx: StepContext) -> list[StoredSentence]:
        """This step's exemplars: herding per new type, plus sentences without entities."""
        own = ctx.step.train
        picked: list[Sentence] = []
        for label in ctx.step.new_types:
            candidates = [s for s in own if label in s.types()]
            if not candidates:
                continue
            feats = entity_features(ctx.model, candidates, label)
            picked += [candidates[j] for j in herding(feats, self.params.per_type)]
        empty = [s for s in own if not s.spans]
        rng = random.Random(ctx.config.seed * 7919 + ctx.step.index)
        picked += rng.sample(empty, min(self.params.all_o, len(empty)))
        unique = {id(s): s for s in picked}  # a sentence chosen for two types is kept once
        return [StoredSentence.of(s) for s in unique.values()]
