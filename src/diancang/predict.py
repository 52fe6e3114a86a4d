"""Text in, entities out: tokenise raw text, tag it, map spans back to character offsets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diancang.model.tagger import Tagger


def bio_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """Strict BIO decoding: ``[(start, end_exclusive, type)]``; an ``I-`` that does not continue
    an entity of its type is dropped (as seqeval's strict mode scores it)."""
    spans: list[tuple[int, int, str]] = []
    start, label = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and label == tag[2:] and start >= 0
        if not inside and start >= 0:
            spans.append((start, i, label))
            start, label = -1, ""
        if tag.startswith("B-"):
            start, label = i, tag[2:]
    return spans


def recognize(
    model: Tagger,
    texts: list[str],
    batch_size: int = 32,
    types: Sequence[Sequence[str] | None] | None = None,
) -> list[dict[str, Any]]:
    """Entities of each text: ``{"text", "entities": [{"text", "type", "start", "end", "score"}]}``
    with character offsets (end exclusive) and the mean probability of the span's labels.
    ``types[i]``: the only types text ``i`` may get (task-incremental; None: all)."""
    tokenized = [model.tokenize(t) for t in texts]
    tags, probs = model.predict_tags(
        [tok for tok, _ in tokenized], batch_size=batch_size, types=types
    )
    results = []
    for text, (_, offsets), tag, prob in zip(texts, tokenized, tags, probs, strict=True):
        entities = []
        for s, e, label in bio_spans(tag):
            lo, hi = offsets[s][0], offsets[e - 1][1]
            entities.append(
                {
                    "text": text[lo:hi],
                    "type": label,
                    "start": lo,
                    "end": hi,
                    "score": round(sum(prob[s:e]) / (e - s), 4),
                }
            )
        results.append({"text": text, "entities": entities})
    return results
