"""Tests for the growable linear-chain CRF (brute force, constraints, growth, training, I/O)."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from diancang.errors import DiancangError
from diancang.model.crf import CRF, FORBIDDEN

LABELS = ["O", "B-A", "I-A"]
LABELS5 = ["O", "B-A", "I-A", "B-B", "I-B"]


def _random_crf(labels, seed=0):
    torch.manual_seed(seed)
    crf = CRF(len(labels), labels)
    with torch.no_grad():
        crf.start.normal_()
        crf.end.normal_()
        crf.transitions.normal_()
    return crf.double()


def _brute_scores(crf, emissions, n):
    """Every path of length n for row `emissions` (L, C): {path: score} (constrained)."""
    start = crf.start + crf.start_penalty
    trans = crf.transitions + crf.transition_penalty
    out = {}
    for path in itertools.product(range(crf.num_labels), repeat=n):
        s = start[path[0]] + crf.end[path[-1]]
        s = s + sum(emissions[i, path[i]] for i in range(n))
        s = s + sum(trans[path[i - 1], path[i]] for i in range(1, n))
        out[path] = s
    return out


def _tiny_case(labels, seed=0, lengths=(3, 2)):
    crf = _random_crf(labels, seed)
    torch.manual_seed(seed + 1)
    length = max(lengths)
    emissions = torch.randn(len(lengths), length, len(labels), dtype=torch.float64)
    mask = torch.tensor([[i < n for i in range(length)] for n in lengths])
    return crf, emissions, mask


def test_state_dict_holds_only_parameters():
    crf = CRF(3, LABELS)
    assert set(crf.state_dict()) == {"start", "end", "transitions"}
    assert crf.start_penalty[2] == FORBIDDEN
    assert crf.transition_penalty[0, 2] == FORBIDDEN
    assert crf.transition_penalty[1, 2] == 0 and crf.transition_penalty[2, 2] == 0


def test_nll_matches_brute_force():
    crf, emissions, mask = _tiny_case(LABELS)
    tags = torch.tensor([[1, 2, 0], [0, 1, -100]])
    nll = crf.neg_log_likelihood(emissions, tags, mask, reduction="none")
    for b, n in enumerate(mask.sum(1).tolist()):
        scores = _brute_scores(crf, emissions[b], n)
        log_z = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
        gold = scores[tuple(tags[b, :n].tolist())]
        assert nll[b].item() == pytest.approx((log_z - gold).item(), abs=1e-9)
    mean = crf.neg_log_likelihood(emissions, tags, mask)
    assert mean.item() == pytest.approx(nll.mean().item())
    total = crf.neg_log_likelihood(emissions, tags, mask, reduction="sum")
    assert total.item() == pytest.approx(nll.sum().item())


def test_nll_brute_force_more_labels_and_lengths():
    crf, emissions, mask = _tiny_case(LABELS5, seed=3, lengths=(4, 1, 3))
    tags = torch.tensor([[3, 4, 0, 1], [0, -100, -100, -100], [1, 2, 2, -100]])
    nll = crf.neg_log_likelihood(emissions, tags, mask, reduction="none")
    log_z = crf.log_partition(emissions, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        scores = _brute_scores(crf, emissions[b], n)
        bz = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
        assert log_z[b].item() == pytest.approx(bz.item(), abs=1e-9)
        gold = scores[tuple(tags[b, :n].tolist())]
        assert nll[b].item() == pytest.approx((bz - gold).item(), abs=1e-9)


def test_viterbi_matches_brute_force():
    for seed in range(5):
        crf, emissions, mask = _tiny_case(LABELS5, seed=seed, lengths=(4, 2, 3))
        paths = crf.decode(emissions, mask)
        for b, n in enumerate(mask.sum(1).tolist()):
            scores = _brute_scores(crf, emissions[b], n)
            best = max(scores, key=lambda p: scores[p].item())
            assert tuple(paths[b]) == best
            assert len(paths[b]) == n


def test_marginals_match_brute_force_and_sum_to_one():
    crf, emissions, mask = _tiny_case(LABELS, seed=2, lengths=(3, 2))
    marg = crf.marginals(emissions, mask)
    assert marg.shape == emissions.shape
    sums = marg.sum(-1)
    assert torch.allclose(sums[mask], torch.ones_like(sums[mask]))
    assert torch.all(marg[~mask] == 0)
    for b, n in enumerate(mask.sum(1).tolist()):
        scores = _brute_scores(crf, emissions[b], n)
        log_z = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
        expected = torch.zeros(n, crf.num_labels, dtype=torch.float64)
        for path, s in scores.items():
            for i, c in enumerate(path):
                expected[i, c] += torch.exp(s - log_z)
        assert torch.allclose(marg[b, :n], expected, atol=1e-9)


def test_decode_respects_bio_constraints():
    torch.manual_seed(0)
    crf = CRF(len(LABELS5), LABELS5)
    # Emissions strongly prefer I- labels everywhere: constraints must still hold.
    emissions = torch.randn(16, 7, 5)
    emissions[..., 2] += 5.0
    emissions[..., 4] += 5.0
    mask = torch.ones(16, 7, dtype=torch.bool)
    mask[8:, 4:] = False
    for path in crf.decode(emissions, mask):
        for i, tag in enumerate(path):
            name = LABELS5[tag]
            if name.startswith("I-"):
                assert i > 0, "I- at sentence start"
                assert LABELS5[path[i - 1]][2:] == name[2:], f"bad transition in {path}"


def test_grow_keeps_old_parameters_and_old_path_scores():
    crf = _random_crf(LABELS, seed=4).float()
    old = {k: v.clone() for k, v in crf.state_dict().items()}
    torch.manual_seed(5)
    emissions = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    tags = torch.tensor([[1, 2, 0], [0, 1, -100]])
    old_nll = crf.neg_log_likelihood(emissions, tags, mask, reduction="none")
    old_paths = crf.decode(emissions, mask)
    old_marg = crf.marginals(emissions, mask)
    old_start = crf.start

    crf.grow(["B-B", "I-B"])
    assert crf.num_labels == 5 and crf.labels == LABELS5
    assert crf.start is not old_start  # new Parameter objects: rebuild the optimizer
    assert torch.equal(crf.start[:3], old["start"]) and torch.equal(crf.end[:3], old["end"])
    assert torch.equal(crf.transitions[:3, :3], old["transitions"])
    assert torch.all(crf.start[3:] == 0) and torch.all(crf.transitions[3:] == 0)
    assert torch.all(crf.transitions[:, 3:] == 0)
    assert crf.start_penalty[4] == FORBIDDEN and crf.transition_penalty[1, 4] == FORBIDDEN
    assert crf.transition_penalty[3, 4] == 0 and crf.transition_penalty[3, 2] == FORBIDDEN

    grown = torch.cat([emissions, torch.full((2, 3, 2), -1e3)], dim=-1)
    new_nll = crf.neg_log_likelihood(grown, tags, mask, reduction="none")
    assert torch.allclose(new_nll, old_nll, atol=1e-5)
    assert crf.decode(grown, mask) == old_paths
    assert torch.allclose(crf.marginals(grown, mask)[..., :3], old_marg, atol=1e-6)


def test_grow_then_optimizer_trains_new_parameters():
    crf = CRF(3, LABELS)
    crf.grow(["B-B", "I-B"])
    opt = torch.optim.SGD(crf.parameters(), lr=0.1)
    emissions = torch.zeros(1, 2, 5)
    loss = crf.neg_log_likelihood(emissions, torch.tensor([[3, 4]]), torch.ones(1, 2).bool())
    loss.backward()
    opt.step()
    assert crf.transitions[3, 4] > 0


def test_training_reaches_gold_path():
    torch.manual_seed(0)
    labels = LABELS5
    crf = CRF(len(labels), labels)
    # Tokens 0..5; emissions are a learned lookup table, the CRF learns the transitions.
    table = torch.nn.Embedding(6, len(labels))
    tokens = torch.tensor([[0, 1, 2, 0, 3, 4], [3, 4, 4, 0, 1, 0], [0, 0, 5, 0, 0, 0]])
    gold = torch.tensor([[0, 1, 2, 0, 3, 4], [3, 4, 4, 0, 1, -100], [0, 0, 0, -100, -100, -100]])
    mask = gold != -100
    params = list(crf.parameters()) + list(table.parameters())
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = crf.neg_log_likelihood(table(tokens), gold, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    paths = crf.decode(table(tokens), mask)
    expected = [row[: int(m.sum())] for row, m in zip(gold.tolist(), mask, strict=True)]
    assert paths == expected


def test_state_dict_round_trip_through_safetensors(tmp_path):
    crf = _random_crf(LABELS, seed=7).float()
    crf.grow(["B-B", "I-B"])
    path = tmp_path / "crf.safetensors"
    save_file({k: v.contiguous() for k, v in crf.state_dict().items()}, str(path))
    restored = CRF(5, LABELS5)
    restored.load_state_dict(load_file(str(path)))
    for key, value in crf.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    torch.manual_seed(1)
    emissions = torch.randn(3, 4, 5)
    mask = torch.ones(3, 4, dtype=torch.bool)
    assert restored.decode(emissions, mask) == crf.decode(emissions, mask)


def test_unconstrained_crf_and_bad_inputs():
    crf = CRF(2)
    assert crf.labels is None and torch.all(crf.transition_penalty == 0)
    crf.grow(["x"])
    assert crf.num_labels == 3
    with pytest.raises(DiancangError, match="num_labels=3"):
        CRF(3, ["O", "B-A"])
    with pytest.raises(DiancangError, match="twice"):
        CRF(3, LABELS).grow(["B-A"])
    with pytest.raises(DiancangError, match="at least one label"):
        CRF(0)
    good = CRF(3, LABELS)
    with pytest.raises(ValueError, match="left-aligned"):
        good.decode(torch.zeros(1, 3, 3), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="first token"):
        good.decode(torch.zeros(1, 2, 3), torch.tensor([[False, False]]))
    with pytest.raises(ValueError, match="emissions"):
        good.decode(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        good.neg_log_likelihood(
            torch.zeros(1, 2, 3), torch.zeros(1, 2).long(), torch.ones(1, 2).bool(), "avg"
        )


def test_speed_batch32_len64():
    torch.manual_seed(0)
    labels = ["O"] + [f"{p}-T{i}" for i in range(10) for p in ("B", "I")]
    crf = CRF(len(labels), labels)
    emissions = torch.randn(32, 64, len(labels), requires_grad=True)
    lengths = torch.randint(1, 65, (32,))
    mask = torch.arange(64)[None, :] < lengths[:, None]
    tags = torch.randint(0, len(labels), (32, 64))
    began = time.perf_counter()
    for _ in range(3):
        crf.neg_log_likelihood(emissions, tags, mask).backward()
        crf.decode(emissions, mask)
        crf.marginals(emissions, mask)
    # About 1 s on an idle 2-core machine; the bound is loose so a loaded CI machine passes,
    # while a per-row Python loop (about 32x slower) would still fail.
    assert time.perf_counter() - began < 20.0
