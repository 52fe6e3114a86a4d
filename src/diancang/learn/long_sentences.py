"""A step's training data with every sentence longer than the model's window split up."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from diancang.data.record import Sentence
from diancang.model.tagger import Tagger
from diancang.model.windows import split_long
from diancang.stream import Step

logger = logging.getLogger("diancang.learn")


def fit_windows(
    model: Tagger,
    step: Step,
    pool: list[Sentence] | None,
    assignment: list[int] | None,
    hidden: list[Sentence] | None,
) -> tuple[Step, list[Sentence], list[int], list[Sentence] | None]:
    """The step's training sentences (and ``pool``, ``hidden``) with every sentence longer
    than the model's ``max_length`` split into windows (:func:`split_long`), logged when any
    is; ``pool`` and ``assignment`` default to the step's own data."""
    enc = model.token_encoder
    budget = enc.max_length - 2

    def count(token: str) -> int:
        return len(enc.pieces(token))

    train, also, origin = split_long(step.train, count, budget, [] if hidden is None else [hidden])
    long = [n for n in Counter(origin).values() if n > 1]
    if long:
        logger.info(
            "step %d: %d training sentences longer than max_length %d split into %d windows",
            step.index + 1,
            len(long),
            enc.max_length,
            sum(long),
        )
    step = replace(step, train=train)
    hidden = also[0] if also else None
    if pool is None:
        return step, list(train), [step.index] * len(train), hidden
    assignment = [step.index] * len(pool) if assignment is None else assignment
    pool, _, pool_origin = split_long(pool, count, budget)
    return step, pool, [assignment[i] for i in pool_origin], hidden
