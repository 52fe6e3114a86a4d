"""A whole task stream: every step through the one step runner, a version folder per step.

Each finished step is saved as a complete version folder, ``checkpoints/step-N/`` (weights,
the resolved config, each strategy's carried state and the blobs it refers to; see
:mod:`diancang.learn.version`), the same folder the archive stores for ``diancang learn``. A killed
run resumes from the last one (a step killed mid-way from its last whole epoch,
:mod:`diancang.learn.resume`); evaluation and saving happen on the main process.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diancang.config import RunConfig
from diancang.data.record import Sentence
from diancang.errors import ConfigError
from diancang.evaluation.matrix import ResultMatrix
from diancang.learn.blobs import Blobs
from diancang.learn.checkpoint import (
    Progress,
    epoch_state_dir,
    load_progress,
    save_progress,
    step_dir,
)
from diancang.learn.evaluate import evaluate
from diancang.learn.optim import seed_everything
from diancang.learn.runner import StepRunner
from diancang.learn.version import continue_from, save_version
from diancang.model.tagger import Tagger
from diancang.provenance import git_commit, peak_memory_mb
from diancang.strategies.base import Strategy, StrategyState
from diancang.stream import Step, TaskStream

logger = logging.getLogger("diancang.learn")

__all__ = ["Learner", "seed_everything"]


class Learner(StepRunner):
    """Runs a :class:`TaskStream` with a list of strategies; see :meth:`run`.

    ``make_model(types)`` builds the first step's tagger for its types; ``pool`` is the
    unmasked training set the stream was split from (read by ``joint`` only).
    """

    def __init__(
        self,
        config: RunConfig,
        stream: TaskStream,
        strategies: list[Strategy],
        make_model: Callable[[list[str]], Tagger],
        pool: list[Sentence],
        accelerator: Any | None = None,
    ) -> None:
        super().__init__(config, strategies, accelerator)
        self.stream = stream
        self.make_model = make_model
        self.pool = pool
        self.assignment = [-1] * len(pool)  # -1: in no step (e.g. left out of a K-shot step)
        for step, indices in enumerate(stream.assignment["train"]):
            for i in indices:
                self.assignment[i] = step
        self.out = Path(config.output_dir)
        self.epoch_state_dir: Path = epoch_state_dir(self.out)
        self.model: Tagger | None = None
        #: Each strategy's state after the last step run (what the last version folder holds).
        self.states: dict[str, StrategyState | None] = {}
        self.progress: Progress | None = None

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

    def run(self, restart: bool = False) -> ResultMatrix:
        """Train every step, evaluate on the all-seen test set, save a version per step;
        resumes from the last saved step by default."""
        cfg_dict = self.config.model_dump(mode="json")
        progress = Progress(config=cfg_dict) if restart else load_progress(self.out, cfg_dict)
        if restart:
            shutil.rmtree(self.epoch_state_dir, ignore_errors=True)  # an unfinished step
        steps = self.stream.steps[: self.config.stream.max_steps]
        self.steps_total = len(steps)
        model: Tagger | None = None
        states: dict[str, StrategyState | None] = {s.name: None for s in self.strategies}
        blobs = Blobs(self.out / "work" / "blobs")
        if progress.finished > 0:
            last = step_dir(self.out, progress.finished - 1)
            model = Tagger.from_pretrained(last)
            states, read = continue_from(last, self.strategies, last)
            blobs = Blobs(self.out / "work" / "blobs", read)
            logger.info("resuming after step %d", progress.finished)
        for step in steps[progress.finished :]:
            seed_everything(self.config.seed + step.index)
            base = self._first_step_model(step) if step.index == 0 else None
            fresh = model is None
            if model is None:
                model = base or self.make_model(step.new_types)
            own = self.stream.assignment["train"][step.index]  # hidden gold: measurement only
            result = self.run_step(
                step,
                model,
                states,
                blobs,
                fresh=fresh,
                pool=self.pool,
                assignment=self.assignment,
                train=base is None,
                hidden=[self.pool[i].keep_types(step.seen_types) for i in own],
            )
            model, states = result.model, result.states
            if self.is_main:
                scores = evaluate(
                    model,
                    step.test,
                    step.seen_types,
                    self.config.train.eval_batch_size,
                    f"step {step.index + 1}/{len(steps)}: scoring {self.config.data.score_on}",
                    full=self.stream.steps[-1].test,  # every type: where false positives land
                )
                progress.results.append(scores.to_dict())
                progress.seconds.append(result.seconds)
                progress.sentences.append(result.sentences)
                progress.epochs.append(result.epochs)
                progress.audits.append(result.audit)
                progress.peak_mb.append(peak_memory_mb())
                progress.commits.append(git_commit())
                progress.finished = step.index + 1
                folder = step_dir(self.out, step.index)
                save_version(folder, model, cfg_dict, step.index, self.strategies, states, blobs)
                save_progress(self.out, progress)
                shutil.rmtree(self.epoch_state_dir, ignore_errors=True)  # the step is saved
                logger.info(
                    "step %d/%d: micro %.1f%% macro %.1f%% (%.1fs training)",
                    step.index + 1,
                    len(steps),
                    100 * scores.f1,
                    100 * scores.macro_f1,
                    result.seconds,
                )
                blobs = Blobs(self.out / "work" / "blobs", [folder / "blobs"])
            self.accelerator.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(self.out / "work", ignore_errors=True)
        self.model = model
        self.states = states
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
