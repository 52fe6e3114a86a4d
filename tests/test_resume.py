"""The epoch state of an unfinished step: what it restores, and what it refuses to.

A whole killed-and-resumed run is in the strategy contract
(``test_a_killed_step_resumes_to_the_same_weights``); these are the pieces.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from diancang.learn.resume import EpochState


def _parts(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, object, torch.Generator]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (i + 1))
    return model, opt, sched, torch.Generator().manual_seed(seed)


def _train(model: nn.Module, opt: torch.optim.Optimizer, sched, gen: torch.Generator) -> None:
    for _ in range(3):
        x = torch.randn(4, 3, generator=gen) + torch.randn(4, 3)  # every generator drawn
        x[:, 0] *= random.random() + float(np.random.rand())
        loss = model(x).pow(2).sum()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def _state(tmp_path, key, kept: dict) -> EpochState:
    def load_more(tensors: dict, plain: dict) -> None:
        kept.update(tensors=tensors, plain=plain)

    return EpochState(tmp_path / "s", key, lambda: ({"t": torch.ones(2)}, {"n": 3}), load_more)


def test_a_restored_state_trains_on_exactly_as_the_saved_one_would(tmp_path):
    model, opt, sched, gen = _parts(1)
    _train(model, opt, sched, gen)
    _state(tmp_path, {"k": 1}, {}).save(2, False, model, [], opt, sched, gen)
    _train(model, opt, sched, gen)  # what an unkilled run does next
    expected = model.weight.detach().clone()

    model, opt, sched, gen = _parts(7)  # a fresh process: other weights, other generators
    random.seed(7)
    kept: dict = {}
    assert _state(tmp_path, {"k": 1}, kept).restore(model, [], opt, sched, gen) == (2, False)
    assert kept["plain"] == {"n": 3} and torch.equal(kept["tensors"]["t"], torch.ones(2))
    _train(model, opt, sched, gen)
    assert torch.equal(model.weight, expected)


def test_a_state_of_another_run_is_ignored_with_a_warning(tmp_path, caplog):
    model, opt, sched, gen = _parts(1)
    _state(tmp_path, {"k": 1}, {}).save(1, False, model, [], opt, sched, gen)
    with caplog.at_level(logging.WARNING, "diancang.learn"):
        assert _state(tmp_path, {"k": 2}, {}).restore(model, [], opt, sched, gen) == (0, False)
    assert "another run's or step's state" in caplog.text


def test_a_kill_between_the_renames_leaves_the_previous_state(tmp_path):
    model, opt, sched, gen = _parts(1)
    state = _state(tmp_path, {"k": 1}, {})
    state.save(1, True, model, [], opt, sched, gen)
    state.folder.rename(state.folder.with_name("s.old"))  # killed after moving it aside
    assert state.restore(model, [], opt, sched, gen) == (1, True)
    state.clear()
    assert not any(tmp_path.iterdir())
    assert state.restore(model, [], opt, sched, gen) == (0, False)


def test_a_run_trained_by_another_strategy_version_is_not_resumed(tmp_path):
    from diancang.errors import ConfigError
    from diancang.pipeline import check_strategy_versions

    saved = tmp_path / "config.yaml"
    saved.write_text("strategies:\n- exemplars@3\n- ctr@4\n", encoding="utf-8")
    check_strategy_versions(saved, ["exemplars@3", "ctr@4"])  # the same versions: resumed
    check_strategy_versions(tmp_path / "none.yaml", ["ctr@5"])  # nothing saved yet
    with pytest.raises(ConfigError, match=r"ctr@4 -> ctr@5.*--restart"):
        check_strategy_versions(saved, ["exemplars@3", "ctr@5"])
