"""``seq_star`` (SEQ*): after the first step only the new labels' head rows train."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from diancang.config import build_config
from diancang.errors import ConfigError
from diancang.learn.blobs import Blobs
from diancang.learn.runner import StepRunner
from diancang.model.tagger import Tagger
from diancang.strategies.base import build_strategies
from diancang.strategies.seq_star import frozen_labels
from diancang.stream import TaskStream, build_stream
from tests.test_tagger import make_tagger
from tests.toy import toy_sentences

OLD = [0, 1, 2]  # O, B-LOC, I-LOC
NEW = [3, 4]  # B-PER, I-PER


def stream() -> TaskStream:
    train, test = toy_sentences(42, seed=1), toy_sentences(14, seed=2)
    return build_stream(train, [], test, order=["LOC", "PER", "ORG"], fg=1, pg=1, seed=1)


def runner(tmp_path: Path, params: dict | None = None, crf: bool = False) -> StepRunner:
    cfg = build_config(
        {
            "output_dir": str(tmp_path / "run"),
            "strategies": ["seq_star"],
            "strategy_params": {"seq_star": params or {}},
            "model": {"crf": crf},
            "train": {"epochs": 2, "batch_size": 8, "progress": False, "lr": 1e-3},
        }
    )
    return StepRunner(cfg, build_strategies(cfg.strategies, cfg.strategy_params))


def first_step(tmp_path: Path, crf: bool = False, bilstm: bool = False) -> Tagger:
    s = stream()
    model = make_tagger(toy_sentences(42, seed=1), s.steps[0].new_types, crf=crf, bilstm=bilstm)
    before = copy.deepcopy(model.state_dict())
    runner(tmp_path, crf=crf).run_step(s.steps[0], model, {}, Blobs(tmp_path / "b"), fresh=True)
    # the first step is plain training: the encoder learns
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    return model


def second_step(
    tmp_path: Path, model: Tagger, params: dict | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run step 2 on ``model``; returns the weights after step 1 (grown by the new rows, as the
    step starts) and after step 2."""
    step = stream().steps[1]
    model.add_labels(step.new_types)  # what run_step does first: grow, keep the new rows
    start = copy.deepcopy(model.state_dict())
    run = runner(tmp_path, params, crf=model.crf is not None)
    run.run_step(step, model, {}, Blobs(tmp_path / "b"), fresh=False)
    return start, model.state_dict()


@pytest.fixture(scope="module")
def after_first(tmp_path_factory) -> Tagger:
    return first_step(tmp_path_factory.mktemp("first"))


def encoder_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.startswith("encoder.")]


def test_the_second_step_trains_only_the_new_rows(tmp_path, after_first):
    model = copy.deepcopy(after_first)
    start, end = second_step(tmp_path, model)
    keys = encoder_keys(start)
    assert keys and all(torch.equal(end[k], start[k]) for k in keys)  # (a) encoder
    for name in ("head.weight", "head.bias"):
        assert torch.equal(end[name][OLD], start[name][OLD])  # (b) old rows, O included
        assert not torch.equal(end[name][NEW], start[name][NEW])  # (c) the new rows learnt
    assert all(p.requires_grad for p in model.parameters())  # (d) left as found


def test_the_hooks_are_gone_after_the_step(tmp_path, after_first):
    model = copy.deepcopy(after_first)
    second_step(tmp_path, model)
    batch = model.batch([s.tokens for s in stream().steps[1].train[:8]])
    labels = torch.zeros_like(batch["word_mask"], dtype=torch.long)
    model.train()
    model.loss(model(**batch), labels, batch["word_mask"]).backward()
    grad = model.head.weight.grad
    assert grad is not None and bool((grad[OLD].abs().sum(dim=1) > 0).all())
    assert next(model.encoder.parameters()).grad is not None


def test_unfrozen_old_rows_do_change(tmp_path, after_first):
    model = copy.deepcopy(after_first)
    params = {"freeze_old_rows": False, "freeze_o_row": False}
    start, end = second_step(tmp_path, model, params)
    for row in OLD:  # (e): the check above can fail
        assert not torch.equal(end["head.weight"][row], start["head.weight"][row])
    assert all(torch.equal(end[k], start[k]) for k in encoder_keys(start))


def test_the_o_row_is_a_parameter(tmp_path, after_first):
    model = copy.deepcopy(after_first)
    start, end = second_step(tmp_path, model, {"freeze_o_row": False})
    weight, start_weight = end["head.weight"], start["head.weight"]
    assert not torch.equal(weight[0], start_weight[0])  # O trains
    assert torch.equal(weight[1:3], start_weight[1:3])  # LOC does not


def test_an_unfrozen_encoder_trains(tmp_path, after_first):
    model = copy.deepcopy(after_first)
    start, end = second_step(tmp_path, model, {"freeze_encoder_after_first": False})
    assert any(not torch.equal(end[k], start[k]) for k in encoder_keys(start))
    assert torch.equal(end["head.weight"][OLD], start["head.weight"][OLD])


def test_with_bilstm_and_crf_only_new_entries_train(tmp_path):
    model = first_step(tmp_path / "first", crf=True, bilstm=True)
    start, end = second_step(tmp_path, model)
    lstm = [k for k in start if k.startswith("lstm.")]
    assert lstm and all(torch.equal(end[k], start[k]) for k in lstm)
    assert torch.equal(end["crf.transitions"][:3, :3], start["crf.transitions"][:3, :3])
    assert torch.equal(end["crf.start"][OLD], start["crf.start"][OLD])
    assert not torch.equal(end["crf.transitions"][:, NEW], start["crf.transitions"][:, NEW])
    assert torch.equal(end["head.weight"][OLD], start["head.weight"][OLD])
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_labels():
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert frozen_labels(labels, ["PER"], old=True, o=True).tolist() == [1, 1, 1, 0, 0]
    assert frozen_labels(labels, ["PER"], old=True, o=False).tolist() == [0, 1, 1, 0, 0]
    assert frozen_labels(labels, ["PER"], old=False, o=False).tolist() == [0] * 5


def test_other_heads_are_refused():
    cfg = build_config({"model": {"head": "label_semantic"}, "strategies": ["seq_star"]})
    with pytest.raises(ConfigError, match="seq_star"):
        StepRunner(cfg, build_strategies(["seq_star"], {}))
