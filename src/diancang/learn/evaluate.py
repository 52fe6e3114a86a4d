"""Score a tagger on sentences: entity-level strict F1 over a given set of types."""

from __future__ import annotations

import logging

from diancang.data.record import Sentence, spans_to_bio
from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.metrics import Scores, entity_scores, false_positive_kinds
from diancang.model.tagger import Tagger
from diancang.stream import TaskStream

logger = logging.getLogger("diancang.learn")


def _gold(sentences: list[Sentence], types: list[str]) -> list[list[str]]:
    keep = set(types)
    return [
        spans_to_bio(len(s.tokens), [sp for sp in s.spans if sp.label in keep]) for s in sentences
    ]


def evaluate(
    model: Tagger,
    sentences: list[Sentence],
    types: list[str],
    batch_size: int = 64,
    progress: str | None = None,
    full: list[Sentence] | None = None,
) -> Scores:
    """Strict micro/macro/per-type F1 of ``model`` on ``sentences``, gold kept to ``types``.
    ``progress`` labels a progress bar (terminal only) and a log line. ``full``: the same
    sentences with every type annotated (a stream's hidden gold, for measurement only); with
    it the scores say where each type's false positives land (:func:`false_positive_kinds`)."""
    if progress:
        logger.info("%s: %d sentences", progress, len(sentences))
    tokens = [s.tokens for s in sentences]
    pred, _ = model.predict_tags(tokens, batch_size=batch_size, progress=progress)
    # A prediction of a type outside ``types`` cannot be right here; it stays (a false positive).
    scores = entity_scores(_gold(sentences, types), pred, types)
    if full is not None:
        if [s.tokens for s in full] != tokens:
            raise ValueError("full must hold the same sentences as sentences")
        every = sorted({sp.label for s in full for sp in s.spans})
        scores.false_positives = false_positive_kinds(_gold(full, every), pred, types)
    return scores


def score_stream(model: Tagger, stream: TaskStream, batch_size: int = 64) -> ResultMatrix:
    """The result matrix of one model that already knows every type of ``stream`` (the joint
    ceiling trained once on all data): row ``s`` scores it on the types seen by step ``s``.

    The test set is predicted once. Entities of types not yet seen at step ``s`` are left out of
    that row on both sides (gold and predicted), so row ``s`` is what a model that learned
    exactly the seen types perfectly separated from the rest would score at best.
    """
    missing = sorted(set(stream.order) - set(model.types))
    if missing:
        raise ValueError(f"the model does not know the stream's types {missing}")
    test = stream.steps[-1].test  # the whole test set with every type
    pred, _ = model.predict_tags([s.tokens for s in test], batch_size, "scoring test")
    rows = [entity_scores(_gold(test, st.seen_types), pred, st.seen_types) for st in stream.steps]
    return ResultMatrix(
        step_types=[st.new_types for st in stream.steps],
        per_type=[
            {t: sc.per_type[t].f1 for t in st.seen_types}
            for sc, st in zip(rows, stream.steps, strict=True)
        ],
        micro=[sc.f1 for sc in rows],
        macro=[sc.macro_f1 for sc in rows],
    )


def score_task_incremental(
    model: Tagger, test: list[Sentence], step_types: list[list[str]], batch_size: int = 64
) -> dict[str, float]:
    """Per-type F1 when the caller names the types (task-incremental): the test set is tagged
    once per step with only that step's types allowed, and each type is scored on its own
    step's pass."""
    tokens = [s.tokens for s in test]
    out: dict[str, float] = {}
    for types in step_types:
        pred, _ = model.predict_tags(tokens, batch_size, types=[types] * len(tokens))
        scores = entity_scores(_gold(test, types), pred, types)
        out |= {t: scores.per_type[t].f1 for t in types}
    return out
