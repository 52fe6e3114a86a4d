"""Strategies compose in any order without changing each other's supervision."""

from __future__ import annotations

import copy

import pytest
import torch

from diancang.learn.blobs import Blobs
from diancang.learn.runner import StepRunner
from diancang.model.tagger import Tagger
from diancang.strategies.base import StepContext, build_strategies
from tests.test_strategy_contract import tiny_run


def loss_calls(tmp_path, names, base_folder, monkeypatch) -> list[list[tuple]]:
    """Per training batch of the second step: the (labels, weights) of every Tagger.loss call
    (the base loss first, then any strategy's), for a run of ``names`` starting from the same
    first step."""
    learner, _ = tiny_run(
        tmp_path / "+".join(names),
        names,
        epochs=1,
        stream={"max_steps": 2},
        train_extra={"first_step_from": str(base_folder)},
    )
    batches: list[list[tuple]] = []
    original_loss = Tagger.loss
    original_batch = StepRunner.batch_loss

    def batch_loss(self, pairs, model, inputs, *rest):
        batches.append([])
        return original_batch(self, pairs, model, inputs, *rest)

    def loss(self, out, labels, word_mask, weights=None):
        if batches:
            w = None if weights is None else weights.detach().clone()
            batches[-1].append((labels.detach().clone(), w))
        return original_loss(self, out, labels, word_mask, weights)

    monkeypatch.setattr(StepRunner, "batch_loss", batch_loss)
    monkeypatch.setattr(Tagger, "loss", loss)
    learner.run()
    monkeypatch.undo()
    return batches


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    learner, _ = tiny_run(tmp, ["finetune"], epochs=6, stream={"max_steps": 1})
    learner.run()
    return tmp / "run" / "checkpoints" / "step-0"


def same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and (
        (a[1] is None and b[1] is None) or (a[1] is not None and torch.equal(a[1], b[1]))
    )


@pytest.mark.parametrize("teacher", ["distill", "cpfd", "rdp"])
def test_fgm_keeps_the_supervision_of_teacher_strategies(
    tmp_path, monkeypatch, base_folder, teacher
):
    alone = loss_calls(tmp_path, [teacher], base_folder, monkeypatch)
    assert alone and all(len(calls) == 1 for calls in alone)
    for order in ([teacher, "fgm"], ["fgm", teacher]):
        composed = loss_calls(tmp_path, order, base_folder, monkeypatch)
        # The first batch is the same batch of the same model in both runs; fgm adds its
        # clean and adversarial losses, both on exactly the target the teacher strategy set.
        first = composed[0]
        assert len(first) == 3, order
        assert all(same(call, alone[0][0]) for call in first), order
        for calls in composed:
            assert all(same(call, calls[0]) for call in calls[1:])
    if teacher == "distill":  # O words are out of every cross-entropy
        labels = alone[0][0][0]
        assert not bool((labels == 0).any())


@pytest.mark.parametrize("name", ["cpfd", "rdp"])
def test_pseudo_labels_train_a_crfs_transitions(tmp_path, name):
    learner, stream = tiny_run(
        tmp_path, [name], epochs=6, model={"crf": True}, stream={"max_steps": 1}
    )
    learner.run()
    model = learner.model
    assert model is not None and model.crf is not None
    runner = StepRunner(learner.config, build_strategies([name], {}))
    (strategy,) = runner.strategies
    step = stream.steps[1]
    previous = copy.deepcopy(model).eval().requires_grad_(False)
    model.add_labels(step.new_types)
    ctx = StepContext(step, model, previous, learner.config, [], [], Blobs(tmp_path / "b"))
    ctx.state = None if strategy.State is None else strategy.State()
    ctx.work = strategy.begin_step(ctx)
    batch = next(iter(runner.loader(model, step.train, seed=0)))
    model.train()
    model.zero_grad()
    runner.batch_loss([(strategy, ctx)], model, batch).backward()
    grad = model.crf.transitions.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    if name == "rdp":  # the transitions learnt from pseudo-labels it gave
        assert int(ctx.work.pseudo.sum()) > 0


def test_the_teacher_runs_once_per_sentence_and_step(tmp_path):
    from diancang.learn.teacher import TeacherCache
    from tests.test_tagger import make_tagger
    from tests.toy import toy_sentences

    data = [s.keep_types(["LOC", "PER"]) for s in toy_sentences(20)]
    teacher = make_tagger(data, ["LOC", "PER"]).eval()
    learner, _ = tiny_run(tmp_path, ["cpfd"])
    cache = TeacherCache(teacher, hidden=True, max_bytes=1 << 30)
    loader = learner.loader(teacher, data, seed=0, batch_size=6)
    first = [(batch, cache(batch)) for batch in loader]
    assert cache.live == len(first) and len(cache.rows) == len(data)
    for batch in loader:  # another epoch, other batches: assembled from the kept rows
        kept = cache(batch)
        with torch.no_grad():
            live = teacher(**batch, output_hidden_states=True)
        words, tokens = batch["word_mask"], batch["attention_mask"].bool()
        assert torch.allclose(kept.logits[words], live.logits[words], atol=1e-5)
        assert torch.allclose(kept.features[words], live.features[words], atol=1e-5)
        for a, b in zip(kept.hidden_states, live.hidden_states, strict=True):
            assert torch.allclose(a[tokens], b[tokens], atol=1e-5)
    assert cache.live == len(first)  # no forward pass in the second epoch
    small = TeacherCache(teacher, hidden=False, max_bytes=1)
    batch = next(iter(loader))
    small(batch), small(batch)
    assert small.live == 2 and not small.rows  # over its budget it keeps nothing
