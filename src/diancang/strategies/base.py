"""The strategy protocol: hooks that *return* their contributions to the one training loop.

A strategy never mutates the learner. Per step the learner calls, for each strategy in order:

1. ``train_data(ctx, data) -> data``: the step's training sentences, transformed (e.g. ``joint``
   adds all earlier data fully labelled; a replay strategy adds its memory).
2. Per training batch:
   ``targets(ctx, batch, out, labels) -> labels``: the word labels (B, W) the base loss is
   computed on (e.g. ``distill`` sets ``O`` tokens to -100 and distils them instead);
   ``loss_terms(ctx, batch, out) -> {name: scalar tensor}``: extra loss terms added to the base
   loss (e.g. distillation from ``ctx.previous``);
   ``after_update(ctx)``: called after each optimizer step (e.g. ``ema`` updates its average).
3. ``final_weights(ctx) -> state dict | None``: weights to load into the model before it is
   evaluated and saved (e.g. ``ema``'s average).
4. ``end_step(ctx) -> state``: JSON-serialisable state handed back as ``ctx.state`` at the next
   step (and saved in checkpoints, so a resumed run gets it too).

Hyperparameters are a pydantic ``Params`` model per strategy (unknown keys rejected), filled from
``strategy_params.<name>`` in the run config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from diancang.config import format_validation_error
from diancang.errors import ConfigError
from diancang.registry import Registry

if TYPE_CHECKING:
    from diancang.config import RunConfig
    from diancang.data.record import Sentence
    from diancang.model.head import GrowableLinear
    from diancang.model.tagger import Tagger, TaggerOutput
    from diancang.stream import Step


#: Every head; strategies that only add data or average weights work with all of them.
ALL_HEADS = frozenset({"linear", "label_semantic", "prompt_span"})


class NoParams(BaseModel):
    """A strategy without hyperparameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What a hook may read about the current step (read-only by convention).

    ``pool`` holds every training sentence unmasked and ``assignment[i]`` the step sentence ``i``
    belongs to (-1: none), so a strategy can see earlier steps' data only when the protocol
    allows it (``joint`` is the upper bound that does).
    """

    step: Step
    model: Tagger
    previous: Tagger | None
    config: RunConfig
    pool: list[Sentence]
    assignment: list[int]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def own_indices(self) -> list[int]:
        """Indices into ``pool`` of this step's training sentences."""
        return [i for i, a in enumerate(self.assignment) if a == self.step.index]


def linear_head(model: Tagger, who: str) -> GrowableLinear:
    """The model's linear head, for strategies that rewrite its rows (a clear error with the
    label-semantic head, whose rows are not parameters)."""
    from diancang.model.head import GrowableLinear

    if not isinstance(model.head, GrowableLinear):
        raise ConfigError(
            f"{who} rewrites the linear head's rows, but this model has the "
            f"{model.spec.head!r} head",
            fix=f"use model.head: linear with {who}, or leave {who} out",
        )
    return model.head


class Strategy:
    """Base class: every hook is a no-op; subclasses override what they contribute."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Whether the learner must keep a frozen copy of the previous step's model as ``previous``.
    needs_previous: ClassVar[bool] = False
    #: Whether ``out.hidden_states`` (every encoder layer) must be computed in training.
    needs_hidden_states: ClassVar[bool] = False
    #: The heads it works with (``prompt_span`` logits are pointers, not label scores).
    heads: ClassVar[frozenset[str]] = frozenset({"linear", "label_semantic"})

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_config(cls, raw: dict[str, Any] | None) -> Strategy:
        """Build from ``strategy_params.<name>``, validating it against :attr:`Params`."""
        try:
            params = cls.Params.model_validate(raw or {})
        except ValidationError as err:
            raise ConfigError(
                format_validation_error(err, f"strategy_params.{cls.name}"),
                fix=f"see the {cls.name} strategy's parameters in the docs",
            ) from None
        return cls(params)

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        """The step's training sentences, possibly transformed or extended."""
        return data

    def loss_terms(
        self, ctx: StepContext, batch: dict[str, torch.Tensor], out: TaggerOutput
    ) -> dict[str, torch.Tensor]:
        """Extra loss terms for one batch (scalars, already weighted)."""
        return {}

    def targets(
        self,
        ctx: StepContext,
        batch: dict[str, torch.Tensor],
        out: TaggerOutput,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """The labels (B, W) of the base loss for this batch (-100: not in the base loss)."""
        return labels

    def after_update(self, ctx: StepContext) -> None:
        """Called after every optimizer step."""

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        """A state dict (or part of one) to load into the model when the step's training ends."""
        return None

    def end_step(self, ctx: StepContext) -> dict[str, Any]:
        """State to carry to the next step (JSON-serialisable)."""
        return dict(ctx.state)


#: The strategy registry; built-ins are imported on first lookup.
strategies: Registry[type[Strategy]] = Registry(
    "strategy",
    builtins=tuple(
        f"diancang.strategies.{m}"
        for m in (
            "finetune",
            "joint",
            "distill",
            "ema",
            "fgm",
            "exemplars",
            "cpfd",
            "weight_align",
            "bic",
            "relabel_o",
            "cfner",
            "synthetic_replay",
            "inversion_replay",
            "review",
        )
    ),
)


def build_strategies(names: list[str], params: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instantiate the named strategies (in order) with their validated parameters."""
    unknown = set(params) - set(names)
    if unknown:
        raise ConfigError(
            f"strategy_params names strategies that are not in 'strategies': {sorted(unknown)}",
            fix="add them to 'strategies' or remove their parameters",
        )
    if len(set(names)) != len(names):
        raise ConfigError("a strategy is listed twice", fix="list each strategy once")
    return [strategies.get(n).from_config(params.get(n)) for n in names]


def check_heads(built: list[Strategy], head: str) -> None:
    """Refuse strategies that cannot work with the model's ``head``."""
    for s in built:
        if head not in s.heads:
            usable = sorted(n for n in strategies.names() if head in strategies.get(n).heads)
            raise ConfigError(
                f"strategy {s.name} reads the model's outputs as label scores, which the "
                f"{head} head does not give",
                fix=f"with model.head: {head} use strategies among {usable}, or another head",
            )
