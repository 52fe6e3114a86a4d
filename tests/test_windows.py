"""Long sentences are split into windows that fit, and tagged whole (diancang.model.windows)."""

from __future__ import annotations

import random

from diancang.data.record import Sentence, Span
from diancang.model import windows


def _sentence(n: int, spans: list[Span], breaks: tuple[int, ...] = ()) -> Sentence:
    tokens = ["。" if i in breaks else "字" for i in range(n)]
    return Sentence(tokens=tokens, spans=spans)


def test_training_cuts_fit_cover_and_never_split_an_entity():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 120)
        counts = [rng.choice([1, 1, 1, 2, 3]) for _ in range(n)]
        spans, i = [], 0
        while i < n - 4:
            i += rng.randint(0, 10)
            width = rng.randint(1, 4)
            if i + width <= n:
                spans.append(Span(i, i + width, "X"))
            i += width + 1
        s = _sentence(n, spans)
        cuts = windows.training_cuts(counts, 20, s.spans, s.tokens)
        assert cuts[0][0] == 0 and cuts[-1][1] == n
        assert all(a < b for a, b in cuts)
        assert all(cuts[k][1] == cuts[k + 1][0] for k in range(len(cuts) - 1))
        assert all(sum(counts[a:b]) <= 20 for a, b in cuts)
        for a, _ in cuts[1:]:
            assert not any(sp.start < a < sp.end for sp in spans), (cuts, spans)


def test_training_cuts_prefer_a_clause_end_and_cut_an_entity_only_when_it_is_too_long():
    s = _sentence(30, [Span(16, 19, "X")], breaks=(13,))
    assert windows.training_cuts([1] * 30, 18, s.spans, s.tokens)[0] == (0, 14)
    whole = _sentence(30, [Span(2, 28, "X")])
    cuts = windows.training_cuts([1] * 30, 10, whole.spans, whole.tokens)
    assert cuts == [(0, 2), (2, 12), (12, 22), (22, 30)]  # the entity starts a window
    parts = windows.cut_sentence(whole, cuts)
    assert [p.spans for p in parts] == [
        [],
        [Span(0, 10, "X")],
        [Span(0, 10, "X")],
        [Span(0, 6, "X")],
    ]


def test_split_long_cuts_parallel_lists_alike_and_names_the_originals():
    given = [_sentence(5, [Span(0, 2, "A")]), _sentence(25, [Span(10, 12, "A")], breaks=(6,))]
    hidden = [
        _sentence(5, [Span(0, 2, "A")]),
        _sentence(25, [Span(3, 5, "B"), Span(10, 12, "A")], breaks=(6,)),
    ]
    out, (hid,), origin = windows.split_long(given, lambda t: 1, 12, [hidden])
    assert origin == [0, 1, 1, 1]
    assert [len(s.tokens) for s in out] == [5, 7, 12, 6]  # cut after "。", then where it fits
    assert [len(s.tokens) for s in hid] == [len(s.tokens) for s in out]
    assert hid[1].spans == [Span(3, 5, "B")]


def test_prediction_windows_overlap_and_owners_partition_the_sentence():
    for n in (1, 9, 10, 11, 57, 200):
        wins = windows.prediction_windows([1] * n, 10, 4)
        assert wins[0][0] == 0 and wins[-1][1] == n
        assert all(b - a <= 10 for a, b in wins)
        assert all(wins[k + 1][0] < wins[k][1] for k in range(len(wins) - 1))  # overlap
        own = windows.owners(wins)
        assert own[0][0] == 0 and own[-1][1] == n
        assert all(own[k][1] == own[k + 1][0] for k in range(len(own) - 1))
        assert all(a <= lo < hi <= b for (a, b), (lo, hi) in zip(wins, own, strict=True))


def test_merge_reads_each_token_from_its_owner_and_opens_an_entity_cut_at_the_seam():
    plan, parts = windows.plan([list("abcdefghijkl")], lambda t: 1, 8, 4)
    assert plan == [[(0, 8), (4, 12)]] and parts == [list("abcdefgh"), list("efghijkl")]
    first = ["O"] * 5 + ["O", "O", "B-X"]  # the first window sees only the start of ...
    second = ["O", "O", "I-X", "I-X"] + ["O"] * 4  # ... what the second sees from g on
    tags, probs = windows.merge(plan, [first, second], [[0.5] * 8, [0.9] * 8])
    assert tags == [["O"] * 6 + ["B-X", "I-X"] + ["O"] * 4]
    assert probs == [[0.5] * 6 + [0.9] * 6]
