"""``der``: dynamically expandable representations (Yan et al., CVPR 2021) for tagging.

Every step after the first adds a **branch**, a copy of the newest branch of the top
``layers`` transformer layers (:mod:`diancang.model.der`); the trunk (the bottom layers and the
embeddings) and every older branch are frozen, so what earlier steps learned sits in layers
nothing overwrites. The head classifies every type from all branches' states side by side; its
new columns start at zero, so the model predicts as before until the new branch trains. An
**auxiliary head** on the new branch alone tells the step's new labels from ``O`` and from "an
old type" (one class), so the new branch learns features of its own (weight ``aux_weight``).
With ``mask``, a learnable gate per channel of the new branch (``sigmoid``) and an L1 penalty on
it (``sparsity``) mark channels to prune: at the end of the step the gate is folded into the
head's columns and channels below ``prune_below`` are zeroed (counted in the report).

The head's old rows train on the step's data, where old types appear as ``O``: compose with a
replay memory (``[exemplars, der]``: the memory is then part of the data ``der`` sees), as the
paper does. Inference runs the trunk once and every branch after it, so its cost grows with the
steps; with ``max_branches``, a step that ends with more branches **consolidates**: a one-branch
copy (the newest branch and its head columns) is distilled from the whole model on the step's
data (memory included) for ``consolidate_epochs``, and replaces it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diancang.data.record import Sentence
from diancang.strategies.base import (
    StepBatch,
    StepContext,
    Strategy,
    StrategyState,
    Target,
    linear_head,
    strategies,
)


class Params(BaseModel):
    """Hyperparameters of ``der``."""

    model_config = ConfigDict(extra="forbid")
    layers: int = Field(2, ge=1, description="Top transformer layers copied per step.")
    aux_weight: float = Field(1.0, ge=0, description="Weight of the auxiliary head's loss.")
    mask: bool = Field(False, description="Learn a channel gate on the new branch (pruning).")
    sparsity: float = Field(1e-3, ge=0, description="Weight of the gate's L1 penalty.")
    prune_below: float = Field(0.01, ge=0, lt=1, description="Gates below this are pruned.")
    max_branches: int | None = Field(
        None, ge=1, description="Consolidate into one branch when a step ends with more."
    )
    consolidate_epochs: int = Field(2, ge=1, description="Epochs of the consolidation.")
    consolidate_lr: float = Field(1e-4, gt=0, description="Its learning rate (branch; head x10).")


@dataclass
class DerWork:
    """One step's auxiliary head, label map, gate and the parameters switched off."""

    aux: nn.Linear
    aux_of: torch.Tensor  # (C,) label id -> auxiliary class (0: O, 1: old type, 2..: new)
    size: int  # a branch's width
    gate: nn.Parameter | None = None
    hook: Any = None
    switched_off: list[nn.Parameter] = field(default_factory=list)
    data: list[Sentence] = field(default_factory=list)  # the step's data, memory included


@strategies.register("der", version=1)
class Der(Strategy):
    """A branch of the top layers per step, older ones frozen; an auxiliary head on the new
    branch; an optional channel gate for pruning."""

    name = "der"
    Params = Params
    resumes_mid_step = True
    heads = frozenset({"linear"})

    class State(StrategyState):
        """Each step's report (branches, trainable parameters, pruned channels)."""

        required = False
        history: list[dict[str, Any]] = Field(default_factory=list)

    def begin_step(self, ctx: StepContext) -> DerWork:
        """Add this step's branch (the first step turns the top layers into branch 0) and
        freeze the trunk and the older branches."""
        p: Params = self.params  # type: ignore[assignment]
        model = ctx.model
        linear_head(model, self.name)
        new_types = set(ctx.step.new_types)
        old = [t for t in model.types if t not in new_types]
        if model.branches is None:
            model.add_branch(p.layers)
        if old:  # a later step: a branch of its own, everything older frozen
            branch = model.add_branch(p.layers)
            assert model.branches is not None
            keep = {id(q) for q in branch.parameters()}
            frozen = [*model.encoder.parameters(), *model.branches.parameters()]
            off = [q for q in frozen if q.requires_grad and id(q) not in keep]
        else:
            off = []
        for q in off:
            q.requires_grad_(False)
        size = int(getattr(model.encoder, "config").hidden_size)  # noqa: B009
        classes = ["O", "old", *(lab for lab in model.labels if lab[2:] in new_types)]
        aux_of = torch.tensor([classes.index(lab) if lab in classes else 1 for lab in model.labels])
        work = DerWork(nn.Linear(size, len(classes)), aux_of, size, switched_off=off)
        if p.mask and old:
            work.gate = nn.Parameter(torch.full((size,), 3.0, device=model.device))
            gate = work.gate

            def scale(module: nn.Module, args: Any, out: Any) -> Any:
                if isinstance(out, tuple):
                    return (out[0] * torch.sigmoid(gate), *out[1:])
                return out * torch.sigmoid(gate)

            work.hook = branch[-1].register_forward_hook(scale)
        return work

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        """Unchanged; kept for a consolidation at the end of the step."""
        ctx.work.data = data
        return data

    def modules(self, ctx: StepContext) -> list[nn.Module]:
        work: DerWork = ctx.work
        holder = nn.ParameterList([work.gate]) if work.gate is not None else None
        return [work.aux] if holder is None else [work.aux, holder]

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        """The auxiliary head's cross-entropy on the new branch's word states, and the gate's
        L1 penalty."""
        p: Params = self.params  # type: ignore[assignment]
        work: DerWork = ctx.work
        feats = batch.out.features[..., -work.size :]  # (B, W, H): the newest branch
        labels = target.labels
        known = labels >= 0
        aux_labels = torch.full_like(labels, -100)
        aux_labels[known] = work.aux_of.to(labels.device)[labels[known]]
        logits = work.aux(feats)
        terms = {}
        if bool(known.any()) and p.aux_weight > 0:
            loss = F.cross_entropy(logits.flatten(0, 1), aux_labels.flatten(), ignore_index=-100)
            terms["der_aux"] = p.aux_weight * loss
        if work.gate is not None:
            terms["der_sparsity"] = p.sparsity * torch.sigmoid(work.gate).sum()
        return terms

    def end_step(self, ctx: StepContext) -> State:
        """Fold the gate into the head (pruning the channels below ``prune_below``), switch the
        frozen parameters back on, and report."""
        p: Params = self.params  # type: ignore[assignment]
        work: DerWork = ctx.work
        model = ctx.model
        pruned = None
        if work.gate is not None:
            work.hook.remove()
            with torch.no_grad():
                g = torch.sigmoid(work.gate).to(model.device)
                g = torch.where(g < p.prune_below, torch.zeros_like(g), g)
                head = linear_head(model, self.name)
                head.weight[:, -work.size :] *= g
                pruned = int((g == 0).sum())
        for q in work.switched_off:
            q.requires_grad_(True)
        assert model.branches is not None
        consolidated = False
        if p.max_branches and len(model.branches.branches) > p.max_branches and work.data:
            consolidate(ctx, work.data, work.size, p)
            consolidated = True
        report = {
            "step": ctx.step.index,
            "branches": len(model.branches.branches),
            "branch_parameters": sum(q.numel() for q in model.branches.branches[-1].parameters()),
            "pruned_channels": pruned,
            "consolidated": consolidated,
        }
        state = ctx.state
        assert isinstance(state, Der.State)
        return self.State(history=[*state.history, report])


def consolidate(ctx: StepContext, data: list[Sentence], size: int, p: Params) -> None:
    """Distil the whole model into one branch (a copy of the newest, with its head columns;
    trunk frozen) on ``data``, and put that branch and head in the model's place."""
    from diancang.learn.distil import distil_into
    from diancang.model.der import Branches

    model = ctx.model
    assert model.branches is not None
    teacher = copy.deepcopy(model).eval()
    student = copy.deepcopy(model)
    assert student.branches is not None
    newest = student.branches.branches[-1]
    assert isinstance(newest, nn.ModuleList)
    student.branches = Branches([newest])
    head = linear_head(student, "der")
    head.weight = nn.Parameter(head.weight.data[:, -size:].clone())
    distil_into(ctx, student, teacher, data, p.consolidate_epochs, p.consolidate_lr)
    model.branches, model.head = student.branches, student.head
    model.feature_size = size
    model.spec.der_branches = 1
