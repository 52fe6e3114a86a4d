"""The promotion gate: may a candidate replace the live version?

A candidate passes when no old type's dev F1 drops by more than ``max_drop`` against the live
version and every new type reaches ``new_type_floor``. The decision is a plain JSON-able dict, so
the archive can store it next to the version it judged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Float noise allowed at the thresholds (0.91 - 0.89 is 0.0200000000000000018 in binary).
_EPS = 1e-9


class GateConfig(BaseModel):
    """Thresholds of the promotion gate (F1 as a fraction in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    max_drop: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Largest allowed drop of any old type's dev F1 against the live version, "
        "as a fraction (0.02 = 2 points).",
    )
    new_type_floor: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Least dev F1 each new type must reach."
    )


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _per_type(metrics: dict[str, Any] | None) -> dict[str, float]:
    per = (metrics or {}).get("per_type") or {}
    return {str(t): float(v) for t, v in per.items() if v is not None}


def decide(
    candidate: dict[str, Any],
    live: dict[str, Any] | None,
    new_types: list[str],
    config: GateConfig,
) -> dict[str, Any]:
    """Judge ``candidate`` against ``live`` (metrics dicts with ``per_type`` dev F1).

    Returns ``{"accepted", "reasons", "deltas", "new_types"}``: ``reasons`` are sentences a person
    can read (one per check, failures first), ``deltas`` maps each old type to candidate minus
    live, ``new_types`` maps each new type to its F1 (None when the candidate has no score for
    it). Without a live version only the new-type floor applies.
    """
    cand = _per_type(candidate)
    failures: list[str] = []
    passes: list[str] = []

    new_scores: dict[str, float | None] = {}
    floor_failed = False
    for t in new_types:
        f1 = cand.get(t)
        new_scores[t] = None if f1 is None else round(f1, 6)
        if f1 is None:
            floor_failed = True
            failures.append(f"New type {t} has no dev F1 in the candidate's metrics.")
        elif f1 + _EPS < config.new_type_floor:
            floor_failed = True
            failures.append(
                f"New type {t} reaches dev F1 {_points(f1)}, below the floor of "
                f"{_points(config.new_type_floor)}."
            )
    if new_types and not floor_failed:
        passes.append(
            f"Every new type ({', '.join(new_types)}) reaches the floor of "
            f"{_points(config.new_type_floor)}."
        )

    deltas: dict[str, float] = {}
    if live is None:
        passes.append("There is no live version to compare with, so only the floor applies.")
    else:
        old = {t: f1 for t, f1 in _per_type(live).items() if t not in new_types}
        worst: tuple[str, float] | None = None
        for t, before in old.items():
            after = cand.get(t)
            if after is None:
                failures.append(f"Old type {t} has no dev F1 in the candidate's metrics.")
                continue
            delta = after - before
            deltas[t] = round(delta, 6)
            if worst is None or delta < worst[1]:
                worst = (t, delta)
            if -delta > config.max_drop + _EPS:
                failures.append(
                    f"Old type {t} drops from {_points(before)} to {_points(after)} "
                    f"({_points(delta)} points), more than the allowed "
                    f"{_points(config.max_drop)}."
                )
        if worst is not None and -worst[1] <= config.max_drop + _EPS:
            passes.append(
                f"No old type drops more than {_points(config.max_drop)} points "
                f"(worst: {worst[0]} {_points(worst[1])})."
            )
        elif not old:
            passes.append("The live version has no old types to protect.")

    return {
        "accepted": not failures,
        "reasons": failures + passes,
        "deltas": deltas,
        "new_types": new_scores,
    }
