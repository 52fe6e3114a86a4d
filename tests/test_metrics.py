"""Strict IOB2 entity scores, checked against hand-computed values and seqeval."""

from __future__ import annotations

import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from diancang.errors import DiancangError
from diancang.evaluation.metrics import entity_scores

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER", "O"]]
# sentence 0: the LOC starts with I- (no B-): an entity only in lenient mode.
PRED = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "O", "B-LOC", "O"]]


def test_hand_computed_strict_scores():
    s = entity_scores(GOLD, PRED, ["PER", "LOC", "ORG", "MISC"])
    # gold: PER x2, LOC, ORG = 4; pred (strict): PER, ORG, LOC(sent 1) = 3; correct: PER, ORG.
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 4)
    assert s.f1 == pytest.approx(4 / 7)
    per = s.per_type
    assert (per["PER"].precision, per["PER"].recall) == (1.0, 0.5)
    assert per["PER"].f1 == pytest.approx(2 / 3)
    assert (per["LOC"].f1, per["LOC"].predicted, per["LOC"].support) == (0.0, 1, 1)
    assert (per["ORG"].f1, per["ORG"].support) == (1.0, 1)
    assert (per["MISC"].f1, per["MISC"].support) == (0.0, 0)
    # macro over the types present in gold (PER, LOC, ORG); MISC (no gold) is left out
    assert s.macro_f1 == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_strict_differs_from_lenient_and_matches_seqeval_strict():
    ours = entity_scores(GOLD, PRED, ["PER", "LOC", "ORG"]).f1
    assert ours == pytest.approx(f1_score(GOLD, PRED, mode="strict", scheme=IOB2))
    assert f1_score(GOLD, PRED) == pytest.approx(0.75)  # lenient: 3 of 4 right both ways
    assert ours < 0.75


def test_only_the_given_types_count():
    s = entity_scores(GOLD, PRED, ["PER"])
    assert (s.precision, s.recall) == (1.0, 0.5)
    assert list(s.per_type) == ["PER"]


def test_empty_and_perfect():
    perfect = entity_scores(GOLD, GOLD, ["PER", "LOC", "ORG"])
    assert (perfect.f1, perfect.macro_f1) == (1.0, 1.0)
    empty = entity_scores([["O"]], [["O"]], ["PER"])
    assert (empty.precision, empty.recall, empty.f1, empty.macro_f1) == (0.0, 0.0, 0.0, 0.0)


def test_to_dict():
    d = entity_scores(GOLD, PRED, ["PER", "LOC", "ORG"]).to_dict()
    assert d["f1"] == pytest.approx(4 / 7)
    assert d["per_type"]["PER"]["support"] == 2


def test_bad_input_is_a_clear_error():
    with pytest.raises(DiancangError, match="sentences"):
        entity_scores(GOLD, PRED[:1], ["PER"])
    with pytest.raises(DiancangError, match="sentence 1"):
        entity_scores(GOLD, [PRED[0], ["O"]], ["PER"])
    with pytest.raises(DiancangError, match="not IOB2"):
        entity_scores([["S-PER"]], [["O"]], ["PER"])


def test_confusion_counts_entities_read_as_another_type():
    from diancang.evaluation.metrics import entity_scores

    gold = [["B-book", "I-book", "O", "B-game", "O", "B-book"]]
    pred = [["B-game", "I-game", "O", "B-game", "O", "B-book"]]
    scores = entity_scores(gold, pred, ["book", "game"])
    assert scores.confusion == {"book": {"game": 1}}  # same boundaries, other type
    assert entity_scores(gold, gold, ["book", "game"]).confusion == {}


def test_false_positives_are_sorted_by_where_they_land():
    from diancang.evaluation.metrics import false_positive_kinds

    # full gold: A and B are learnt; C is a later type the model has not seen
    gold = [["B-C", "I-C", "O", "B-A", "I-A", "O", "B-B", "O", "O", "B-C", "I-C", "I-C"]]
    pred = [["B-A", "I-A", "O", "B-A", "O", "O", "B-A", "O", "B-A", "O", "B-B", "I-B"]]
    # A at 0-1: exactly the later C; A at 3: same type, shorter; A at 6: exactly the learnt B;
    # A at 8: nothing there; B at 10-11: overlaps the later C at 9-11
    assert false_positive_kinds(gold, pred, ["A", "B"]) == {
        "A": {"later type": 1, "boundary": 1, "other type": 1, "no entity": 1},
        "B": {"later type, overlapping": 1},
    }
    assert false_positive_kinds(gold, gold, ["A", "B"]) == {}  # a perfect tagger has none
