"""The one training loop over steps. Strategies plug in through hooks that return values.

The loop runs unchanged on one CPU, one GPU, or under ``accelerate launch`` (several processes):
data is sharded by ``accelerate``, evaluation and checkpoints happen on the main process.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from diancang.config import RunConfig
from diancang.data.record import Sentence, spans_to_bio
from diancang.errors import ConfigError
from diancang.evaluation.matrix import ResultMatrix
from diancang.learn.checkpoint import Progress, load_progress, save_progress, step_dir
from diancang.learn.evaluate import evaluate
from diancang.model.features import collate
from diancang.model.tagger import Tagger
from diancang.provenance import git_commit, peak_memory_mb
from diancang.strategies.base import StepContext, Strategy, check_heads
from diancang.stream import Step, TaskStream

logger = logging.getLogger("diancang.learn")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _linear_warmup(total: int, warmup: float) -> Callable[[int], float]:
    n_warm = max(1, int(total * warmup))

    def factor(i: int) -> float:
        if i < n_warm:
            return (i + 1) / n_warm
        return max(0.0, (total - i) / max(1, total - n_warm))

    return factor


class Learner:
    """Runs a :class:`TaskStream` with a list of strategies; see :meth:`run`.

    ``make_model(types)`` builds the step-0 tagger for the first step's types; ``pool`` is the
    unmasked training set the stream was split from. With ``initial`` (a trained tagger, e.g. the
    live version of an archive) the first step continues from it as any later step would: it is
    the teacher (``previous``) and gains the step's types.
    """

    def __init__(
        self,
        config: RunConfig,
        stream: TaskStream,
        strategies: list[Strategy],
        make_model: Callable[[list[str]], Tagger],
        pool: list[Sentence],
        accelerator: Any | None = None,
        initial: Tagger | None = None,
    ) -> None:
        from accelerate import Accelerator

        check_heads(strategies, config.model.head)
        self.config = config
        self.stream = stream
        self.strategies = strategies
        self.make_model = make_model
        self.pool = pool
        self.assignment = [-1] * len(pool)  # -1: in no step (e.g. left out of a K-shot step)
        for step, indices in enumerate(stream.assignment["train"]):
            for i in indices:
                self.assignment[i] = step
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.out = Path(config.output_dir)
        self.initial = initial
        self.model: Tagger | None = None
        self.progress: Progress | None = None
        self.epoch_scores: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------- helpers
    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def _loader(self, model: Tagger, data: list[Sentence], seed: int) -> DataLoader[Any]:
        items = [
            (model.encode(s.tokens), model.label_ids(spans_to_bio(len(s.tokens), s.spans)))
            for s in data
            if s.tokens
        ]
        pad = model.token_encoder.pad_id

        def collate_fn(rows: list[Any]) -> dict[str, torch.Tensor]:
            return collate([r[0] for r in rows], [r[1] for r in rows], pad)

        gen = torch.Generator()
        gen.manual_seed(seed)
        return DataLoader(
            items,  # type: ignore[arg-type]
            batch_size=self.config.train.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=collate_fn,
        )

    def _optimizer(self, model: Tagger, n_batches: int) -> tuple[Any, Any]:
        tc = self.config.train
        enc = [p for p in model.encoder.parameters() if p.requires_grad]
        enc_ids = {id(p) for p in enc}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
        opt = torch.optim.AdamW(
            [{"params": enc, "lr": tc.lr}, {"params": rest, "lr": tc.head_lr}],
            weight_decay=tc.weight_decay,
        )
        total = max(1, n_batches * tc.epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _linear_warmup(total, tc.warmup))
        return opt, sched

    # ----------------------------------------------------------------------------- one step
    def train_step(self, ctxs: list[StepContext]) -> tuple[float, int]:
        """Train the step's model through the strategies' hooks (``ctxs[i]`` is strategy ``i``'s
        context: same step and model, its own carried state).

        Returns the training seconds and the number of sentences trained on (all epochs)."""
        acc = self.accelerator
        tc = self.config.train
        ctx = ctxs[0]
        start = time.perf_counter()  # the strategies' data hooks count as training time
        pairs = list(zip(self.strategies, ctxs, strict=True))
        data = list(ctx.step.train)
        for strat, c in pairs:
            data = strat.train_data(c, data)
        loader = self._loader(ctx.model, data, self.config.seed + ctx.step.index)
        opt, sched = self._optimizer(ctx.model, len(loader))
        model, opt, loader, sched = acc.prepare(ctx.model, opt, loader, sched)
        model.train()
        total = len(loader) * tc.epochs
        show = tc.progress and self.is_main
        from tqdm.auto import tqdm

        # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
        bar = tqdm(
            total=total, desc=f"step {ctx.step.index}", disable=None if show else True, leave=False
        )
        self.epoch_scores = []
        eval_seconds = 0.0
        for epoch in range(tc.epochs):
            for batch in loader:
                loss = self._batch_loss(pairs, model, batch)
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad()
                for strat, c in pairs:
                    strat.after_update(c)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
            if tc.eval_each_epoch and self.is_main and ctx.step.dev:
                elapsed = time.perf_counter() - start - eval_seconds
                eval_seconds += self._epoch_eval(ctx, epoch, elapsed)
                model.train()
        bar.close()
        for strat, c in pairs:
            weights = strat.final_weights(c)
            if weights is not None:
                ctx.model.load_state_dict(weights, strict=False)
        seconds = time.perf_counter() - start - eval_seconds
        acc.wait_for_everyone()
        acc.free_memory()
        return seconds, len(loader.dataset) * tc.epochs

    def _batch_loss(
        self, pairs: list[tuple[Strategy, StepContext]], model: Any, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Base loss on the strategies' targets plus every strategy's extra terms (scalar)."""
        hidden = any(strat.needs_hidden_states for strat, _ in pairs)
        out = model(**batch, output_hidden_states=hidden)
        labels = batch["labels"]
        for strat, c in pairs:
            labels = strat.targets(c, batch, out, labels)
        tagger = pairs[0][1].model
        loss = tagger.loss(out, labels, batch["word_mask"])
        for strat, c in pairs:
            for value in strat.loss_terms(c, batch, out).values():
                loss = loss + value
        return loss

    def _epoch_eval(self, ctx: StepContext, epoch: int, elapsed: float) -> float:
        """Score the step's dev set after an epoch (kept in ``epoch_scores``); returns the
        seconds it took, which are not training time."""
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
            "step %d epoch %d: dev micro %.4f macro %.4f",
            ctx.step.index,
            epoch + 1,
            scores.f1,
            scores.macro_f1,
        )
        return time.perf_counter() - began

    def _first_step_model(self, step: Step) -> Tagger | None:
        """The tagger of ``train.first_step_from`` (None when not set); it must know exactly
        the first step's types."""
        path = self.config.train.first_step_from
        if path is None:
            return None
        base = Tagger.from_pretrained(path)
        if sorted(base.types) != sorted(step.new_types):
            raise ConfigError(
                f"train.first_step_from has types {base.types}, but the first step learns "
                f"{step.new_types}",
                path=path,
                fix="give a model trained on exactly the first step's types, or unset it",
            )
        return base

    # ----------------------------------------------------------------------------- the run
    def run(self, restart: bool = False) -> ResultMatrix:
        """Train every step, evaluate on the all-seen test set, checkpoint; resumes by default."""
        cfg_dict = self.config.model_dump(mode="json")
        progress = Progress(config=cfg_dict) if restart else load_progress(self.out, cfg_dict)
        steps = self.stream.steps[: self.config.stream.max_steps]
        model: Tagger | None = None
        if progress.finished > 0:
            model = Tagger.from_pretrained(step_dir(self.out, progress.finished - 1))
            logger.info("resuming after step %d", progress.finished - 1)
        for step in steps[progress.finished :]:
            seed_everything(self.config.seed + step.index)
            previous = None
            base = self._first_step_model(step) if step.index == 0 else None
            model = model if model is not None else (base or self.initial)
            if model is None:
                model = self.make_model(step.new_types)
            elif base is None:
                if any(s.needs_previous for s in self.strategies):
                    previous = copy.deepcopy(model).eval().requires_grad_(False)
                model.add_labels(step.new_types, self.config.types)
            model.to(self.accelerator.device)
            states = progress.states
            ctxs = [
                StepContext(
                    step=step,
                    model=model,
                    previous=previous,
                    config=self.config,
                    pool=self.pool,
                    assignment=self.assignment,
                    state=states.get(s.name, {}),
                )
                for s in self.strategies
            ]
            seconds, n_sentences = self.train_step(ctxs) if base is None else (0.0, 0)
            for s, c in zip(self.strategies, ctxs, strict=True):
                states[s.name] = s.end_step(c)
            if self.is_main:
                scores = evaluate(
                    model, step.test, step.seen_types, self.config.train.eval_batch_size
                )
                progress.results.append(scores.to_dict())
                progress.seconds.append(seconds)
                progress.sentences.append(n_sentences)
                progress.epochs.append(self.epoch_scores)
                progress.peak_mb.append(peak_memory_mb())
                progress.commits.append(git_commit())
                progress.finished = step.index + 1
                model.save_pretrained(step_dir(self.out, step.index), run_config=cfg_dict)
                save_progress(self.out, progress)
                logger.info(
                    "step %d: micro %.4f macro %.4f (%.1fs)",
                    step.index,
                    scores.f1,
                    scores.macro_f1,
                    seconds,
                )
            self.accelerator.wait_for_everyone()
        self.model = model
        self.progress = progress
        return self.matrix(progress)

    def matrix(self, progress: Progress) -> ResultMatrix:
        """The step x type result matrix of what has finished."""
        steps = self.stream.steps[: progress.finished]
        return ResultMatrix(
            step_types=[s.new_types for s in self.stream.steps],
            per_type=[
                {t: r["per_type"][t]["f1"] for t in s.seen_types}
                for s, r in zip(steps, progress.results, strict=True)
            ],
            micro=[r["f1"] for r in progress.results],
            macro=[r["macro_f1"] for r in progress.results],
        )
