"""Score a tagger on sentences: entity-level strict F1 over a given set of types."""

from __future__ import annotations

from diancang.data.record import Sentence, spans_to_bio
from diancang.evaluation.metrics import Scores, entity_scores
from diancang.model.tagger import Tagger


def evaluate(
    model: Tagger, sentences: list[Sentence], types: list[str], batch_size: int = 64
) -> Scores:
    """Strict micro/macro/per-type F1 of ``model`` on ``sentences``, gold kept to ``types``."""
    keep = set(types)
    gold = [
        spans_to_bio(len(s.tokens), [sp for sp in s.spans if sp.label in keep]) for s in sentences
    ]
    pred, _ = model.predict_tags([s.tokens for s in sentences], batch_size=batch_size)
    # A prediction of a type outside ``types`` cannot be right here; it stays (a false positive).
    return entity_scores(gold, pred, types)
