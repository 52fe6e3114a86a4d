"""The class-incremental task stream: greedy assignment, masking, FG/PG, save/load."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from diancang.data.record import Sentence, Span
from diancang.errors import DataError, DiancangError
from diancang.stream import (
    build_stream,
    check_assignment,
    greedy_assign,
    load_assignment,
    save_stream,
    step_capacities,
    step_mentions,
    step_types,
    type_order,
)
from tests.toy import toy_sentences

TYPES = ["LOC", "ORG", "PER", "TIME"]


def sent(*labels: str) -> Sentence:
    """A sentence with one single-token span per label (tokens are dummies)."""
    n = max(len(labels), 1) * 2
    return Sentence(
        tokens=["x"] * n, spans=[Span(2 * i, 2 * i + 1, t) for i, t in enumerate(labels)]
    )


def corpus(n: int, seed: int, weights: tuple[int, ...] = (8, 4, 2, 1)) -> list[Sentence]:
    """``n`` random sentences with 0-3 mentions of skewed-frequency types."""
    rng = random.Random(seed)
    return [sent(*rng.choices(TYPES, weights, k=rng.randint(0, 3))) for _ in range(n)]


def stream(seed: int = 1, fg: int = 2, pg: int = 1):
    train, dev, test = corpus(200, 1), corpus(60, 2), corpus(50, 3)
    return build_stream(train, dev, test, order=None, fg=fg, pg=pg, seed=seed), train, dev, test


def test_type_order_default_is_alphabetical_and_given_order_is_kept():
    data = [sent("b", "a"), sent("c")]
    assert type_order(data, None) == ["a", "b", "c"]
    assert type_order(data, ["c", "a", "b"]) == ["c", "a", "b"]
    assert type_order(data, ["b"]) == ["b"]  # a subset is allowed


def test_an_order_that_leaves_types_out_warns_naming_them(caplog):
    data = [sent("a", "b"), sent("c")]
    with caplog.at_level("WARNING"):
        assert type_order(data, ["b"]) == ["b"]
    assert "leaves out 2 of the data's 3 types" in caplog.text
    assert "a (1 mentions), c (1 mentions)" in caplog.text


def test_type_order_rejects_unknown_and_duplicate_types():
    data = [sent("PER", "LOC")]
    with pytest.raises(DiancangError) as err:
        type_order(data, ["PER", "GPE"])
    assert "GPE" in str(err.value) and "LOC, PER" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(DiancangError, match="more than once"):
        type_order(data, ["PER", "PER"])
    with pytest.raises(DataError, match="no entity"):
        type_order([sent()], None)


def test_step_types_fg_pg():
    order = ["a", "b", "c", "d", "e"]
    assert step_types(order, 1, 1) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert step_types(order, 3, 1) == [["a", "b", "c"], ["d"], ["e"]]
    assert step_types(order, 1, 2) == [["a"], ["b", "c"], ["d", "e"]]
    assert step_types(order, 5, 2) == [order]


@pytest.mark.parametrize(("fg", "pg"), [(2, 2), (6, 1), (0, 1), (1, 0)])
def test_step_types_rejects_what_does_not_fit(fg, pg):
    with pytest.raises(DiancangError) as err:
        step_types(["a", "b", "c", "d", "e"], fg, pg)
    assert "Fix:" in str(err.value)


def test_step_types_error_says_why_and_suggests():
    with pytest.raises(DiancangError) as err:
        step_types(["a", "b", "c", "d"], 2, 3)
    text = str(err.value)
    assert "does not fit the 4 types" in text and "smaller last step is not allowed" in text
    assert "FG-1-PG-3" in text


def test_capacities_are_proportional_and_sum_to_n():
    assert step_capacities(10, [["a", "b"], ["c"], ["d"]]) == [5, 3, 2]
    assert step_capacities(7, [["a"], ["b"], ["c"]]) == [3, 2, 2]
    assert step_capacities(0, [["a"], ["b"]]) == [0, 0]
    for n in range(50):
        caps = step_capacities(n, [["a", "b", "c"], ["d"], ["e", "f"]])
        assert sum(caps) == n
        assert all(abs(c - n * k / 6) < 1 for c, k in zip(caps, (3, 1, 2), strict=True))


def test_greedy_assign_fills_steps_to_capacity():
    data = corpus(101, 7)
    plan = [["LOC", "ORG"], ["PER"], ["TIME"]]
    assign = greedy_assign(data, plan, seed=3)
    assert len(assign) == len(data)
    counts = Counter(assign)
    assert [counts[k] for k in range(3)] == step_capacities(101, plan)


def test_rarest_type_routing_on_toy():
    # A: 7 mentions, B: 3, C: 2. Three {A,B} sentences want step B (room 2): the third falls
    # back to its next-rarest type A, never to a random step; {C} sentences go to C.
    data = [sent("A", "A", "B"), sent("A", "A", "B"), sent("A", "A", "B"), sent("C"), sent("C")]
    data.append(sent("A"))
    plan = [["A"], ["B"], ["C"]]
    for seed in range(25):
        assign = greedy_assign(data, plan, seed)
        assert assign[3] == assign[4] == 2
        assert assign[5] == 0
        assert sorted(assign[:3]) == [0, 1, 1]


def test_rare_type_wins_over_frequent_one():
    data = [sent("A", "B"), sent("A"), sent("A"), sent("A")]
    for seed in range(10):
        assert greedy_assign(data, [["A"], ["B"]], seed)[0] == 1


def test_sentences_without_entities_go_to_random_steps_with_room():
    data = [sent() for _ in range(30)]
    plan = [["A"], ["B"], ["C"]]
    a1, a2 = greedy_assign(data, plan, 1), greedy_assign(data, plan, 2)
    assert Counter(a1) == Counter(a2) == Counter({0: 10, 1: 10, 2: 10})
    assert a1 != a2


def test_each_train_and_dev_sentence_in_exactly_one_step():
    st, train, dev, _ = stream()
    for key, data in (("train", train), ("dev", dev)):
        indices = [i for step in st.assignment[key] for i in step]
        assert sorted(indices) == list(range(len(data)))
    assert sum(len(s.train) for s in st.steps) == len(train)
    assert sum(len(s.dev) for s in st.steps) == len(dev)


def test_masking_of_train_dev_and_test():
    st, train, dev, test = stream()
    assert [s.new_types for s in st.steps] == [["LOC", "ORG"], ["PER"], ["TIME"]]
    assert [s.seen_types for s in st.steps][-1] == TYPES
    for k, step in enumerate(st.steps):
        for part, originals, idx in (
            (step.train, train, st.assignment["train"][k]),
            (step.dev, dev, st.assignment["dev"][k]),
        ):
            for masked, i in zip(part, idx, strict=True):
                assert masked.types() <= set(step.new_types)
                assert masked.spans == [s for s in originals[i].spans if s.label in step.new_types]
        assert len(step.test) == len(test)
        for masked, orig in zip(step.test, test, strict=True):
            assert masked.spans == [s for s in orig.spans if s.label in step.seen_types]
    # masking copies: the caller's sentences keep all their spans
    assert any(len(s.types()) > 1 for s in train)


def test_deterministic_for_a_seed_and_sensitive_to_it():
    a, *_ = stream(seed=5)
    b, *_ = stream(seed=5)
    c, *_ = stream(seed=6)
    assert a.assignment == b.assignment
    assert [s.train for s in a.steps] == [s.train for s in b.steps]
    assert a.assignment["train"] != c.assignment["train"]


def test_save_load_round_trip_and_check(tmp_path):
    st, *_ = stream(seed=2)
    path = save_stream(st, tmp_path / "run" / "stream.json")
    loaded = load_assignment(path)
    assert loaded == json.loads(json.dumps(st.assignment))
    assert loaded["order"] == st.order
    assert loaded["step_types"] == [s.new_types for s in st.steps]
    check_assignment(st, path)
    other, *_ = stream(seed=3)
    with pytest.raises(DiancangError, match="differs"):
        check_assignment(other, path)


def test_load_assignment_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_assignment(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json"):
        load_assignment(bad)
    bad.write_text('{"order": []}', encoding="utf-8")
    with pytest.raises(DataError, match="lacks"):
        load_assignment(bad)


def test_kshot_reaches_k_mentions_per_type_with_few_sentences():
    from diancang.stream import kshot

    data = toy_sentences(200, seed=3)
    picked = kshot(data, range(len(data)), ["ORG", "PRO"], 5, seed=1)
    counts = Counter(sp.label for i in picked for sp in data[i].spans if sp.label in ("ORG", "PRO"))
    assert counts["ORG"] >= 5 and counts["PRO"] >= 5
    # Greedy: each taken sentence was needed, so few are taken (at most one per missing mention).
    assert len(picked) <= 10 and picked == sorted(picked)
    assert kshot(data, range(len(data)), ["ORG", "PRO"], 5, seed=1) == picked  # seeded
    assert kshot(data, [], ["ORG"], 5, seed=1) == []


def test_kshot_stream_keeps_the_base_step_whole():
    train, dev = toy_sentences(120, seed=1), toy_sentences(60, seed=2)
    full = build_stream(train, dev, dev, order=["LOC", "PER", "ORG"], fg=1, pg=1, seed=1)
    few = build_stream(train, dev, dev, order=["LOC", "PER", "ORG"], fg=1, pg=1, seed=1, shots=3)
    assert len(few.steps[0].train) == len(full.steps[0].train)
    for k in (1, 2):
        assert 0 < len(few.steps[k].train) < len(full.steps[k].train)
        mentions = Counter(sp.label for s in few.steps[k].train for sp in s.spans)
        assert all(mentions[t] >= 3 for t in few.steps[k].new_types)
    assert few.assignment["shots"] == 3
    assert len(few.steps[2].test) == len(dev)


def test_shot_seed_draws_other_k_shots_from_the_same_step_pools(tmp_path):
    train, dev = toy_sentences(120, seed=1), toy_sentences(60, seed=2)
    kw: dict = {"order": ["LOC", "PER", "ORG"], "fg": 1, "pg": 1, "seed": 1}
    full = build_stream(train, dev, dev, **kw)
    a = build_stream(train, dev, dev, **kw, shots=3)
    b = build_stream(train, dev, dev, **kw, shots=3, shot_seed=1)
    c = build_stream(train, dev, dev, **kw, shots=3, shot_seed=7)
    assert a.assignment == b.assignment  # the default is the stream's seed
    assert c.assignment["train"][0] == a.assignment["train"][0]  # the base step is whole
    assert c.assignment["train"][1:] != a.assignment["train"][1:]
    for k in (1, 2):  # other K sentences, drawn from the same step's pool
        assert set(c.assignment["train"][k]) <= set(full.assignment["train"][k])
    path = save_stream(a, tmp_path / "stream.json")
    older = json.loads(path.read_text("utf-8"))
    del older["shot_seed"]  # records written before shot_seed existed mean the seed
    path.write_text(json.dumps(older), "utf-8")
    check_assignment(b, path)
    with pytest.raises(DiancangError, match="shot_seed"):
        check_assignment(c, path)


def test_step_mentions_counts_the_hidden_annotation_of_each_steps_sentences():
    train = corpus(300, seed=3)
    stream = build_stream(train, corpus(40, 4), corpus(40, 5), order=TYPES, fg=2, pg=1, seed=1)
    table = step_mentions(train, stream)
    total = Counter(sp.label for s in train for sp in s.spans)
    assert [list(m["own"]) for m in table] == [["LOC", "ORG"], ["PER"], ["TIME"]]
    # every mention sits in exactly one step's sentences: as its own, an earlier or a later type
    counted = sum(sum(m["own"].values()) + sum(m["old"].values()) + m["future"] for m in table)
    assert counted == sum(total.values())
    assert sum(m["own"]["LOC"] + m["own"]["ORG"] for m in table[:1]) == sum(
        1 for i in stream.assignment["train"][0] for sp in train[i].spans if sp.label in TYPES[:2]
    )
    assert table[0]["old"] == {} and table[-1]["future"] == 0
    assert table[2]["old"] == {  # TIME's sentences: their LOC/ORG/PER mentions, seen as O
        t: sum(1 for i in stream.assignment["train"][2] for sp in train[i].spans if sp.label == t)
        for t in ["LOC", "ORG", "PER"]
    }
    assert 0 < table[1]["share"]["PER"] <= 1
    assert table[1]["share"]["PER"] == table[1]["own"]["PER"] / total["PER"]


def test_a_training_subsample_keeps_every_type_and_its_size():
    from diancang.pipeline import cover_types

    # 40 plain sentences, 20 with a, 1 with rare b: a sample of 10 is likely to miss b
    data = [sent() for _ in range(40)] + [sent("a") for _ in range(20)] + [sent("b")]
    for seed in range(20):
        rng = random.Random(seed)
        keep = set(rng.sample(range(len(data)), 10))
        covered = cover_types(data, set(keep), rng)
        labels = Counter(sp.label for i in covered for sp in data[i].spans)
        assert set(labels) == {"a", "b"} and len(covered) == 10
        if 60 in keep and any(data[i].spans for i in keep - {60}):
            assert covered == keep  # nothing missing: the sample is left as it was
