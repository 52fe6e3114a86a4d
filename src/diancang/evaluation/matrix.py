"""The result matrix of a continual run: F1 of every seen type after every step, and summaries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diancang.errors import DataError

#: F1 right after its step below which a type counts as never learned, not as forgotten.
LEARNED_FLOOR = 0.1


@dataclass
class ResultMatrix:
    """F1 scores of a class-incremental run (fractions in [0, 1]).

    ``step_types[j]`` are the types introduced at step ``j`` (the whole plan). ``per_type[s][t]``
    is the F1 of type ``t`` on the test set (annotated with all types seen so far) after step
    ``s``; it holds only types seen by step ``s``. ``micro[s]`` and ``macro[s]`` are the micro
    and macro F1 after step ``s``, given by the learner (micro cannot be derived from per-type
    F1). ``per_type``, ``micro`` and ``macro`` have one entry per *completed* step, which may be
    fewer than planned; "the final step" below is the last completed one.

    **Forgetting** of an old type (one introduced at step ``k`` before the final step ``S``) is
    its F1 right after step ``k`` minus its F1 after step ``S``; :meth:`forgetting` is the mean
    over the old types that were *learned*, i.e. reached :data:`LEARNED_FLOOR` right after their
    step (0.0 when there are none). Positive means forgotten; negative means the type improved
    later (backward transfer). A type below the floor right after its step was never learned
    (:meth:`never_learned`, a failure to learn rather than to keep, "intransigence"); counting
    it as 0 -> 0 would dilute forgetting, and 0 -> 10 would turn it negative.
    """

    step_types: list[list[str]]
    per_type: list[dict[str, float]] = field(default_factory=list)
    micro: list[float] = field(default_factory=list)
    macro: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.step_types = [list(types) for types in self.step_types]
        self.per_type = [{t: float(v) for t, v in s.items()} for s in self.per_type]
        self.micro = [float(v) for v in self.micro]
        self.macro = [float(v) for v in self.macro]
        self._validate()

    def _validate(self) -> None:
        n = len(self.per_type)
        if not (len(self.micro) == len(self.macro) == n):
            raise ValueError(
                f"per_type, micro and macro need one entry per completed step "
                f"(got {n}, {len(self.micro)}, {len(self.macro)})"
            )
        if n > len(self.step_types):
            raise ValueError(f"{n} completed steps but only {len(self.step_types)} planned")
        all_types = self.all_types
        if len(set(all_types)) != len(all_types):
            raise ValueError(f"a type appears in more than one step: {self.step_types}")
        for s, scores in enumerate(self.per_type):
            seen = set(self.seen_types(s))
            extra = sorted(set(scores) - seen)
            if extra:
                raise ValueError(f"step {s} scores types not seen yet: {', '.join(extra)}")
            values = [*scores.values(), self.micro[s], self.macro[s]]
            if not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"step {s}: F1 values must be fractions in [0, 1]")

    @property
    def all_types(self) -> list[str]:
        """Every planned type, in learning order (the columns of :meth:`type_matrix`)."""
        return [t for types in self.step_types for t in types]

    @property
    def n_steps(self) -> int:
        """Number of completed steps (rows of the matrices)."""
        return len(self.per_type)

    def seen_types(self, step: int) -> list[str]:
        """Types learned by the end of ``step``."""
        return [t for types in self.step_types[: step + 1] for t in types]

    def introduced_at(self) -> dict[str, int]:
        """The step that introduced each type."""
        return {t: k for k, types in enumerate(self.step_types) for t in types}

    def add_step(self, per_type: dict[str, float], micro: float, macro: float) -> None:
        """Record the scores after the next step (validated like the constructor)."""
        self.per_type.append({t: float(v) for t, v in per_type.items()})
        self.micro.append(float(micro))
        self.macro.append(float(macro))
        try:
            self._validate()
        except ValueError:
            self.per_type.pop()
            self.micro.pop()
            self.macro.pop()
            raise

    def type_matrix(self) -> np.ndarray:
        """F1 per (completed step, type): shape ``(n_steps, len(all_types))``, NaN if not seen."""
        cols = self.all_types
        out = np.full((self.n_steps, len(cols)), np.nan)
        for s, scores in enumerate(self.per_type):
            for j, t in enumerate(cols):
                if t in scores:
                    out[s, j] = scores[t]
        return out

    def task_matrix(self) -> np.ndarray:
        """F1 of task ``j`` after step ``s`` (macro over task ``j``'s types that were scored).

        Shape ``(n_steps, len(step_types))``; NaN where ``j > s`` (not learned yet).
        """
        out = np.full((self.n_steps, len(self.step_types)), np.nan)
        for s, scores in enumerate(self.per_type):
            for j, types in enumerate(self.step_types[: s + 1]):
                vals = [scores[t] for t in types if t in scores]
                if vals:
                    out[s, j] = sum(vals) / len(vals)
        return out

    def averaged(self) -> dict[str, float]:
        """Mean over completed steps of micro F1 and of macro F1 (NaN if no step)."""
        if not self.n_steps:
            return {"micro": math.nan, "macro": math.nan}
        return {
            "micro": sum(self.micro) / self.n_steps,
            "macro": sum(self.macro) / self.n_steps,
        }

    def final(self) -> dict[str, float]:
        """Micro and macro F1 after the final completed step (NaN if no step)."""
        if not self.n_steps:
            return {"micro": math.nan, "macro": math.nan}
        return {"micro": self.micro[-1], "macro": self.macro[-1]}

    def after_own_step(self) -> dict[str, float]:
        """F1 of each scored type right after the step that introduced it (learning)."""
        intro = self.introduced_at()
        return {
            t: self.per_type[k][t]
            for t, k in intro.items()
            if k < self.n_steps and t in self.per_type[k]
        }

    def never_learned(self) -> list[str]:
        """Types below :data:`LEARNED_FLOOR` right after their own step, in learning order."""
        return [t for t, f1 in self.after_own_step().items() if f1 < LEARNED_FLOOR]

    def forgetting_per_type(self) -> dict[str, float]:
        """Forgetting of each learned old type (see the class docstring); types not scored or
        never learned are skipped."""
        last = self.n_steps - 1
        intro = self.introduced_at()
        return {
            t: f1 - self.per_type[last][t]
            for t, f1 in self.after_own_step().items()
            if intro[t] < last and f1 >= LEARNED_FLOOR and t in self.per_type[last]
        }

    def forgetting(self) -> float:
        """Mean forgetting over learned old types (see the class docstring); 0.0 if none."""
        per = self.forgetting_per_type()
        return sum(per.values()) / len(per) if per else 0.0

    def summary(self) -> dict[str, Any]:
        """Averaged, final and forgetting numbers, and the never-learned types, in one
        JSON-able dict."""
        return {
            "steps_completed": self.n_steps,
            "steps_planned": len(self.step_types),
            "averaged": self.averaged(),
            "final": self.final(),
            "forgetting": self.forgetting(),
            "forgetting_per_type": self.forgetting_per_type(),
            "never_learned": self.never_learned(),
            "learned_floor": LEARNED_FLOOR,
        }

    def to_dict(self) -> dict[str, Any]:
        """The matrix as plain lists and dicts (JSON-able)."""
        return {
            "step_types": [list(t) for t in self.step_types],
            "per_type": [dict(s) for s in self.per_type],
            "micro": list(self.micro),
            "macro": list(self.macro),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> ResultMatrix:
        """Rebuild from :meth:`to_dict` output; a malformed dict raises a :class:`DataError`."""
        fix = "pass the 'matrix' object of a diancang results.json"
        if not isinstance(data, dict) or "step_types" not in data:
            raise DataError("not a result matrix (no 'step_types')", path=source, fix=fix)
        try:
            return cls(
                step_types=[[str(t) for t in types] for types in data["step_types"]],
                per_type=[
                    {str(t): float(v) for t, v in s.items()} for s in data.get("per_type", [])
                ],
                micro=[float(v) for v in data.get("micro", [])],
                macro=[float(v) for v in data.get("macro", [])],
            )
        except (TypeError, ValueError, AttributeError) as err:
            raise DataError(f"malformed result matrix: {err}", path=source, fix=fix) from None
