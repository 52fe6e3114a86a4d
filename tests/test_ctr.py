"""CTR plugins: routing's coupling sums to 1; a later task leaves an earlier task's outputs
bit-identical; the plugins round-trip."""

from __future__ import annotations

import pytest
import torch

from diancang.learn.checkpoint import step_dir
from diancang.model.ctr import route, squash
from diancang.model.tagger import Tagger
from tests.test_strategy_contract import tiny_run


def test_transfer_routing_couplings_sum_to_one_and_follow_agreement():
    torch.manual_seed(0)
    priors = torch.randn(2, 5, 3, 8)  # (B, T, tasks, d)
    out, coupling = route(priors, 3)
    assert out.shape == (2, 5, 8) and coupling.shape == (2, 5, 3)
    assert torch.allclose(coupling.sum(-1), torch.ones(2, 5))
    assert float(out.norm(dim=-1).max()) < 1  # squashed
    # two agreeing capsules draw the coupling away from a dissenting one
    agree = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]])
    _, c = route(agree, 3)
    assert c[2] < c[0] and c[2] < c[1]
    assert torch.allclose(squash(torch.zeros(4)), torch.zeros(4))


def _task_pass(model: Tagger, batch, task: int):
    """Task ``task``'s pass alone: word features (B, W, H) and logits (B, W, C)."""
    assert model.plugins is not None
    model.eval()
    model.plugins.run.only = [task]
    with torch.no_grad():
        out = model(**batch)
    return out.features, out.logits


def test_a_later_task_leaves_an_earlier_tasks_outputs_bit_identical(tmp_path):
    params = {"ctr": {"adapter": 16, "capsule": 4, "capsule_hidden": 8}}
    learner, stream = tiny_run(tmp_path, ["ctr"], epochs=4, strategy_params=params)
    learner.run()
    final = learner.model
    assert final is not None and final.spec.ctr_tasks == [["LOC"], ["PER"], ["ORG"]]
    batch = final.batch([s.tokens for s in stream.steps[-1].test])
    for task in (0, 1):
        then = Tagger.from_pretrained(step_dir(tmp_path / "run", task))
        (feats, logits), (now_feats, now_logits) = (
            _task_pass(then, batch, task),
            _task_pass(final, batch, task),
        )
        assert torch.equal(feats, now_feats)  # bit-identical
        # its labels come first; the head's matrix has grown, so its rows' products are
        # summed in another order: equal to float precision
        assert torch.allclose(logits, now_logits[..., : logits.shape[-1]], atol=1e-5)
    # task-incremental predictions of the first type: exactly those of the model that learned it
    tokens = [s.tokens for s in stream.steps[-1].test]
    first = Tagger.from_pretrained(step_dir(tmp_path / "run", 0))
    loc = [["LOC"]] * len(tokens)
    assert final.predict_tags(tokens, types=loc)[0] == first.predict_tags(tokens, types=loc)[0]
    # the newest task's plugins did train (its projections start at zero)
    assert any(float(p.larger[2].weight.detach().abs().sum()) > 0 for p in final.plugins.plugins)
    reloaded = Tagger.from_pretrained(step_dir(tmp_path / "run", 2))
    final.plugins.run.only = None
    assert reloaded.predict_tags(tokens) == final.predict_tags(tokens)
    history = learner.states["ctr"].history
    assert [h["task"] for h in history] == [0, 1, 2]


def test_the_arbiter_resolves_a_hand_made_conflict():
    from diancang.model.arbiter import Arbiter, arbitrate, fit_arbiter

    # per word, experts (book, game) as (log p(O), best entity log p)
    conflict = [[-2.0, -0.1], [-1.5, -0.3]]  # both claim it; book is surer, game is right
    book_only = [[-2.0, -0.1], [-0.05, -4.0]]
    nobody = [[-0.05, -4.0], [-0.05, -4.0]]
    feats = torch.tensor([conflict] * 40 + [book_only] * 40 + [nobody] * 40)
    gold = torch.tensor([2] * 40 + [1] * 40 + [0] * 40)
    rule = Arbiter(2)  # starts as the calibrated rule: the surer expert wins
    assert int(rule(feats[:1]).argmax(-1)) == 1
    trained = fit_arbiter(feats, gold)
    with torch.no_grad():
        assert trained(feats).argmax(-1).tolist() == gold.tolist()
        # merged over labels O, B-book, I-book, B-game, I-game: the word goes to B-game
        keeps = [torch.tensor([1, 1, 1, 0, 0]).bool(), torch.tensor([1, 0, 0, 1, 1]).bool()]
        logps = [torch.tensor([[[-2.0, -0.1, -3.0, -1e4, -1e4]]]),
                 torch.tensor([[[-1.5, -1e4, -1e4, -0.3, -3.0]]])]  # fmt: skip
        assert int(arbitrate(trained, logps, keeps).argmax(-1)) == 3


def test_the_arbiter_weighs_an_old_expert_with_few_words_like_the_newest():
    from diancang.model.arbiter import expert_weights, fit_arbiter

    weights = expert_weights(torch.tensor([0, 0, 1, 2, 2, 2]), 2)
    assert weights.tolist() == pytest.approx([1.0, 2.0, 2 / 3])
    # both experts claim every word; the old one is right on 20 words (it is a little surer
    # there), the new one on 1,000 (the step's data against the memory); the scores overlap
    g = torch.Generator().manual_seed(0)

    def words(n: int, old: float, new: float) -> torch.Tensor:
        mean = torch.tensor([[-1.5, old], [-1.5, new]])
        return mean + 0.2 * torch.randn(n, 2, 2, generator=g)

    feats = torch.cat([words(20, -0.2, -0.4), words(1000, -0.4, -0.2)])
    gold = torch.tensor([1] * 20 + [2] * 1000)
    probe = words(200, -0.2, -0.4)  # fresh words the old expert is right on

    def old_recall(balance: bool) -> float:
        arbiter = fit_arbiter(feats, gold, balance=balance)
        with torch.no_grad():
            picked = arbiter(probe).argmax(-1)
        return float((picked == 1).float().mean())

    assert old_recall(False) < 0.2 < 0.5 < old_recall(True)


def test_the_arbiter_learns_only_from_words_whose_right_expert_is_known():
    from diancang.strategies.ctr import known_words

    claim, quiet = [-2.0, -0.1], [-0.05, -4.0]  # (log p(O), best entity log p)
    feats = torch.tensor(
        [
            [quiet, claim],  # a word of the new task's type (expert 2)
            [claim, quiet],  # O, but the old expert claims it: maybe an unlabelled old entity
            [quiet, claim],  # O that only the new expert claims: its false positive
            [quiet, quiet],  # O nobody claims
        ]
    )
    gold = torch.tensor([2, 0, 0, 0])
    # a step's own sentence, labelled for the new task (2) only
    assert known_words(feats, gold, {2}).tolist() == [True, False, True, True]
    # a memory sentence of the old task (1): the new expert's claim on its O word is unknown
    assert known_words(feats, gold, {1}).tolist() == [True, True, False, True]
    # labelled for both: every word is known
    assert known_words(feats, gold, {1, 2}).all()


def test_ctr_trains_an_arbiter_over_its_tasks_and_saves_it(tmp_path):
    params = {"ctr": {"adapter": 16, "capsule": 4, "capsule_hidden": 8},
              "exemplars": {"per_type": 5}}  # fmt: skip
    learner, stream = tiny_run(tmp_path, ["exemplars", "ctr"], epochs=3, strategy_params=params)
    learner.run()
    final = learner.model
    assert final.spec.ctr_arbiter == 3 and final.plugins.arbiter.experts == 3
    reloaded = Tagger.from_pretrained(step_dir(tmp_path / "run", 2))
    assert reloaded.plugins.arbiter is not None
    tokens = [s.tokens for s in stream.steps[-1].test]
    assert reloaded.predict_tags(tokens) == final.predict_tags(tokens)


def test_ctr_consolidation_bounds_the_tasks_and_keeps_the_predictions(tmp_path, monkeypatch):
    from diancang.strategies import ctr as ctr_strategy

    params = {
        "ctr": {"adapter": 16, "capsule": 4, "capsule_hidden": 8, "max_tasks": 1,
                "consolidate_epochs": 15, "consolidate_lr": 1e-3},
        "exemplars": {"per_type": 10},
    }  # fmt: skip
    learner, stream = tiny_run(
        tmp_path, ["exemplars", "ctr"], epochs=20, strategy_params=params,
        train_extra={"head_lr": 1e-2},
    )  # fmt: skip
    tokens = [s.tokens for s in [*stream.steps[-1].test, *stream.steps[0].train]]
    agreement = []
    consolidate = ctr_strategy.consolidate

    def watched(ctx, data, p):  # the merged passes' entity words against the one pass's
        before = ctx.model.predict_tags(tokens)[0]
        consolidate(ctx, data, p)
        after = ctx.model.predict_tags(tokens)[0]
        words = [p for x, y in zip(before, after, strict=True) for p in zip(x, y, strict=True)]
        pairs = [(a, b) for a, b in words if a + b != "OO"]
        agreement.append(sum(a == b for a, b in pairs) / len(pairs))

    monkeypatch.setattr(ctr_strategy, "consolidate", watched)
    learner.run()
    history = learner.states["ctr"].history
    assert [h["consolidated"] for h in history] == [False, True, True]
    assert [h["tasks"] for h in history] == [1, 1, 1]
    model = learner.model
    assert model.spec.ctr_tasks == [["LOC", "PER", "ORG"]] and model.plugins.n_tasks == 1
    # untrained, the one pass agrees on about 0.55 of the entity words; distilled, on 0.7+
    assert len(agreement) == 2 and min(agreement) >= 0.7, agreement
    reloaded = Tagger.from_pretrained(step_dir(tmp_path / "run", 2))
    assert reloaded.predict_tags(tokens) == model.predict_tags(tokens)
    # the consolidated task leaves units free for the next one (HAT's penalty)
    assert float(model.plugins.plugins[0].used1.mean()) < 1


@pytest.mark.parametrize("anneal", ["step", "epoch"])
def test_the_mask_slope_anneals_over_the_step_or_each_epoch(anneal):
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel

    from diancang.config import TrainConfig
    from diancang.model.ctr import Plugins
    from diancang.strategies.ctr import Ctr, CtrWork, Params

    tiny = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16)  # fmt: skip
    plugins = Plugins(BertModel(tiny), 1, 4, 2, 2)
    train = TrainConfig(batch_size=4, epochs=3)
    ctx = SimpleNamespace(
        step=SimpleNamespace(train=[None] * 10),
        config=SimpleNamespace(train=train),
        model=SimpleNamespace(plugins=plugins),
        work=CtrWork(0),
    )
    strategy = Ctr(Params(anneal=anneal))
    strategy.train_data(ctx, [None] * 14)  # type: ignore[arg-type]  # memory included: 4 a batch
    assert plugins.run.s == pytest.approx(1 / 400)
    slopes = []  # the slope of updates 1..13 (each set after the update before it)
    for _ in range(13):
        strategy.after_update(ctx)  # type: ignore[arg-type]
        slopes.append(plugins.run.s)
    if anneal == "step":  # one rise over the 12 updates, s_max at the last and after it
        assert slopes == sorted(slopes) and slopes[9] < 400
        assert slopes[10] == slopes[11] == slopes[12] == pytest.approx(400)
    else:  # HAT: s_max at each epoch's last update, 1/s_max at the next one's first
        assert slopes[2] == slopes[6] == pytest.approx(400)
        assert slopes[3] == slopes[7] == pytest.approx(1 / 400)


def test_the_training_tasks_expert_learns_other_tasks_entities_as_o():
    from types import SimpleNamespace

    from diancang.strategies.base import Target
    from diancang.strategies.ctr import Ctr, CtrWork

    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    model = SimpleNamespace(spec=SimpleNamespace(ctr_tasks=[["LOC"], ["PER"]]), labels=labels)
    ctx = SimpleNamespace(model=model, work=CtrWork(1))  # the PER task trains
    gold = torch.tensor([[1, 2, 0, 3, 4, -100]])  # a memory sentence: LOC, then PER
    weights = torch.ones(1, 6)
    out = Ctr().targets(ctx, None, Target(gold, weights))  # type: ignore[arg-type]
    assert out.labels.tolist() == [[0, 0, 0, 3, 4, -100]] and out.weights is weights
