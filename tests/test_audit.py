"""The supervision audit: what a step trained its unlabelled words as, against the hidden gold."""

from __future__ import annotations

import pytest
import torch

from diancang.data.record import Sentence, Span
from diancang.learn.audit import LEFT_OUT, SupervisionAudit
from diancang.strategies.base import Target
from tests.test_strategy_contract import tiny_run

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_audit_by_hand():
    hidden = Sentence(list("张三在北京"), [Span(0, 2, "PER"), Span(3, 5, "LOC")])
    given = hidden.keep_types(["PER"])  # the step learns PER: 北京 reads O
    audit = SupervisionAudit([given], [hidden], LABELS)
    audit.align([given, given], [given])  # position 1: a replayed copy, not a step sentence
    inputs = {"index": torch.tensor([0, 1]), "word_mask": torch.ones(2, 5, dtype=torch.bool)}
    # 北 right, 京 missed (O), 在 wrongly LOC; row 1 is a replayed sentence: not counted.
    target = Target(torch.tensor([[3, 4, 1, 1, 0], [1, 2, 0, 0, 0]]))
    audit.observe(inputs, target)
    audit.observe(inputs, Target(torch.full((2, 5), -100)))  # a later epoch: counted once
    s = audit.summary()
    assert s["unlabelled_words"] == 3 and s["hidden_old_entity_words"] == 2
    assert s["pseudo_labelled_words"] == 2 and s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["confusion"] == {"LOC": {"LOC": 1, "O": 1}, "O": {"LOC": 1}}
    audit = SupervisionAudit([given], [hidden], LABELS)
    audit.align([given], [given])
    audit.observe(inputs, Target(torch.full((2, 5), -100)))
    assert audit.summary()["left_out"] == 3 and audit.summary()["confusion"] == {
        LEFT_OUT: {"LOC": 2, "O": 1}
    }


@pytest.mark.parametrize("name", ["distill", "cpfd", "rdp"])
def test_runs_record_the_audit_of_every_step_with_a_teacher(tmp_path, name):
    learner, _ = tiny_run(tmp_path / name, [name], epochs=15)
    learner.run()
    audits = learner.progress.audits
    assert audits[0] is None and all(a is not None for a in audits[1:])
    for a in audits[1:]:
        assert a["unlabelled_words"] > 0 and a["hidden_old_entity_words"] > 0
        if name == "distill":  # every unlabelled word is out of the cross-entropy
            assert a["left_out"] == a["unlabelled_words"] and a["precision"] is None
        else:
            assert a["pseudo_labelled_words"] > 0 and 0.0 <= a["precision"] <= 1.0
        if name == "rdp":  # every unlabelled word is trained, as O or an old type
            assert a["left_out"] == 0
