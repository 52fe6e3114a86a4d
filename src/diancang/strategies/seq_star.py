"""``seq_star``: SEQ* (Zheng et al., "Learn or Recall? Revisiting Incremental Learning with
Pre-trained Language Models", ACL 2024): sequential fine-tuning made strong by freezing.

What the authors' code does (``models/SEQ.py`` with ``utils/optimizer.py``,
``utils/classifier.py`` and the ``SEQ_pre_warm_fix`` / ``SEQ_warm_fix`` configs the README names
as SEQ* with and without pre-allocated classifiers):

- **Encoder**: trained with the classifier (cross-entropy) for 3 warm-up epochs of the *first*
  task only, then frozen (learning rate 0 and ``requires_grad`` False) for the rest of that task
  (``training_epochs`` more epochs, 5 in the NER scripts, training only the classifier) and for
  every later task.
- **Old classifiers**: one classifier per task, each its own AdamW group at ``classifier_lr``
  (1e-3; the encoder's ``lr`` is 1e-5), constant rates. When task ``t`` starts, the group of task
  ``t-1`` gets learning rate 0, so every older classifier is frozen exactly (a rate of 0 also
  stops AdamW's decoupled weight decay).
- **O**: label 0 belongs to the first task's classifier (``1 + 2 * base`` BIO rows), so it is
  frozen with it from the second task on. Old and future types in a task's data read as O.
- **Head**: the NER scripts run both ``Linear`` and ``CosineLinear`` (normalised features and
  rows, no bias); no CRF anywhere.
- **Pre-allocation** (the ``pre`` variant): every task's classifier exists from the start and
  the logits of future ones join the softmax, so they learn as negatives before their task.

What this strategy does, in our terms (the head is one growable linear layer whose rows are BIO
labels, appended when a step starts):

- First step (the model knows no type but the step's): plain training. Its ``train.epochs`` of
  full fine-tuning stand for the paper's warm-up; the paper's extra classifier-only epochs on
  the first task are left out (our head trains with the encoder at ``train.head_lr``).
- Later steps: the encoder (and the BiLSTM, part of the feature extractor) gets
  ``requires_grad_(False)`` in ``begin_step``, before the runner builds its optimizer, so it
  is not in it and stays bit-identical. The head rows of old labels (O included by default, as
  in the paper) are frozen by a gradient hook that zeroes their rows and by copying their
  snapshot back after every update and in ``final_weights`` (AdamW's weight decay would
  otherwise shrink them a little: a learning rate of 0 in the paper). Only the new labels' rows
  train, at ``train.head_lr`` (the paper's ``classifier_lr``, 1e-3 by default in both), under
  the runner's schedule.
- A CRF, if the model has one (not in the paper): the start/end scores and transitions among
  frozen labels are frozen like the rows; the entries of new labels train (``freeze_crf``
  freezes all of it).
- Linear head only (cosine heads are not ours); no pre-allocation (rows of future types do not
  exist before their step: this is the paper's ``SEQ_warm_fix`` variant).
- ``end_step`` removes the hooks and restores every ``requires_grad`` it changed. Nothing is
  carried between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.hooks import RemovableHandle

from diancang.strategies.base import StepContext, Strategy, linear_head, strategies

if TYPE_CHECKING:
    from diancang.model.tagger import Tagger


@dataclass
class FrozenEntries:
    """Entries of one parameter held fixed: ``frozen`` (bool, broadcastable to the parameter)
    marks them, ``snapshot`` holds their values when the step began."""

    name: str
    param: nn.Parameter
    frozen: torch.Tensor
    snapshot: torch.Tensor
    handle: RemovableHandle

    @torch.no_grad()
    def restored(self) -> torch.Tensor:
        """The parameter's current values with the frozen entries put back (a new tensor)."""
        return torch.where(self.frozen, self.snapshot, self.param.detach())


@dataclass
class SeqStarWork:
    """One step's freezing: the partly frozen parameters and the ``requires_grad`` flags
    switched off (the parameters whose flag was True, to switch back on)."""

    entries: list[FrozenEntries] = field(default_factory=list)
    switched_off: list[nn.Parameter] = field(default_factory=list)


def frozen_labels(labels: list[str], new_types: list[str], old: bool, o: bool) -> torch.Tensor:
    """(C,) bool: the labels to freeze: the old types' ``B-``/``I-`` labels when ``old``, and
    ``O`` when ``o``."""
    new = set(new_types)
    return torch.tensor(
        [(o if lab == "O" else old and lab[2:] not in new) for lab in labels], dtype=torch.bool
    )


def _freeze_entries(name: str, param: nn.Parameter, frozen: torch.Tensor) -> FrozenEntries:
    """Hold ``param``'s ``frozen`` entries: a hook zeroes their gradient, a snapshot keeps them."""
    frozen = frozen.to(param.device)
    keep = (~frozen).to(param.dtype)

    def zero_frozen(grad: torch.Tensor) -> torch.Tensor:
        return grad * keep

    snapshot = param.detach().clone()
    return FrozenEntries(name, param, frozen, snapshot, param.register_hook(zero_frozen))


def _label_masks(model: Tagger, labels: torch.Tensor, crf: bool) -> list[tuple[str, torch.Tensor]]:
    """``(parameter name, frozen mask)`` for the head rows of ``labels`` (C,) and, with ``crf``,
    the CRF entries among them."""
    masks = [("head.weight", labels[:, None]), ("head.bias", labels)]
    if crf and model.crf is not None:
        masks += [
            ("crf.start", labels),
            ("crf.end", labels),
            ("crf.transitions", labels[:, None] & labels[None, :]),
        ]
    return masks


@strategies.register("seq_star", version=1)
class SeqStar(Strategy):
    """SEQ* (Zheng et al., ACL 2024): from the second step, train only the new labels' rows.

    The encoder (and BiLSTM) and the old labels' head rows, O included, are frozen."""

    name = "seq_star"
    heads = frozenset({"linear"})

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        freeze_encoder_after_first: bool = Field(
            True,
            description="From the second step on, freeze the encoder and the BiLSTM (if any); "
            "the first step trains them (the paper's warm-up).",
        )
        freeze_old_rows: bool = Field(
            True,
            description="From the second step on, hold the head rows (weight and bias) of the "
            "types learnt in earlier steps exactly as they were.",
        )
        freeze_o_row: bool = Field(
            True,
            description="From the second step on, hold the O row too (the authors' code does: "
            "O belongs to the first task's classifier).",
        )
        freeze_crf: bool = Field(
            False,
            description="With a CRF (not in the paper): freeze all of it from the second step "
            "on. False: freeze only the start/end scores and transitions among frozen labels, "
            "so the new labels' entries train.",
        )

    params: Params

    def begin_step(self, ctx: StepContext) -> SeqStarWork | None:
        """From the second step: switch off ``requires_grad`` of the frozen modules and hold
        the frozen head (and CRF) entries; None at the first step (plain training)."""
        model, p = ctx.model, self.params
        head = linear_head(model, "seq_star")
        new = set(ctx.step.new_types)
        if not [t for t in model.types if t not in new]:
            return None  # the first step (or a fresh model): nothing learnt to keep
        work = SeqStarWork()
        modules: list[nn.Module] = []
        if p.freeze_encoder_after_first:
            modules.append(model.encoder)
            modules += [m for m in (model.lstm, model.side) if m is not None]
        if p.freeze_crf and model.crf is not None:
            modules.append(model.crf)
        for module in modules:
            for param in module.parameters():
                if param.requires_grad:
                    param.requires_grad_(False)
                    work.switched_off.append(param)
        frozen = frozen_labels(model.labels, ctx.step.new_types, p.freeze_old_rows, p.freeze_o_row)
        assert frozen.numel() == head.out_features
        if bool(frozen.any()):
            params = dict(model.named_parameters())
            for name, mask in _label_masks(model, frozen, crf=not p.freeze_crf):
                param = params[name]
                if param.requires_grad:
                    work.entries.append(_freeze_entries(name, param, mask))
        return work

    @torch.no_grad()
    def after_update(self, ctx: StepContext) -> None:
        """Put the frozen entries back (only weight decay can have moved them)."""
        work: SeqStarWork | None = ctx.work
        if work is not None:
            for entry in work.entries:
                entry.param.copy_(entry.restored())

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        """The partly frozen parameters with their frozen entries exactly as the step began."""
        work: SeqStarWork | None = ctx.work
        if work is None or not work.entries:
            return None
        return {entry.name: entry.restored() for entry in work.entries}

    def end_step(self, ctx: StepContext) -> None:
        """Remove the hooks and switch ``requires_grad`` back on where it was switched off."""
        work: SeqStarWork | None = ctx.work
        if work is not None:
            for entry in work.entries:
                entry.handle.remove()
            for param in work.switched_off:
                param.requires_grad_(True)
        return None
