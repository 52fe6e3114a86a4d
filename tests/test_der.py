"""DER: a branch changes no prediction until trained, round-trips, and old branches and the
trunk never change in later steps."""

from __future__ import annotations

import torch

from diancang.learn.checkpoint import step_dir
from diancang.model.tagger import Tagger
from tests.test_strategy_contract import tiny_run
from tests.test_tagger import make_tagger, overfit
from tests.toy import toy_sentences


def test_a_new_branch_changes_nothing_until_trained_and_round_trips(tmp_path):
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types)
    overfit(model, data, epochs=5)
    model.eval()
    batch = model.batch([s.tokens for s in data[:4]])
    with torch.no_grad():
        before = model(**batch).logits
        model.add_branch(1)  # the top layer becomes branch 0: the same computation
        assert torch.equal(model(**batch).logits, before)
        model.add_branch(1)  # a copy, read through zero columns
        assert torch.equal(model(**batch).logits, before)
    assert model.spec.der_branches == 2 and model.head.weight.shape[1] == 2 * 64
    model.save_pretrained(tmp_path / "m")
    again = Tagger.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, before)


def _frozen_part(model: Tagger, branches: int) -> dict[str, torch.Tensor]:
    """The trunk and the first ``branches`` branches' weights."""
    assert model.branches is not None
    out = {f"trunk.{k}": v.clone() for k, v in model.encoder.state_dict().items()}
    for i in range(branches):
        out |= {f"b{i}.{k}": v.clone() for k, v in model.branches.branches[i].state_dict().items()}
    return out


def test_old_branches_and_the_trunk_never_change(tmp_path):
    params = {"der": {"layers": 1, "mask": True}, "exemplars": {"per_type": 5}}
    learner, _ = tiny_run(tmp_path, ["der", "exemplars"], epochs=3, strategy_params=params)
    matrix = learner.run()
    final = learner.model
    assert final is not None and final.spec.der_branches == 3
    for step in (0, 1):
        then = Tagger.from_pretrained(step_dir(tmp_path / "run", step))
        kept, now = _frozen_part(then, step + 1), _frozen_part(final, step + 1)
        assert kept.keys() == now.keys()
        assert all(torch.equal(kept[k], now[k]) for k in kept), f"step {step} changed"
    # the newest branch did train: step 1's branch 1 left its copy of step 0's branch 0
    first = Tagger.from_pretrained(step_dir(tmp_path / "run", 0)).branches.branches[0]
    second = Tagger.from_pretrained(step_dir(tmp_path / "run", 1)).branches.branches[1]
    pairs = zip(first.parameters(), second.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    history = learner.states["der"].history
    assert [h["branches"] for h in history] == [1, 2, 3]
    assert history[0]["pruned_channels"] is None and isinstance(history[2]["pruned_channels"], int)
    assert matrix.n_steps == 3


def test_consolidation_bounds_the_branches_and_keeps_the_types(tmp_path):
    params = {
        "der": {"layers": 1, "max_branches": 2, "consolidate_epochs": 15, "consolidate_lr": 1e-3},
        "exemplars": {"per_type": 10},
    }
    learner, stream = tiny_run(tmp_path, ["exemplars", "der"], epochs=6, strategy_params=params)
    matrix = learner.run()
    history = learner.states["der"].history
    assert [h["consolidated"] for h in history] == [False, False, True]
    model = learner.model
    assert model.spec.der_branches == 1 and model.head.weight.shape[1] == 64
    reloaded = Tagger.from_pretrained(step_dir(tmp_path / "run", 2))
    tokens = [s.tokens for s in stream.steps[-1].test]
    assert reloaded.predict_tags(tokens) == model.predict_tags(tokens)
    # the one-branch model keeps what the whole model knew of the older types
    before, after = matrix.per_type[1], matrix.per_type[2]
    assert sum(before.values()) > 0
    assert all(after[t] >= 0.8 * before[t] for t in before), (before, after)
