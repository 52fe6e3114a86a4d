"""Parts of multi-task transfer: gradient reversal, word segmentation tags, the task schedule."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from diancang.data.readers.segmented import (
    cws_tags,
    from_words,
    read_segmented,
    word_scores,
    words_of,
)
from diancang.data.record import DefectLog
from diancang.multitask.grl import GradientReversal, reverse_gradient
from diancang.multitask.sampler import schedule


def test_gradient_reversal_is_identity_forward_and_reverses_and_scales_exactly():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    upstream = torch.tensor([[1.0, 2.0], [-4.0, 8.0]])
    y.backward(upstream)
    assert torch.equal(x.grad, -0.3 * upstream)
    w = torch.tensor(2.0, requires_grad=True)
    (GradientReversal(1.0)(w * x.detach()).sum()).backward()
    assert w.grad.item() == pytest.approx(-float(x.detach().sum()))


def _adversarial_grads(adversarial: float, discriminator: float):
    from diancang.strategies.multitask import MultiTask, adversarial_loss

    torch.manual_seed(0)
    disc = torch.nn.Linear(3, 2)
    feats = torch.randn(4, 3, requires_grad=True)
    params = MultiTask.Params(adversarial_weight=adversarial, discriminator_weight=discriminator)
    term, scores, loss = adversarial_loss(disc, feats, torch.tensor([0, 1, 1, 0]), params)
    term.backward()
    assert scores.shape == (4, 2) and term.item() == pytest.approx(discriminator * loss.item())
    return feats.grad, disc.weight.grad


def test_the_discriminator_learns_at_its_own_weight_and_the_encoder_at_minus_lambda():
    feats_slow, disc_slow = _adversarial_grads(0.05, 0.05)  # multitask@1's coupling
    feats_fast, disc_fast = _adversarial_grads(0.05, 1.0)
    assert torch.allclose(feats_fast, feats_slow)  # the features get -0.05 x either way
    assert torch.allclose(disc_fast, 20 * disc_slow)
    # and the features' gradient is exactly minus lambda times the plain loss's
    torch.manual_seed(0)
    disc = torch.nn.Linear(3, 2)
    feats = torch.randn(4, 3, requires_grad=True)
    torch.nn.functional.cross_entropy(disc(feats), torch.tensor([0, 1, 1, 0])).backward()
    assert torch.allclose(feats_fast, -0.05 * feats.grad)


def test_confusion_trains_the_discriminator_on_its_loss_and_the_features_towards_uniform():
    from diancang.strategies.multitask import MultiTask, adversarial_loss

    tasks = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(0)
    disc = torch.nn.Linear(3, 2)
    feats = torch.randn(4, 3, requires_grad=True)
    params = MultiTask.Params(adversary="confusion", adversarial_weight=0.05)
    term, scores, loss = adversarial_loss(disc, feats, tasks, params)
    term.backward()
    # by hand: the discriminator's gradient is its plain loss's (weight 1), the features' is
    # 0.05 x that of the cross-entropy against the uniform distribution, nothing of the loss's
    ref_disc = torch.nn.Linear(3, 2)
    ref_disc.load_state_dict(disc.state_dict())
    x = feats.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref_disc(x.detach()), tasks).backward()
    assert torch.allclose(disc.weight.grad, ref_disc.weight.grad)
    (-torch.log_softmax(ref_disc(x), -1).mean()).backward()
    assert torch.allclose(feats.grad, 0.05 * x.grad)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(scores, tasks).item())
    # a discriminator that already says 50/50 leaves the features alone
    flat = torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(flat.weight)
    torch.nn.init.zeros_(flat.bias)
    feats.grad = None
    adversarial_loss(flat, feats, tasks, params)[0].backward()
    assert torch.count_nonzero(feats.grad) == 0


def test_words_and_bmes_tags_round_trip():
    words = ["扬帆", "远东", "做", "与", "中国", "合作", "的", "先行者", "。"]
    s = from_words(words)
    tags = cws_tags(s)
    assert tags[:7] == ["B", "E", "B", "E", "S", "S", "B"]
    assert tags[-4:] == ["B", "M", "E", "S"]
    assert words_of(s.tokens, tags) == words
    scores = word_scores([words], [["扬帆远东", "做", "与", "中国", "合作", "的", "先行者", "。"]])
    assert scores["recall"] == pytest.approx(7 / 9) and scores["precision"] == pytest.approx(7 / 8)


def test_segmented_reader_splits_paragraphs_and_counts_defects(tmp_path):
    path = tmp_path / "gold.utf8"
    path.write_text("他  说  ：  “  好  。  ”  我们  走  吧  。  \n\n希腊  的  经济\n", "utf-8")
    log = DefectLog()
    sentences = read_segmented(path, log=log)
    assert ["".join(s.tokens) for s in sentences] == ["他说：“好。", "”我们走吧。", "希腊的经济"]
    assert words_of(sentences[1].tokens, cws_tags(sentences[1])) == ["”", "我们", "走", "吧", "。"]
    assert sentences[2].source.line == 3
    assert log.counts == Counter(
        {"line ends with spaces": 1, "empty line inside the file": 1,
         "paragraph split into sentences": 1}
    )  # fmt: skip


@pytest.mark.parametrize("sampling", ["proportional", "equal", "subsample"])
def test_the_schedule_draws_tasks_in_the_asked_proportions(sampling):
    batches = [40, 120, 10]
    picks = schedule(batches, sampling, seed=3)
    counts = Counter(t for t, _ in picks)
    expected = {
        "proportional": {0: 40, 1: 120, 2: 10},
        "equal": {0: 40, 1: 40, 2: 40},
        "subsample": {0: 40, 1: 40, 2: 10},
    }[sampling]
    assert dict(counts) == expected
    for t, n in enumerate(batches):  # every index a real batch; no batch twice unless cycling
        seen = [i for task, i in picks if task == t]
        assert all(0 <= i < n for i in seen)
        if sampling != "equal" or expected[t] <= n:
            assert len(seen) == len(set(seen))
    assert picks != sorted(picks)  # shuffled
    assert schedule(batches, sampling, seed=3) == picks  # seeded


def test_balanced_accuracy_averages_per_task_recall_over_seen_tasks():
    from diancang.strategies.multitask import balanced

    # 3 of 4 main sentences right, 0 of 2 auxiliary: plain accuracy 0.5, balanced 0.375
    counts = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]])  # the third task never drawn
    assert balanced(counts) == pytest.approx(0.375)
    assert balanced(torch.zeros(2, 2)) == 0.0
