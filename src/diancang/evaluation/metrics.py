"""Entity-level precision, recall and F1 (seqeval strict mode, IOB2).

Entities are read from the tag sequences exactly as ``seqeval`` does with ``mode="strict",
scheme=IOB2``: an entity must start with ``B-X`` and continue with ``I-X``; an ``I-X`` with no
``B-X`` before it is *not* an entity (the lenient default of seqeval would count it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from seqeval.scheme import IOB2, Entities

from diancang.errors import DiancangError


@dataclass
class TypeScore:
    """Scores of one entity type; ``support`` is its number of gold entities."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int
    correct: int


@dataclass
class Scores:
    """Micro P/R/F1 and macro F1 over the evaluated types, and per-type scores (fractions)."""

    precision: float
    recall: float
    f1: float
    macro_f1: float
    per_type: dict[str, TypeScore] = field(default_factory=dict)
    #: ``confusion[gold][predicted]``: gold entities predicted with exactly their boundaries
    #: but another type (e.g. a book title read as a game).
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per predicted type, where its false positives land in the full gold (every type, those
    #: not evaluated too): see :func:`false_positive_kinds`; empty unless the full gold is given.
    false_positives: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (per-type scores nested under ``per_type``)."""
        return asdict(self)


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _check(tags: list[list[str]], what: str) -> None:
    for i, seq in enumerate(tags):
        for tag in seq:
            if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
                raise DiancangError(
                    f"{what} sentence {i} has tag {tag!r}, which is not IOB2",
                    fix="use O, B-TYPE and I-TYPE tags (convert BIOES/BMES first)",
                )


def _entities(tags: list[list[str]]) -> set[tuple[int, str, int, int]]:
    return {e.to_tuple() for sent in Entities(tags, IOB2).entities for e in sent}


def entity_scores(gold: list[list[str]], pred: list[list[str]], types: list[str]) -> Scores:
    """Strict IOB2 entity scores of ``pred`` against ``gold`` over ``types``.

    Only entities whose type is in ``types`` count, in gold and in predictions alike (pass every
    type the model may predict to count all of them). Micro P/R/F1 pool all those entities.
    ``macro_f1`` is the mean F1 over the types in ``types`` that occur in ``gold`` (support > 0);
    types absent from gold are listed in ``per_type`` but left out of the macro mean (0.0 when no
    type occurs). A ratio with a zero denominator is 0.0.
    """
    if len(gold) != len(pred):
        raise DiancangError(
            f"gold has {len(gold)} sentences but predictions have {len(pred)}",
            fix="predict one tag sequence per gold sentence",
        )
    for i, (g_tags, p_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(g_tags) != len(p_tags):
            raise DiancangError(
                f"sentence {i}: gold has {len(g_tags)} tags but the prediction has {len(p_tags)}",
                fix="predict one tag per token",
            )
    _check(gold, "gold")
    _check(pred, "predicted")
    wanted = set(types)
    gold_e = {e for e in _entities(gold) if e[1] in wanted}
    pred_e = {e for e in _entities(pred) if e[1] in wanted}
    hit = gold_e & pred_e
    n_gold = Counter(e[1] for e in gold_e)
    n_pred = Counter(e[1] for e in pred_e)
    n_hit = Counter(e[1] for e in hit)
    per_type: dict[str, TypeScore] = {}
    for t in types:
        p, r, f = _prf(n_hit[t], n_pred[t], n_gold[t])
        per_type[t] = TypeScore(p, r, f, support=n_gold[t], predicted=n_pred[t], correct=n_hit[t])
    p, r, f = _prf(len(hit), len(pred_e), len(gold_e))
    present = [per_type[t].f1 for t in per_type if per_type[t].support > 0]
    macro = sum(present) / len(present) if present else 0.0
    where = {(s, a, b): t for s, t, a, b in _entities(pred)}
    confusion: dict[str, dict[str, int]] = {}
    for s, t, a, b in sorted(gold_e - hit):
        other = where.get((s, a, b))
        if other is not None:
            row = confusion.setdefault(t, {})
            row[other] = row.get(other, 0) + 1
    return Scores(p, r, f, macro, per_type=per_type, confusion=confusion)


#: The kinds of :func:`false_positive_kinds`, in the order they are tried.
FP_KINDS = ("later type", "later type, overlapping", "boundary", "other type", "no entity")


def false_positive_kinds(
    full_gold: list[list[str]], pred: list[list[str]], types: list[str]
) -> dict[str, dict[str, int]]:
    """Where the false positives of each type in ``types`` land, against ``full_gold`` (tags of
    every type, including those not in ``types``): ``later type``: exactly the span of a gold
    entity of a type outside ``types`` (one the model has not learnt yet, in a stream);
    ``later type, overlapping``: overlapping one (and no gold entity of its own type);
    ``boundary``: overlapping a gold entity of its own type with other boundaries; ``other
    type``: exactly or overlapping a gold entity of another type in ``types``; ``no entity``:
    no gold entity there. The first kind that applies counts."""
    wanted = set(types)
    gold = _entities(full_gold)
    by_sentence: dict[int, list[tuple[str, int, int]]] = {}
    for s, t, a, b in gold:
        by_sentence.setdefault(s, []).append((t, a, b))
    out: dict[str, dict[str, int]] = {}
    for s, t, a, b in sorted(_entities(pred) - gold):
        if t not in wanted:
            continue
        here = by_sentence.get(s, [])
        exact = [g for g, ga, gb in here if (ga, gb) == (a, b)]
        over = [g for g, ga, gb in here if ga < b and a < gb]  # ends exclusive
        if exact and exact[0] not in wanted:
            kind = "later type"
        elif exact:
            kind = "other type"
        elif t in over:
            kind = "boundary"
        elif any(g not in wanted for g in over):
            kind = "later type, overlapping"
        elif over:
            kind = "other type"
        else:
            kind = "no entity"
        row = out.setdefault(t, {})
        row[kind] = row.get(kind, 0) + 1
    return out
