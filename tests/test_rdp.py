"""``rdp``: prototypes, prototype-rectified pseudo-labels and the distillation terms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from diancang.data.record import Sentence, Span, spans_to_bio
from diancang.model.tagger import TaggerOutput
from diancang.strategies.base import Target
from diancang.strategies.rdp import (
    RDP,
    RDPWork,
    class_means,
    old_prototypes,
    prototype_log_weights,
    prototypical_pseudo_labels,
    relation_loss,
    self_entropy,
)
from diancang.strategies.words import word_outputs
from tests.test_strategy_contract import tiny_run
from tests.test_tagger import make_tagger
from tests.toy import toy_sentences

OLD = ["O", "B-A", "I-A"]  # the teacher's labels; the new type's B-X, I-X are 3, 4


#: The hand-made teacher's feature and logits per character.
FEATURES = {"a": [1.0, 0.0], "b": [3.0, 0.0], "c": [0.0, 2.0], "x": [9.0, 9.0]}
LOGITS = {"a": [0.0, 5.0, 0.0], "b": [0.0, 5.0, 0.0], "c": [5.0, 0.0, 0.0], "x": [0.0, 5.0, 0.0]}


class HandTeacher:
    """A teacher whose feature and logits per word are fixed by its character."""

    labels = OLD
    feature_size = 2
    training = False

    def eval(self) -> HandTeacher:
        return self

    def train(self, mode: bool = True) -> HandTeacher:
        return self

    def batch(self, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in sentences)
        chars = [[*s, *["c"] * (width - len(s))] for s in sentences]  # padding reads "c"
        mask = torch.tensor([[j < len(s) for j in range(width)] for s in sentences])
        return {
            "word_mask": mask,
            "features": torch.tensor([[FEATURES[c] for c in row] for row in chars]),
            "logits": torch.tensor([[LOGITS[c] for c in row] for row in chars]),
        }

    def __call__(self, **batch: torch.Tensor) -> TaggerOutput:
        return TaggerOutput(logits=batch["logits"], features=batch["features"])


def test_class_means_by_hand():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    means, counts = class_means(feats, torch.tensor([1, 1, 0, 0]), 3)
    assert means.tolist() == [[0.0, 3.0], [2.0, 0.0], [0.0, 0.0]]
    assert counts.tolist() == [2, 2, 0]


def test_prototypes_are_mean_teacher_features_of_o_words_per_predicted_label():
    # "x" is a gold new-type word: never a prototype member, though the teacher calls it B-A.
    # The padding of the shorter sentence (read as "c") is not a word either.
    sentences = [
        Sentence(tokens=list("acx"), spans=[Span(2, 3, "X")]),
        Sentence(tokens=list("bc"), spans=[]),
    ]
    protos, members = old_prototypes(HandTeacher(), sentences)  # type: ignore[arg-type]
    assert members.tolist() == [2, 2, 0]  # O: c, c; B-A: a, b; I-A: none
    assert protos.tolist() == [[0.0, 2.0], [2.0, 0.0], [0.0, 0.0]]


def test_prototypes_of_a_real_tagger_match_its_word_outputs():
    data = [s.keep_types(["PER"]) for s in toy_sentences(14)]  # LOC/ORG/PRO words read O
    teacher = make_tagger(data, ["LOC"])
    protos, members = old_prototypes(teacher, data, batch_size=4)
    words = word_outputs(teacher, data)
    o = torch.tensor([t == "O" for t in words.tags])
    pred = words.logits.argmax(-1)
    assert int(members.sum()) == int(o.sum())  # every O word, no PER word
    for c in range(len(teacher.labels)):
        rows = words.features[o & (pred == c)]
        assert members[c] == len(rows)
        if len(rows):
            assert torch.allclose(protos[c], rows.mean(0), atol=1e-5)


def test_a_word_far_from_its_predicted_prototype_loses_the_pseudo_label():
    protos = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 0.0]])  # O, B-A; I-A has no members
    members = torch.tensor([5, 5, 0])
    teacher = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 5.0]])  # B-A, B-A, I-A
    feats = torch.tensor([[4.0, 0.0], [0.0, 0.0], [4.0, 0.0]])  # near B-A, near O, near B-A
    log_w = prototype_log_weights(feats, protos, members, 1.0)
    assert log_w[0, 1] > log_w[1, 1]  # the far word's B-A weight is lower
    assert log_w[:, 2].isinf().all()  # no prototype: no weight
    assert log_w.exp().sum(-1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    labels = prototypical_pseudo_labels(teacher, feats, protos, members, 1.0)
    assert labels.tolist() == [1, 0, 1]  # the far word goes back to O; I-A is never given
    # Nearly flat prototype weights (a tiny scale): the teacher's own argmax decides.
    assert prototypical_pseudo_labels(teacher[:2], feats[:2], protos, members, 1e-3).tolist() == [
        1,
        1,
    ]
    # Very far from everything: the product of tiny weights must not underflow into NaN.
    far = torch.tensor([[1e4, 0.0], [-1e4, 0.0]])
    assert prototypical_pseudo_labels(teacher[:2], far, protos, members, 1.0).tolist() == [1, 0]
    # No prototype at all: no preference.
    none = torch.zeros(3, dtype=torch.long)
    assert torch.equal(prototype_log_weights(feats, protos, none, 1.0), torch.zeros(3, 3))


def _work(protos: torch.Tensor, members: torch.Tensor) -> RDPWork:
    return RDPWork(1, OLD, protos, members, torch.zeros(3, dtype=torch.long))


def test_targets_relabel_only_gold_o_words_and_count_them_once():
    protos = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 0.0]])
    work = _work(protos, torch.tensor([5, 5, 0]))
    labels = torch.tensor([[0, 3, 4, 0, -100]])
    teacher = TaggerOutput(
        logits=torch.tensor([[[0.0, 5.0, 0.0]] * 5]),  # the teacher says B-A everywhere
        features=torch.tensor([[[8.0, 0.0], [8.0, 0.0], [8.0, 0.0], [0.0, 0.0], [8.0, 0.0]]]),
    )
    inputs = {"labels": labels, "index": torch.tensor([7])}
    batch = SimpleNamespace(inputs=inputs, teacher=teacher)
    weights = torch.full((1, 5), 0.5)
    rdp = RDP()
    out = rdp.targets(SimpleNamespace(work=work), batch, Target(labels.clone(), weights))
    # New-type gold (3, 4) and a left-out word stay. Word 3 sits on O's prototype, 8 away
    # from B-A's: that outweighs the teacher's log-odds of 5 for B-A, so it is trained as O.
    assert out.labels.tolist() == [[1, 3, 4, 0, -100]]
    assert out.weights is weights
    assert work.pseudo.tolist() == [1, 1, 0] and work.rectified == 1
    # Another strategy left the O words out: RDP still gives them their pseudo-labels.
    again = rdp.targets(
        SimpleNamespace(work=work), batch, Target(labels.masked_fill(labels == 0, -100))
    )
    assert again.labels.tolist() == out.labels.tolist()
    assert work.pseudo.tolist() == [1, 1, 0]  # sentence 7 is counted once
    report = work.report()
    assert (
        report.pseudo_labels == {"O": 1, "B-A": 1, "I-A": 0} and report.prototype_words["B-A"] == 5
    )
    # The teacher's argmax alone (ablation), and the first step (no teacher): unchanged.
    plain = RDP(RDP.Params(pseudo_labels="teacher"))
    assert plain.targets(SimpleNamespace(work=work), batch, Target(labels)).labels.tolist() == [
        [1, 3, 4, 1, -100]
    ]
    off = RDP(RDP.Params(pseudo_labels="off"))  # ablation: O words stay O
    assert off.begin_step(SimpleNamespace(previous=object())) is None  # type: ignore[arg-type]
    target = Target(labels)
    first = SimpleNamespace(inputs=inputs, teacher=None)
    assert rdp.targets(SimpleNamespace(work=None), first, target) is target


def test_kd_is_zero_when_student_and_teacher_agree_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.randn(1, 4, 3)
    agree = torch.cat([teacher, torch.full((1, 4, 2), -40.0)], dim=-1)  # no mass on new labels
    inputs = {"labels": torch.tensor([[0, 0, 3, 0]]), "word_mask": torch.ones(1, 4, dtype=bool)}
    rdp = RDP()

    def terms(student: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        batch = SimpleNamespace(
            inputs={**inputs, "labels": inputs["labels"] if labels is None else labels},
            out=TaggerOutput(logits=student, features=torch.zeros(1, 4, 2)),
            teacher=TaggerOutput(logits=teacher, features=torch.zeros(1, 4, 2)),
        )
        return rdp.loss_terms(SimpleNamespace(), batch, Target(inputs["labels"]))

    assert set(terms(agree)) == {"kd", "relation", "entropy"}
    assert terms(agree)["kd"].item() == pytest.approx(0.0, abs=1e-6)
    other = agree.clone()
    other[..., 1] += 3.0
    assert terms(other)["kd"].item() > 1e-3
    # Only gold-O words are distilled: a disagreement on a new-type word costs nothing.
    assert terms(other, torch.tensor([[3, 4, 3, 4]]))["kd"].item() == 0.0
    assert terms(agree)["entropy"].item() > 0 and terms(agree)["relation"].item() > 0
    assert RDP(RDP.Params(relation_weight=0, entropy_weight=0)).loss_terms(
        SimpleNamespace(),
        SimpleNamespace(
            inputs=inputs,
            out=TaggerOutput(logits=agree, features=torch.zeros(1, 4, 2)),
            teacher=TaggerOutput(logits=teacher, features=torch.zeros(1, 4, 2)),
        ),
        Target(inputs["labels"]),
    ).keys() == {"kd"}
    no_teacher = SimpleNamespace(inputs=inputs, teacher=None)
    assert rdp.loss_terms(SimpleNamespace(), no_teacher, Target(inputs["labels"])) == {}


def test_relation_loss_and_self_entropy_by_hand():
    # Old labels O, B-A (teacher logits 0: sigmoid 1/2); all labels O, B-A, B-X.
    teacher = torch.zeros(2, 2)
    student = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    gold = torch.tensor([2, 0])  # a new-type word, an O word
    log_q = [-math.log(2 + math.e**2)] * 2 + [2 - math.log(2 + math.e**2)]

    def ce(t: list[float]) -> float:
        z = sum(math.exp(v) for v in t)
        return -sum(math.exp(v) / z * lq for v, lq in zip(t, log_q, strict=True)) / 3

    expected = (ce([0.5, 0.5, 1.0]) + ce([0.5, 0.5, 0.0])) / 2
    assert relation_loss(student, teacher, gold).item() == pytest.approx(expected, abs=1e-6)
    assert relation_loss(student[:0], teacher[:0], gold[:0]).item() == 0.0
    assert self_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4) / 4, abs=1e-6)
    assert self_entropy(torch.tensor([[50.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_runs_report_prototypes_and_pseudo_labels_per_step(tmp_path):
    learner, stream = tiny_run(tmp_path, ["rdp"], epochs=1)
    learner.run()
    history = learner.states["rdp"].history
    assert [r.step for r in history] == [1, 2]  # the first step has no teacher
    for report, step in zip(history, stream.steps[1:], strict=True):
        n_o = sum(t == "O" for s in step.train for t in spans_to_bio(len(s.tokens), s.spans)[:64])
        assert sum(report.prototype_words.values()) == n_o  # every O word, once
        assert sum(report.pseudo_labels.values()) == n_o  # one epoch: each O word once
        assert set(report.pseudo_labels) == set(report.prototype_words)
