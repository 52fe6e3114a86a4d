"""The strategy protocol: hooks that *return* their contributions to the one training loop.

A strategy object holds only its hyperparameters; what it computes lives in values the hooks
return. Per step the step runner calls, for each strategy in order:

1. ``begin_step(ctx) -> work``: values computed once at the start of the step (e.g. ``cpfd``'s
   entropy thresholds, ``ema``'s running average); the runner hands them back as ``ctx.work``.
2. ``train_data(ctx, data) -> data``: the step's training sentences, transformed (e.g. ``joint``
   adds all earlier data fully labelled; a replay strategy adds its memory).
3. Per training batch (``batch``: the inputs, the student's output, the teacher's output once):
   ``targets(ctx, batch, target) -> target``: the word labels (B, W) and optional per-word
   weights the base loss is computed on (e.g. ``distill`` sets ``O`` words to -100);
   ``loss_terms(ctx, batch, target) -> {name: scalar}``: extra loss terms; ``target`` is the
   resolved one, after every strategy's ``targets`` (so ``fgm`` perturbs the same supervision);
   ``after_update(ctx)``: after each optimizer step (e.g. ``ema`` updates its average).
4. ``final_weights(ctx) -> state dict | None``: weights to load into the model before it is
   evaluated and saved (e.g. ``ema``'s average).
5. ``end_step(ctx) -> State | None``: the strategy's carried state (a typed pydantic model of
   sentences and blob hashes, never pool indices or paths). It is saved with the version the step
   produces and handed back as ``ctx.state`` when a step starts from that version.
6. ``epoch_state(ctx) -> dict`` / ``load_epoch_state(ctx, state)``: for a strategy with
   ``resumes_mid_step``, what of ``ctx.work`` a step needs to go on after its last whole epoch
   (saved after every epoch by ``diancang run``; see ``diancang.learn.resume``).

Hyperparameters are a pydantic ``Params`` model per strategy (unknown keys rejected), filled from
``strategy_params.<name>`` in the run config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from diancang.config import format_validation_error
from diancang.data.record import Sentence, Span
from diancang.errors import ConfigError
from diancang.registry import Registry

if TYPE_CHECKING:
    from diancang.config import RunConfig
    from diancang.learn.blobs import Blobs
    from diancang.model.head import GrowableLinear
    from diancang.model.tagger import Tagger, TaggerOutput
    from diancang.stream import Step


#: Every head; strategies that only add data or average weights work with all of them.
ALL_HEADS = frozenset({"linear", "label_semantic", "prompt_span"})


class NoParams(BaseModel):
    """A strategy without hyperparameters."""

    model_config = ConfigDict(extra="forbid")


class StrategyState(BaseModel):
    """Base of a strategy's carried state: JSON data, self-contained (no indices, no paths)."""

    model_config = ConfigDict(extra="forbid")
    #: Whether a step must find this state in the version it starts from (False: a report
    #: that may start empty, e.g. a cost history).
    required: ClassVar[bool] = True

    def blobs(self) -> list[str]:
        """The content hashes of the blobs this state refers to (saved with the version)."""
        return []


class StoredSentence(BaseModel):
    """A sentence kept in a strategy's state: its tokens and its labelled spans."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[str]
    spans: list[tuple[int, int, str]] = []

    @classmethod
    def of(cls, s: Sentence) -> StoredSentence:
        return cls(tokens=list(s.tokens), spans=[(sp.start, sp.end, sp.label) for sp in s.spans])

    def sentence(self) -> Sentence:
        return Sentence(tokens=list(self.tokens), spans=[Span(a, b, t) for a, b, t in self.spans])


@dataclass
class Target:
    """What the base loss is computed on: ``labels`` (B, W) label ids (-100: left out) and
    optional per-word ``weights`` (B, W)."""

    labels: torch.Tensor
    weights: torch.Tensor | None = None


@dataclass
class StepBatch:
    """One training batch as the hooks see it: ``inputs`` (the collated tensors, gold
    ``labels`` included), the student's output ``out``, and :attr:`teacher`, the previous
    model's output, asked of ``teacher_fn`` at most once per batch (the step runner's
    :class:`~diancang.learn.teacher.TeacherCache` computes it once per sentence and step)."""

    inputs: dict[str, torch.Tensor]
    out: TaggerOutput
    teacher_fn: Callable[[dict[str, torch.Tensor]], TaggerOutput] | None = None
    _teacher: TaggerOutput | None = None

    @property
    def teacher(self) -> TaggerOutput | None:
        """The previous model's output on this batch (None without a previous model)."""
        if self.teacher_fn is None:
            return None
        if self._teacher is None:
            self._teacher = self.teacher_fn(self.inputs)
        return self._teacher


@dataclass
class StepContext:
    """What a hook may read about the current step (read-only by convention).

    ``pool`` holds the training sentences the stream was split from, unmasked, and
    ``assignment[i]`` the step of sentence ``i`` (-1: none): only ``joint``, the upper bound that
    breaks the protocol on purpose, reads them. ``state`` is this strategy's carried state (its
    ``State()`` at the first step), ``work`` what its ``begin_step`` returned, ``blobs`` where
    blobs are put and found.
    """

    step: Step
    model: Tagger
    previous: Tagger | None
    config: RunConfig
    pool: list[Sentence]
    assignment: list[int]
    blobs: Blobs
    state: Any = None
    work: Any = None
    fit: Any = None  # the runner's training loop (``learn.runner.Fit``); review uses it

    @property
    def device(self) -> torch.device:
        return self.model.device


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
    #: The carried state's type; None for a strategy that carries nothing between steps.
    State: ClassVar[type[StrategyState] | None] = None
    #: Whether the learner must keep a frozen copy of the previous step's model as ``previous``.
    needs_previous: ClassVar[bool] = False
    #: Whether ``out.hidden_states`` (every encoder layer) must be computed in training.
    needs_hidden_states: ClassVar[bool] = False
    #: The heads it works with (``prompt_span`` logits are pointers, not label scores).
    heads: ClassVar[frozenset[str]] = frozenset({"linear", "label_semantic"})
    #: Whether a killed step may go on after its last whole epoch
    #: (:mod:`diancang.learn.resume`): the strategy's hooks change nothing during a step but
    #: its :meth:`modules`' weights, or it saves the rest with :meth:`epoch_state`. False: the
    #: step starts over.
    resumes_mid_step: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    def id(self) -> str:
        """``name@version``, as written in resolved configs and archive rows."""
        return f"{self.name}@{strategies.entry(self.name).version}"

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

    def begin_step(self, ctx: StepContext) -> Any:
        """Values computed once at the start of the step, handed back as ``ctx.work``."""
        return None

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        """The step's training sentences, possibly transformed or extended."""
        return data

    def texts(self, seed: int, lang: str, latin_words: bool) -> list[list[str]]:
        """Token lists the strategy will encode besides the run's data (auxiliary data), so
        that vocabulary trimming keeps their pieces (``lang``, ``latin_words``: the run's)."""
        return []

    def modules(self, ctx: StepContext) -> list[torch.nn.Module]:
        """Trainable modules of the strategy's own for this step (e.g. auxiliary task heads),
        optimised beside the model with the head's learning rate; not part of the model."""
        return []

    def targets(self, ctx: StepContext, batch: StepBatch, target: Target) -> Target:
        """The base loss's labels (B, W) and weights for this batch (-100: not in the loss)."""
        return target

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        """Extra loss terms for one batch (scalars, already weighted); ``target`` is resolved."""
        return {}

    def after_update(self, ctx: StepContext) -> None:
        """Called after every optimizer step."""

    def epoch_state(self, ctx: StepContext) -> dict[str, Any]:
        """What the hooks have accumulated by the end of an epoch, as JSON, saved so that a
        killed step can go on (the :meth:`modules`' weights are saved by the runner)."""
        return {}

    def load_epoch_state(self, ctx: StepContext, state: dict[str, Any]) -> None:
        """Put back what :meth:`epoch_state` returned (into ``ctx.work``)."""

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        """A state dict (or part of one) to load into the model when the step's training ends."""
        return None

    def end_step(self, ctx: StepContext) -> StrategyState | None:
        """The state to carry to the next step (saved with the version)."""
        return None

    def parse_state(self, raw: dict[str, Any]) -> StrategyState:
        """The carried state from its JSON form."""
        assert self.State is not None
        return self.State.model_validate(raw)


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
            "seq_star",
            "rdp",
            "multitask",
            "adapt",
            "der",
            "ctr",
        )
    ),
)


def split_id(item: str) -> tuple[str, int | None]:
    """``"cpfd@1"`` -> ``("cpfd", 1)``; ``"cpfd"`` -> ``("cpfd", None)``."""
    name, _, version = item.partition("@")
    if not version:
        return name, None
    if not version.isdigit():
        raise ConfigError(
            f"strategy {item!r}: the version after '@' must be a whole number",
            fix=f"write {name} or {name}@1",
        )
    return name, int(version)


def build_strategies(names: list[str], params: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instantiate the named strategies (``name`` or ``name@version``, in order) with their
    validated parameters; a version other than the registered one is refused."""
    parsed = [split_id(n) for n in names]
    plain = [n for n, _ in parsed]
    unknown = set(params) - set(plain)
    if unknown:
        raise ConfigError(
            f"strategy_params names strategies that are not in 'strategies': {sorted(unknown)}",
            fix="add them to 'strategies' or remove their parameters",
        )
    if len(set(plain)) != len(plain):
        raise ConfigError("a strategy is listed twice", fix="list each strategy once")
    for name, version in parsed:
        entry = strategies.entry(name)
        if version is not None and version != entry.version:
            raise ConfigError(
                f"the config asks for {name}@{version}, but this diancang has {name}@"
                f"{entry.version}",
                fix=f"use {name}@{entry.version} (or plain {name}), or the diancang version "
                "that made the config",
            )
    return [strategies.get(n).from_config(params.get(n)) for n in plain]


def resolve(config: RunConfig) -> tuple[RunConfig, list[Strategy]]:
    """The config's strategies built, and the config with them resolved: ``strategies`` as
    ``name@version`` and ``strategy_params`` holding every parameter (defaults filled in), the
    form written to ``config.yaml``, every version folder and the archive."""
    built = build_strategies(config.strategies, config.strategy_params)
    update = {
        "strategies": [s.id for s in built],
        "strategy_params": {s.name: s.params.model_dump(mode="json") for s in built},
    }
    return config.model_copy(update=update), built


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
