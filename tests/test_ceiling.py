"""The joint ceiling's per-step scoring (one model that knows every type, rows by seen types)."""

from __future__ import annotations

import pytest

from diancang.data.record import Sentence, Span, spans_to_bio
from diancang.learn.evaluate import score_stream
from diancang.stream import build_stream


class FixedTagger:
    """Stands in for a Tagger: knows ``types`` and predicts the given tags."""

    def __init__(self, types: list[str], tags: dict[str, list[str]]) -> None:
        self.types = types
        self.tags = tags

    def predict_tags(self, sentences, batch_size=64, progress=None):
        out = [self.tags["".join(toks)] for toks in sentences]
        return out, [[1.0] * len(t) for t in out]


def sent(text: str, *spans: tuple[int, int, str]) -> Sentence:
    return Sentence(tokens=list(text), spans=[Span(*s) for s in spans])


def test_rows_score_only_the_types_seen_by_each_step():
    train = [sent("甲乙丙", (0, 1, "A")), sent("甲乙丙", (1, 2, "B")), sent("甲乙丙", (2, 3, "C"))]
    test = [sent("一二三四", (0, 1, "A"), (1, 2, "B"), (2, 3, "C"))]
    # Predicts A right, B wrong (as C at 3) and C right: at step 0 (A) everything is right.
    pred = {"一二三四": ["B-A", "O", "B-C", "B-C"]}
    stream = build_stream(train, [], test, order=["A", "B", "C"], fg=1, pg=1, seed=0)
    matrix = score_stream(FixedTagger(["A", "B", "C"], pred), stream)  # type: ignore[arg-type]
    assert matrix.micro[0] == 1.0 and matrix.macro[0] == 1.0
    assert matrix.per_type[1] == {"A": 1.0, "B": 0.0}
    assert matrix.micro[1] == pytest.approx(2 / 3)  # 1 hit, 1 predicted, 2 gold -> P 1, R 1/2
    # Step 2: hits A and C; predicted A, C, C; gold A, B, C -> P 2/3, R 2/3.
    assert matrix.micro[2] == pytest.approx(2 / 3)
    assert matrix.per_type[2]["C"] == pytest.approx(2 / 3)
    assert matrix.macro[2] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert spans_to_bio(4, test[0].spans)[:3] == ["B-A", "B-B", "B-C"]


def test_a_model_missing_a_type_is_refused():
    train = [sent("甲乙", (0, 1, "A")), sent("甲乙", (1, 2, "B"))]
    stream = build_stream(train, [], train, order=["A", "B"], fg=1, pg=1, seed=0)
    with pytest.raises(ValueError, match="does not know"):
        score_stream(FixedTagger(["A"], {}), stream)  # type: ignore[arg-type]
