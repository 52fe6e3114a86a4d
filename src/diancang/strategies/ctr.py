"""``ctr``: CTR's continual-learning plugins (Ke et al., NeurIPS 2021) on a frozen encoder.

Each step is a task with plugins of its own in every layer (:mod:`diancang.model.ctr`): task
capsules with transfer routing from the earlier tasks' capsules, and an adapter gated by the
task's hard-attention masks. The encoder, the earlier tasks' capsules, routing matrices,
projections and masks are frozen; adapter units an earlier task uses, the head rows of the
earlier types and the ``O`` row are put back after every update, so an earlier task's outputs
stay bit-identical (task-incremental: ``predict --types``). Within a step the mask slope
anneals from ``1/s_max`` to ``s_max`` over the step's updates (``anneal``), and a penalty
(``mask_weight``) keeps the new task's masks off units nobody uses yet (HAT); the memory's
entities of earlier tasks are ``O`` to the new task's expert. Class-incremental
prediction runs every task's plugins and merges them per word (:func:`~diancang.model.ctr.
task_forward`), so its cost grows with the tasks; with ``max_tasks``, a step that ends with more
**consolidates**: the merged passes are distilled (:func:`~diancang.learn.distil.distil_into`)
into fresh plugins of one task holding every type so far, trained as a first task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diancang.data.record import Sentence
from diancang.model import ctr
from diancang.model.arbiter import Arbiter
from diancang.model.tagger import Tagger
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
    """Hyperparameters of ``ctr``."""

    model_config = ConfigDict(extra="forbid")
    adapter: int = Field(128, ge=4, description="Adapter width of a plugin.")
    capsule: int = Field(8, ge=2, description="Task capsule size.")
    capsule_hidden: int = Field(32, ge=2, description="Hidden width of a task capsule.")
    s_max: float = Field(400.0, gt=1, description="Final slope of the mask's sigmoid (HAT).")
    mask_weight: float = Field(0.75, ge=0, description="Weight of the mask penalty (HAT).")
    anneal: Literal["step", "epoch"] = Field(
        "step",
        description="Anneal the mask slope from 1/s_max to s_max once over the whole step, or "
        "over each epoch as HAT does (the masks then turn soft again at every epoch's start, "
        "which costs the plugins most of an epoch each time).",
    )
    arbiter: bool = Field(
        True, description="Train an arbiter over the tasks' experts at each step (else a rule)."
    )
    arbiter_epochs: int = Field(200, ge=1, description="Full-batch epochs of the arbiter.")
    arbiter_balance: bool = Field(
        True,
        description="Weigh each task's words to count the same in the arbiter's loss (the "
        "newest task has a whole step's data, the older ones only the memory).",
    )
    max_tasks: int | None = Field(
        None, ge=1, description="Consolidate into one task when a step ends with more."
    )
    consolidate_epochs: int = Field(2, ge=1, description="Epochs of the consolidation.")
    consolidate_lr: float = Field(
        1e-4, gt=0, description="Its learning rate (the plugins and the head train at 10 x)."
    )


@dataclass
class CtrWork:
    """The step's task, its frozen entries (parameter, mask, value) and the batch counter."""

    task: int
    keep: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    switched_off: list[nn.Parameter] = field(default_factory=list)
    batch: int = 0
    batches: int = 1
    data: list[Sentence] = field(default_factory=list)  # the step's data, memory included


@strategies.register("ctr", version=5)
class Ctr(Strategy):
    """CTR plugins: per-task capsules with transfer routing and hard-attention-masked adapters
    on a frozen encoder."""

    name = "ctr"
    Params = Params
    resumes_mid_step = True
    heads = frozenset({"linear"})

    class State(StrategyState):
        """Each step's report."""

        required = False
        history: list[dict[str, Any]] = Field(default_factory=list)

    def begin_step(self, ctx: StepContext) -> CtrWork:
        """Add the step's task; freeze the encoder and everything earlier tasks rely on."""
        p: Params = self.params  # type: ignore[assignment]
        model = ctx.model
        head = linear_head(model, self.name)
        sizes = [p.adapter, p.capsule, p.capsule_hidden]
        task = ctr.add_task(model, list(ctx.step.new_types), sizes)
        plugins = model.plugins
        assert plugins is not None
        work = CtrWork(task)
        frozen: list[nn.Parameter] = list(model.encoder.parameters())
        for plugin in plugins.plugins:
            assert isinstance(plugin, ctr.Plugin)
            for old in range(task):
                frozen += [*plugin.capsules[old].parameters(), plugin.routes[old]]
                frozen += [*plugin.larger[old].parameters(), plugin.e1[old], plugin.e2[old]]
            for name, mask in plugin.protected().items():
                param = plugin.get_parameter(name)
                if bool(mask.any()):
                    work.keep.append((param, mask, param.detach().clone()))
        if task:  # the head rows of earlier types and O
            old_rows = ~ctr.task_labels(model, task).to(head.weight.device)
            old_rows[0] = True
            for param in (head.weight, head.bias):
                mask = old_rows[:, None].expand_as(param) if param.dim() == 2 else old_rows
                work.keep.append((param, mask, param.detach().clone()))
        for q in frozen:
            if q.requires_grad:
                q.requires_grad_(False)
                work.switched_off.append(q)
        plugins.run.train_task = task
        self._slope(ctx, work)
        return work

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        """Unchanged; kept to train the arbiter at the end of the step, and counted (memory
        included) for the slope's schedule."""
        ctx.work.data = data
        self._slope(ctx, ctx.work)
        return data

    def _slope(self, ctx: StepContext, work: CtrWork) -> None:
        """The slope of update ``work.batch``, over the updates of the step's training data
        (the step's sentences until :meth:`train_data` has counted the memory too)."""
        p: Params = self.params  # type: ignore[assignment]
        n = len(work.data) or len(ctx.step.train)
        batches, once = slope_period(
            n, ctx.config.train.batch_size, p.anneal, ctx.config.train.epochs_for
        )
        assert ctx.model.plugins is not None
        ctx.model.plugins.anneal(p.s_max, work.batch, batches, once)

    def targets(self, ctx: StepContext, batch: StepBatch, target: Target) -> Target:
        """Another task's types are ``O`` for the training task's expert: the memory's old
        entities teach it what is not its own. (Left as they were, their labels would be
        ones its pass masks out, whose loss pushes every label it allows alike and so flattens
        its ``O`` on them: it would learn to claim them.)"""
        labels = target.labels  # (B, W)
        keep = ctr.task_labels(ctx.model, ctx.work.task).to(labels.device)  # (C,)
        other = (labels >= 0) & ~keep[labels.clamp(min=0)]
        return replace(target, labels=labels.masked_fill(other, 0))

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        """HAT's penalty: the share of units the new task's masks take that no earlier task
        uses."""
        p: Params = self.params  # type: ignore[assignment]
        assert ctx.model.plugins is not None
        return {"ctr_masks": p.mask_weight * ctx.model.plugins.mask_penalty(ctx.work.task)}

    @torch.no_grad()
    def after_update(self, ctx: StepContext) -> None:
        """Put the protected entries back; advance the mask slope."""
        work: CtrWork = ctx.work
        for param, mask, value in work.keep:
            param.copy_(torch.where(mask, value, param))
        work.batch += 1
        assert ctx.model.plugins is not None
        ctx.model.plugins.clamp_embeddings(work.task)
        self._slope(ctx, work)

    def epoch_state(self, ctx: StepContext) -> dict[str, Any]:
        """The updates so far (where the masks' slope has got to)."""
        return {"batch": ctx.work.batch}

    def load_epoch_state(self, ctx: StepContext, state: dict[str, Any]) -> None:
        ctx.work.batch = state["batch"]
        self._slope(ctx, ctx.work)

    def end_step(self, ctx: StepContext) -> State:
        """Binarise the task's masks (its units become protected), unfreeze, report."""
        work: CtrWork = ctx.work
        plugins = ctx.model.plugins
        assert plugins is not None
        used = 0.0
        for plugin in plugins.plugins:
            assert isinstance(plugin, ctr.Plugin)
            plugin.finish_task(work.task)
            used += float(plugin.used1.mean())
        plugins.run.train_task, plugins.run.s = None, None
        for q in work.switched_off:
            q.requires_grad_(True)
        p: Params = self.params  # type: ignore[assignment]
        if p.arbiter and plugins.n_tasks > 1 and work.data:
            own = ctx.step.train  # labelled for this task's types only
            plugins.arbiter = train_arbiter(
                ctx.model, work.data, p.arbiter_epochs, own, p.arbiter_balance
            )
            ctx.model.spec.ctr_arbiter = plugins.n_tasks
        consolidated = bool(p.max_tasks and plugins.n_tasks > p.max_tasks and work.data)
        if consolidated:
            consolidate(ctx, work.data, p)
        state = ctx.state
        assert isinstance(state, Ctr.State)
        report = {
            "step": ctx.step.index,
            "task": work.task,
            "adapter_units_used": round(used / len(plugins.plugins), 4),
            "tasks": ctx.model.plugins.n_tasks if ctx.model.plugins else 0,
            "consolidated": consolidated,
        }
        return self.State(history=[*state.history, report])


def known_words(feats: torch.Tensor, gold: torch.Tensor, labelled: set[int]) -> torch.Tensor:
    """(W,) True for the words of one sentence whose right expert is known: an entity word, or
    an ``O`` word that no expert of a task the sentence is *not* labelled for claims (its best
    entity score above its ``O`` score). Such a claim may be an entity the data leaves ``O``
    (an old type in a later step's sentence): trained as ``O``, the arbiter would learn to
    overrule the old experts, which is forgetting by the back door. feats (W, T, 2); gold (W,)
    in 0..T; ``labelled``: the experts 1..T whose types the sentence is labelled for."""
    claims = feats[..., 1] > feats[..., 0]  # (W, T)
    unlabelled = torch.tensor(
        [t + 1 not in labelled for t in range(feats.shape[-2])], device=feats.device
    )
    return (gold != 0) | ~(claims & unlabelled).any(-1)


@torch.no_grad()
def _expert_words(
    model: Tagger, data: list[Sentence], own: Sequence[Sentence] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' features (N, T, 2) of the words of ``data`` whose right expert is known
    (:func:`known_words`) and that expert (N,): 0 for ``O``, t + 1 for a type of task t. A
    sentence of ``own`` is labelled for the newest task's types, any other (the memory) for the
    tasks of the types it mentions."""
    from diancang.data.record import spans_to_bio
    from diancang.model.arbiter import expert_features

    assert model.plugins is not None
    task_of = {ty: t + 1 for t, types in enumerate(model.spec.ctr_tasks) for ty in types}
    tasks = list(range(model.plugins.n_tasks))
    own_ids = {id(s) for s in own}
    was = model.training
    model.eval()
    feats, gold = [], []
    for lo in range(0, len(data), 64):
        chunk = [s for s in data[lo : lo + 64] if s.tokens]
        if not chunk:
            continue
        batch = model.batch([s.tokens for s in chunk])
        ids, att, index, mask = (
            batch[k] for k in ("input_ids", "attention_mask", "word_index", "word_mask")
        )
        once = partial(model._forward, ids, att, index, mask, False, None)
        logps, keeps, _ = ctr.expert_passes(model, once, tasks)
        f = expert_features(logps, keeps)  # (B, W, T, 2)
        for i, s in enumerate(chunk):
            n = int(batch["word_mask"][i].sum())
            tags = spans_to_bio(len(s.tokens), s.spans)[:n]
            g = torch.tensor([0 if t == "O" else task_of.get(t[2:], 0) for t in tags])
            labelled = {task_of[t] for t in s.types() if t in task_of}
            labelled |= {len(tasks)} if id(s) in own_ids else set()
            keep = known_words(f[i, :n], g.to(f.device), labelled)
            feats.append(f[i, :n][keep])
            gold.append(g[keep.cpu()])
    model.train(was)
    return torch.cat(feats).cpu(), torch.cat(gold)


def train_arbiter(
    model: Tagger,
    data: list[Sentence],
    epochs: int,
    own: Sequence[Sentence],
    balance: bool,
) -> Arbiter:
    """An arbiter over the model's task experts, trained on the words of ``data`` whose right
    expert is known; ``own``: the step's own sentences among them (:func:`_expert_words`);
    ``balance``: every expert's words weigh the same (:func:`~diancang.model.arbiter.
    fit_arbiter`)."""
    from diancang.model.arbiter import fit_arbiter

    features, gold = _expert_words(model, data, own)
    with torch.enable_grad():
        return fit_arbiter(features, gold, epochs, balance=balance).to(model.device)


def slope_period(
    n: int, batch_size: int, anneal: str, epochs: Callable[[int], int]
) -> tuple[int, bool]:
    """The updates the masks' slope anneals over, and whether it anneals once: the batches of
    ``n`` sentences, times ``epochs(batches)`` when ``anneal`` is ``step`` (once over the
    step) rather than ``epoch`` (again each epoch)."""
    batches = max(1, -(-n // batch_size))
    once = anneal == "step"
    return (batches * epochs(batches) if once else batches), once


def consolidate(ctx: StepContext, data: list[Sentence], p: Params) -> None:
    """Distil the model (every task's pass, merged) into fresh plugins of one task holding all
    its types, trained as a first task (HAT's annealed masks and penalty, so later tasks find
    free units) on ``data`` with the encoder frozen; they replace the model's plugins."""
    import copy

    from diancang.learn.distil import distil_into

    model = ctx.model
    teacher = copy.deepcopy(model).eval()
    student = copy.deepcopy(model)
    plugins = student.plugins
    assert plugins is not None
    plugins.reset()
    types = [t for task in student.spec.ctr_tasks for t in task]
    student.spec.ctr_tasks, student.spec.ctr_arbiter = [], 0
    ctr.add_task(student, types, student.spec.ctr_sizes)
    plugins.run.train_task = 0
    batch_size = ctx.config.train.batch_size
    batches, once = slope_period(len(data), batch_size, p.anneal, lambda _: p.consolidate_epochs)
    updates = 0
    plugins.anneal(p.s_max, updates, batches, once)

    def advance() -> None:
        nonlocal updates
        updates += 1
        plugins.clamp_embeddings(0)
        plugins.anneal(p.s_max, updates, batches, once)

    def penalty() -> torch.Tensor:
        return p.mask_weight * plugins.mask_penalty(0)

    epochs, lr = p.consolidate_epochs, p.consolidate_lr
    distil_into(ctx, student, teacher, data, epochs, lr, extra_loss=penalty, after_update=advance)
    for plugin in plugins.plugins:
        assert isinstance(plugin, ctr.Plugin)
        plugin.finish_task(0)
    plugins.run.train_task, plugins.run.s = None, None
    model.encoder, model.plugins, model.head = student.encoder, plugins, student.head
    model.spec.ctr_tasks, model.spec.ctr_arbiter = student.spec.ctr_tasks, 0
