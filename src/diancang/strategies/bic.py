"""``bic``: Bias Correction (BiC, Wu et al., CVPR 2019) for the growable head.

A head trained on one step's data favours that step's new labels. After every step from the
second on, BiC corrects the new labels' logits as ``alpha * z + beta`` with two scalars fitted by
cross-entropy on a small **held-out** set the model never trained on: ``per_type`` sentences per
type kept from each step's *dev* split (with that step's labels). The correction is folded into
the head (new rows: ``w * alpha``, ``b * alpha + beta``), so the saved model is an ordinary tagger.

The held-out sentences of old steps carry only their own step's labels: a later type inside them
reads as ``O`` (the protocol's unlabelled-entity problem, here on a few sentences), and the fit
then pulls the new logits down on exactly the words where they are right. ``old_o="ignore"``
leaves the ``O`` words of the earlier steps' sentences out of the fit: it then sees their
entities and every word of this step's own held-out sentences.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence
from diancang.strategies.base import (
    StepContext,
    StoredSentence,
    Strategy,
    StrategyState,
    linear_head,
    strategies,
)
from diancang.strategies.words import WordOutputs, word_outputs


def fit_targets(
    words: WordOutputs, labels: list[str], n_old: int, old_o: Literal["keep", "ignore"]
) -> torch.Tensor:
    """(N,) gold label ids of the held-out words; with ``old_o="ignore"`` the ``O`` words of
    the first ``n_old`` sentences (the earlier steps') are -100, left out of the fit."""
    gold = words.label_ids(labels)
    if old_o == "ignore":
        pairs = zip(words.where, words.tags, strict=True)
        old = torch.tensor([s < n_old and t == "O" for (s, _), t in pairs])
        gold[old] = -100
    return gold


def fit_bias(
    logits: torch.Tensor,
    labels: torch.Tensor,
    new_rows: list[int],
    steps: int = 200,
    lr: float = 0.05,
) -> tuple[float, float]:
    """``(alpha, beta)`` minimising the cross-entropy of ``labels`` (N,) under ``logits`` (N, C)
    whose ``new_rows`` columns are replaced by ``alpha * z + beta`` (Adam from (1, 0))."""
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.Adam([params], lr=lr)
    new = torch.zeros(logits.shape[1], dtype=torch.bool)
    new[new_rows] = True
    z = logits.detach().float()
    for _ in range(steps):
        corrected = torch.where(new, params[0] * z + params[1], z)
        loss = torch.nn.functional.cross_entropy(corrected, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    alpha, beta = params.detach().tolist()
    return float(alpha), float(beta)


@strategies.register("bic", version=2)
class BiC(Strategy):
    """Fit alpha, beta on held-out dev sentences and rescale the new labels' logits (BiC)."""

    name = "bic"
    resumes_mid_step = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        per_type: int = Field(10, ge=1, description="Held-out dev sentences kept per type.")
        steps: int = Field(200, ge=1, description="Adam steps fitting alpha and beta.")
        lr: float = Field(0.05, gt=0, description="Learning rate of that fit.")
        old_o: Literal["keep", "ignore"] = Field(
            "keep",
            description="O words of the earlier steps' held-out sentences: 'keep' fits on them "
            "(a later type inside reads as O), 'ignore' leaves them out of the fit.",
        )

    params: Params

    class State(StrategyState):
        held_out: list[StoredSentence] = Field(
            default_factory=list, description="Held-out dev sentences of the earlier steps."
        )

    def _held_out(self, ctx: StepContext) -> list[Sentence]:
        """This step's share of the held-out set: up to ``per_type`` dev sentences per new type."""
        rng = random.Random(ctx.config.seed * 104729 + ctx.step.index)
        picked: list[Sentence] = []
        for label in ctx.step.new_types:
            having = [s for s in ctx.step.dev if label in s.types() and s not in picked]
            picked += rng.sample(having, min(self.params.per_type, len(having)))
        return picked

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        old = [m.sentence() for m in ctx.state.held_out]
        new = self._held_out(ctx)
        if not old or not new:
            return None
        labels = ctx.model.labels
        step_new = set(ctx.step.new_types)
        new_rows = [i for i, lab in enumerate(labels) if lab != "O" and lab[2:] in step_new]
        words = word_outputs(ctx.model, old + new)
        gold = fit_targets(words, labels, len(old), self.params.old_o)
        alpha, beta = fit_bias(words.logits, gold, new_rows, self.params.steps, self.params.lr)
        head = linear_head(ctx.model, "bic")
        weight = head.weight.detach().clone()
        bias = head.bias.detach().clone()
        weight[new_rows] *= alpha
        bias[new_rows] = bias[new_rows] * alpha + beta
        return {"head.weight": weight, "head.bias": bias}

    def end_step(self, ctx: StepContext) -> State:
        mine = [StoredSentence.of(s) for s in self._held_out(ctx)]
        return self.State(held_out=ctx.state.held_out + mine)
