"""The step runner: one continual step, the same for ``diancang run``, ``learn`` and the service.

:meth:`StepRunner.run_step` takes a model (fresh for the first step, or a version's model, which
becomes the teacher), the strategies' carried states, and a :class:`~diancang.stream.Step`; it
grows the model by the step's types, trains it through the strategies' hooks and returns the new
model with the states to save in the next version. The loop runs unchanged on one CPU, one GPU or
under ``accelerate launch`` (data sharded by ``accelerate``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from diancang.config import RunConfig
from diancang.data.record import Sentence, spans_to_bio
from diancang.learn.audit import SupervisionAudit
from diancang.learn.blobs import Blobs
from diancang.learn.early_stop import Best
from diancang.learn.evaluate import evaluate
from diancang.learn.long_sentences import fit_windows
from diancang.learn.optim import make_optimizer
from diancang.learn.resume import EpochState, LoadMore, More
from diancang.learn.teacher import TeacherCache
from diancang.model.features import collate
from diancang.model.tagger import Tagger, TaggerOutput
from diancang.strategies.base import (
    StepBatch,
    StepContext,
    Strategy,
    StrategyState,
    Target,
    check_heads,
)
from diancang.stream import Step

logger = logging.getLogger("diancang.learn")

#: ``loss_fn(model, batch) -> scalar``: what :meth:`StepRunner.fit` minimises.
LossFn = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class StepResult:
    """What one step produced: the trained model, each strategy's state to carry, training
    seconds and sentences (all epochs), and the dev scores per epoch when asked for."""

    model: Tagger
    states: dict[str, StrategyState | None]
    seconds: float = 0.0
    sentences: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    #: With the hidden gold (benchmarks): what the supervision made of unlabelled words.
    audit: dict[str, Any] | None = None


class StepRunner:
    """Trains steps with a list of strategies (see :meth:`run_step`)."""

    def __init__(
        self, config: RunConfig, strategies: list[Strategy], accelerator: Any | None = None
    ) -> None:
        from accelerate import Accelerator

        check_heads(strategies, config.model.head)
        self.config = config
        self.strategies = strategies
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.epoch_scores: list[dict[str, Any]] = []
        #: Steps in the whole run, when known (progress reads "step 2/5").
        self.steps_total: int | None = None
        #: ``on_batch(done, total, desc)``: called after every batch (jobs report progress).
        self.on_batch: Callable[[int, int, str], None] | None = None
        #: Where an unfinished step's training state is saved after every epoch (None: not
        #: saved; ``diancang run`` sets it, see :meth:`_epoch_state`).
        self.epoch_state_dir: Path | None = None

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    # ----------------------------------------------------------------------------- machinery
    def loader(
        self, model: Tagger, data: list[Sentence], seed: int, batch_size: int | None = None
    ) -> DataLoader[Any]:
        """A shuffled loader of ``data`` encoded for ``model`` (gold labels included; ``index``
        (B,) names each row's sentence in ``data``)."""
        items = [
            (model.encode(s.tokens), model.label_ids(spans_to_bio(len(s.tokens), s.spans)), i)
            for i, s in enumerate(data)
            if s.tokens
        ]
        pad = model.token_encoder.pad_id

        def collate_fn(rows: list[Any]) -> dict[str, torch.Tensor]:
            batch = collate([r[0] for r in rows], [r[1] for r in rows], pad)
            return {**batch, "index": torch.tensor([r[2] for r in rows])}  # sentence in data

        gen = torch.Generator()
        gen.manual_seed(seed)
        return DataLoader(
            items,  # type: ignore[arg-type]
            batch_size=batch_size or self.config.train.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=collate_fn,
        )

    def fit(
        self,
        model: Tagger,
        loader: DataLoader[Any],
        loss_fn: LossFn,
        *,
        epochs: int,
        lr: float,
        head_lr: float,
        desc: str,
        after_update: Callable[[], None] | None = None,
        after_epoch: Callable[[int], bool] | None = None,
        extra: list[nn.Module] | None = None,
        resume: EpochState | None = None,
    ) -> int:
        """The training loop every phase uses: AdamW (encoder and head learning rates), linear
        warm-up and decay, gradient clipping, ``accelerate`` and a progress bar.
        ``after_epoch(epoch)`` returning True stops the loop (early stopping); ``extra``
        modules (strategies' own) are optimised with the head's learning rate; ``resume``
        saves the training state after every epoch and starts from a saved one. Returns the
        epochs run."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        extra = extra or []
        for m in extra:
            m.to(acc.device).train()
        tc = self.config.train
        opt, sched = make_optimizer(model, len(loader), epochs, lr, head_lr, tc, extra)
        generator = getattr(loader, "generator", None)
        start, stopped = (0, False)
        if resume is not None:
            start, stopped = resume.restore(model, extra, opt, sched, generator)
        wrapped, opt, loader, sched = acc.prepare(model, opt, loader, sched)
        wrapped.train()
        total = len(loader) * epochs
        show = self.config.train.progress and self.is_main
        # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
        done = len(loader) * start
        bar = tqdm(total=total, initial=done, desc=desc, disable=None if show else True,
                   leave=False)  # fmt: skip
        epoch = start - 1
        for epoch in range(start, start if stopped else epochs):
            bar.set_description(f"{desc} epoch {epoch + 1}/{epochs}")
            began, losses = time.perf_counter(), []
            for batch in loader:
                loss = loss_fn(wrapped, batch)
                acc.backward(loss)
                params = [*wrapped.parameters(), *(p for m in extra for p in m.parameters())]
                acc.clip_grad_norm_(params, self.config.train.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad()
                if after_update is not None:
                    after_update()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update(1)
                done += 1
                if self.on_batch is not None:
                    self.on_batch(done, total, desc)
            if bar.disable and self.is_main:  # no bar (not a terminal): a line per epoch
                logger.info(
                    "%s epoch %d/%d: mean loss %.3f (%.0fs)",
                    desc,
                    epoch + 1,
                    epochs,
                    sum(losses) / max(1, len(losses)),
                    time.perf_counter() - began,
                )
            stop = False
            if after_epoch is not None:
                stop = after_epoch(epoch)
                wrapped.train()
            if resume is not None:
                resume.save(epoch + 1, stop, model, extra, opt, sched, generator)
            if stop:
                break
        bar.close()
        return epoch + 1 if epochs else 0

    def _epoch_state(self, ctx: StepContext, more: More, load_more: LoadMore) -> EpochState | None:
        """The step's state saved after every epoch, to resume a killed run from (None: not
        saved). Only with ``epoch_state_dir`` set and ``train.epoch_checkpoints``, on one
        process, and when every strategy can resume mid-step (``resumes_mid_step``)."""
        if (
            self.epoch_state_dir is None
            or not self.config.train.epoch_checkpoints
            or self.accelerator.num_processes > 1
            or not all(s.resumes_mid_step for s in self.strategies)
        ):
            return None
        config = self.config.model_dump(mode="json")
        return EpochState.of_step(self.epoch_state_dir, config, ctx.step.index, more, load_more)

    # ----------------------------------------------------------------------------- one step
    def run_step(
        self,
        step: Step,
        model: Tagger,
        states: dict[str, StrategyState | None],
        blobs: Blobs,
        *,
        fresh: bool,
        pool: list[Sentence] | None = None,
        assignment: list[int] | None = None,
        train: bool = True,
        hidden: list[Sentence] | None = None,
    ) -> StepResult:
        """Run ``step`` from ``model``: a ``fresh`` model (built for the step's types) trains
        alone; any other is copied as the teacher and grows the step's types. ``states`` are
        the strategies' carried states (None: start empty). ``pool``/``assignment`` (default:
        the step's own data) are read by ``joint`` only. ``train=False`` loads a step trained
        elsewhere: the strategies' end-of-step hooks still run. ``hidden`` (benchmarks only):
        the step's sentences with every seen type, to audit the supervision of the words the
        step leaves unlabelled (:mod:`diancang.learn.audit`); never shown to a strategy."""
        previous = None
        if not fresh:
            if any(s.needs_previous for s in self.strategies):
                previous = copy.deepcopy(model).eval().requires_grad_(False)
            model.add_labels(step.new_types, self.config.types)
        model.to(self.accelerator.device)
        step, pool, assignment, hidden = fit_windows(model, step, pool, assignment, hidden)
        ctxs = []
        for s in self.strategies:
            state = states.get(s.name)
            ctx = StepContext(
                step=step,
                model=model,
                previous=previous,
                config=self.config,
                pool=pool,
                assignment=assignment,
                blobs=blobs,
                state=state if state is not None or s.State is None else s.State(),
                fit=self.fit,
            )
            ctx.work = s.begin_step(ctx)
            ctxs.append(ctx)
        audit = None
        if hidden is not None and not fresh and train:
            audit = SupervisionAudit(step.train, hidden, model.labels)
        seconds, n_sentences = self.train_step(ctxs, audit) if train else (0.0, 0)
        carried = {s.name: s.end_step(c) for s, c in zip(self.strategies, ctxs, strict=True)}
        summary = None if audit is None else audit.summary()
        return StepResult(model, carried, seconds, n_sentences, list(self.epoch_scores), summary)

    def train_step(
        self, ctxs: list[StepContext], audit: SupervisionAudit | None = None
    ) -> tuple[float, int]:
        """Train the step's model through the strategies' hooks (``ctxs[i]`` is strategy
        ``i``'s context). Returns the training seconds and the sentences trained on (all
        epochs); dev scoring after epochs is not counted."""
        tc = self.config.train
        ctx = ctxs[0]
        start = time.perf_counter()  # the strategies' data hooks count as training time
        pairs = list(zip(self.strategies, ctxs, strict=True))
        data = list(ctx.step.train)
        for strat, c in pairs:
            data = strat.train_data(c, data)
        if audit is not None:
            audit.align(data, ctx.step.train)
        loader = self.loader(ctx.model, data, self.config.seed + ctx.step.index)
        self.epoch_scores = []
        # training seconds: now - start - dev scoring - state saving + a killed run's seconds
        clock = {"start": start, "eval": 0.0, "before": 0.0}
        best = Best(tc.patience)
        resume: EpochState | None = None  # set below, once its callbacks are defined

        def trained() -> float:
            saving = resume.saving if resume is not None else 0.0
            return time.perf_counter() - clock["start"] - clock["eval"] - saving + clock["before"]

        def after_update() -> None:
            for strat, c in pairs:
                strat.after_update(c)

        def after_epoch(epoch: int) -> bool:
            # With patience every process scores dev itself, so all stop at the same epoch.
            if not ctx.step.dev or not (tc.patience or (tc.eval_each_epoch and self.is_main)):
                return False
            seconds, macro = self._epoch_eval(ctx, epoch, trained())
            clock["eval"] += seconds
            return best.update(macro, ctx.model)

        def more() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            tensors = {f"best.{k}": v for k, v in (best.weights or {}).items()}
            return tensors, {
                "best": [best.f1, best.since, best.weights is not None],
                "epoch_scores": self.epoch_scores,
                "seconds": trained(),
                "strategies": [strat.epoch_state(c) for strat, c in pairs],
                "audit": None if audit is None else audit.state(),
            }

        def load_more(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
            best.f1, best.since, has_weights = saved["best"]
            best.weights = (
                {k.removeprefix("best."): v for k, v in tensors.items()} if has_weights else None
            )
            self.epoch_scores = [*saved["epoch_scores"]]
            if self.epoch_scores:
                self.epoch_scores[-1] = {**self.epoch_scores[-1], "resumed_after": True}
            clock.update(start=time.perf_counter(), eval=0.0, before=saved["seconds"])
            for (strat, c), state in zip(pairs, saved["strategies"], strict=True):
                strat.load_epoch_state(c, state)
            if audit is not None:
                audit.load_state(saved["audit"])

        resume = self._epoch_state(ctx, more, load_more)
        teacher = None
        if ctx.previous is not None:
            hidden = any(strat.needs_hidden_states for strat, _ in pairs)
            teacher = TeacherCache(ctx.previous, hidden, tc.teacher_cache_mb * 2**20)
        epochs = tc.epochs_for(len(loader))  # a small step may get more (min_updates)
        ran = self.fit(
            ctx.model,
            loader,
            lambda model, batch: self.batch_loss(pairs, model, batch, teacher, audit),
            epochs=epochs,
            lr=tc.lr,
            head_lr=tc.head_lr,
            desc=f"step {ctx.step.index + 1}{f'/{self.steps_total}' if self.steps_total else ''}",
            after_update=after_update,
            after_epoch=after_epoch,
            extra=[m for strat, c in pairs for m in strat.modules(c)],
            resume=resume,
        )
        best.restore(ctx.model)
        for strat, c in pairs:
            weights = strat.final_weights(c)
            if weights is not None:
                ctx.model.load_state_dict(weights, strict=False)
        seconds = trained()
        self.accelerator.wait_for_everyone()
        self.accelerator.free_memory()
        return seconds, len(loader.dataset) * ran  # type: ignore[arg-type]

    def batch_loss(
        self,
        pairs: list[tuple[Strategy, StepContext]],
        model: Any,
        inputs: dict[str, torch.Tensor],
        teacher: Callable[[dict[str, torch.Tensor]], TaggerOutput] | None = None,
        audit: SupervisionAudit | None = None,
    ) -> torch.Tensor:
        """The base loss on the strategies' resolved target plus every strategy's extra terms
        (a scalar). ``model`` may be the ``accelerate``-wrapped tagger; ``teacher`` gives the
        previous model's output on a batch (default: computed live)."""
        hidden = any(strat.needs_hidden_states for strat, _ in pairs)
        out = model(**inputs, output_hidden_states=hidden)
        tagger, previous = pairs[0][1].model, pairs[0][1].previous
        if teacher is None and previous is not None:
            teacher = TeacherCache(previous, hidden, 0)  # nothing kept: a live forward pass
        batch = StepBatch(inputs, out, teacher)
        target = Target(inputs["labels"])
        for strat, c in pairs:
            target = strat.targets(c, batch, target)
        if audit is not None:
            audit.observe(inputs, target)
        loss = tagger.loss(out, target.labels, inputs["word_mask"], target.weights)
        for strat, c in pairs:
            for value in strat.loss_terms(c, batch, target).values():
                loss = loss + value
        return loss

    def _epoch_eval(self, ctx: StepContext, epoch: int, elapsed: float) -> tuple[float, float]:
        """Score the step's dev set after an epoch (kept in ``epoch_scores``); returns the
        seconds it took, which are not training time, and the dev macro F1."""
        began = time.perf_counter()
        tc = self.config.train
        scores = evaluate(ctx.model, ctx.step.dev, ctx.step.new_types, tc.eval_batch_size)
        self.epoch_scores.append(
            {
                "epoch": epoch + 1,
                "dev_micro": scores.f1,
                "dev_macro": scores.macro_f1,
                "train_seconds": round(elapsed, 2),
            }
        )
        logger.info(
            "step %d epoch %d: dev micro %.1f%% macro %.1f%%",
            ctx.step.index + 1,
            epoch + 1,
            100 * scores.f1,
            100 * scores.macro_f1,
        )
        return time.perf_counter() - began, scores.macro_f1
