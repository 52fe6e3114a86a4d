"""The result matrix: summaries on a hand-computed 3-step example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diancang.errors import DataError
from diancang.evaluation.matrix import ResultMatrix

NAN = math.nan


def three_steps() -> ResultMatrix:
    return ResultMatrix(
        step_types=[["A", "B"], ["C"], ["D"]],
        per_type=[
            {"A": 0.8, "B": 0.6},
            {"A": 0.6, "B": 0.4, "C": 0.9},
            {"A": 0.5, "B": 0.5, "C": 0.7, "D": 0.8},
        ],
        micro=[0.72, 0.65, 0.60],
        macro=[0.70, 0.60, 0.625],
    )


def test_type_matrix():
    expected = [[0.8, 0.6, NAN, NAN], [0.6, 0.4, 0.9, NAN], [0.5, 0.5, 0.7, 0.8]]
    m = three_steps()
    assert m.all_types == ["A", "B", "C", "D"]
    np.testing.assert_allclose(m.type_matrix(), expected)


def test_task_matrix():
    # task 0 = {A, B}: mean of A and B; later tasks have one type each
    expected = [[0.7, NAN, NAN], [0.5, 0.9, NAN], [0.5, 0.7, 0.8]]
    np.testing.assert_allclose(three_steps().task_matrix(), expected)


def test_averaged_and_final():
    m = three_steps()
    assert m.averaged()["micro"] == pytest.approx((0.72 + 0.65 + 0.60) / 3)  # 0.65667
    assert m.averaged()["macro"] == pytest.approx((0.70 + 0.60 + 0.625) / 3)  # 0.64167
    assert m.final() == {"micro": 0.60, "macro": 0.625}


def test_forgetting():
    m = three_steps()
    # A: 0.8 - 0.5, B: 0.6 - 0.5 (introduced at step 0), C: 0.9 - 0.7; D is new at the end
    per = m.forgetting_per_type()
    assert per.keys() == {"A", "B", "C"}
    assert per["A"] == pytest.approx(0.3)
    assert per["B"] == pytest.approx(0.1)
    assert per["C"] == pytest.approx(0.2)
    assert m.forgetting() == pytest.approx(0.2)


def test_forgetting_with_one_step_and_partial_runs():
    one = ResultMatrix([["A"], ["B"]], [{"A": 0.9}], [0.9], [0.9])
    assert one.forgetting() == 0.0 and one.forgetting_per_type() == {}
    two = ResultMatrix(three_steps().step_types, three_steps().per_type[:2], [0.7, 0.6], [0.7, 0.6])
    assert two.forgetting() == pytest.approx(0.2)  # (0.8-0.6 + 0.6-0.4) / 2; final = step 1
    assert two.type_matrix().shape == (2, 4)
    better = ResultMatrix(
        [["A"], ["B"]], [{"A": 0.5}, {"A": 0.7, "B": 0.4}], [0.5, 0.6], [0.5, 0.55]
    )
    assert better.forgetting() == pytest.approx(-0.2)  # backward transfer is negative


def test_types_never_learned_are_reported_apart_not_counted_as_kept_or_improved():
    m = ResultMatrix(
        [["A"], ["B"], ["C"], ["D"]],
        [
            {"A": 0.8},
            {"A": 0.6, "B": 0.0},  # B never learned ...
            {"A": 0.6, "B": 0.3, "C": 0.05},  # ... nor C (under the 0.1 floor)
            {"A": 0.4, "B": 0.2, "C": 0.0, "D": 0.02},
        ],
        [0.8, 0.6, 0.5, 0.4],
        [0.8, 0.3, 0.32, 0.155],
    )
    assert m.never_learned() == ["B", "C", "D"]
    assert m.forgetting_per_type() == {"A": pytest.approx(0.4)}  # not B's 0 -> 0.2 (-0.2)
    assert m.forgetting() == pytest.approx(0.4)
    summary = m.summary()
    assert summary["never_learned"] == ["B", "C", "D"] and summary["learned_floor"] == 0.1


def test_no_step_yet():
    m = ResultMatrix([["A"], ["B"]])
    assert math.isnan(m.averaged()["micro"]) and math.isnan(m.final()["macro"])
    assert m.forgetting() == 0.0
    assert m.type_matrix().shape == (0, 2)


def test_add_step_validates_and_rolls_back():
    m = ResultMatrix([["A"], ["B"]])
    m.add_step({"A": np.float32(0.5)}, 0.5, 0.5)
    assert isinstance(m.per_type[0]["A"], float)
    with pytest.raises(ValueError, match="not seen yet"):
        m.add_step({"A": 0.4, "B": 0.3, "C": 0.1}, 0.4, 0.4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.add_step({"A": 40.0}, 0.4, 0.4)
    assert m.n_steps == 1
    m.add_step({"A": 0.4, "B": 0.3}, 0.35, 0.35)
    assert m.n_steps == 2


def test_dict_round_trip_and_errors():
    m = three_steps()
    assert ResultMatrix.from_dict(m.to_dict()) == m
    with pytest.raises(DataError, match="step_types"):
        ResultMatrix.from_dict({"per_type": []})
    with pytest.raises(DataError, match="malformed"):
        ResultMatrix.from_dict({"step_types": [["A"]], "per_type": [{"A": 0.5}], "micro": []})
