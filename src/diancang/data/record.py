"""The canonical record every reader produces: tokens, entity spans and where they came from."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from diancang.errors import DataError

logger = logging.getLogger("diancang.data")


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """An entity mention over tokens ``[start, end)`` (end exclusive) with its type ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class Source:
    """Where a sentence came from: a file and its 1-based first line (or JSON line)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(slots=True)
class Sentence:
    """One sentence: its tokens (characters for Chinese), its entity spans, and its source.

    ``text`` is the original string when the source had one (JSON formats); ``offsets`` then maps
    token ``i`` to its character span ``[offsets[i][0], offsets[i][1])`` in ``text``.
    """

    tokens: list[str]
    spans: list[Span] = field(default_factory=list)
    source: Source | None = None
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None

    def types(self) -> set[str]:
        """The set of entity types this sentence mentions."""
        return {s.label for s in self.spans}

    def keep_types(self, keep: Iterable[str]) -> Sentence:
        """A copy whose spans of types not in ``keep`` are dropped (i.e. masked to ``O``)."""
        allowed = set(keep)
        return replace(self, spans=[s for s in self.spans if s.label in allowed])


def spans_to_bio(n_tokens: int, spans: Sequence[Span]) -> list[str]:
    """BIO tags (``O``, ``B-X``, ``I-X``) of length ``n_tokens`` for non-overlapping ``spans``."""
    tags = ["O"] * n_tokens
    for s in sorted(spans):
        tags[s.start] = f"B-{s.label}"
        for i in range(s.start + 1, s.end):
            tags[i] = f"I-{s.label}"
    return tags


@dataclass
class DefectLog:
    """Counts data defects found while reading; in ``strict`` mode the first one raises.

    Each defect has a short ``kind`` (e.g. ``"I- without B-"``), where it was, what the reader did,
    and how to fix it. :meth:`emit` logs one counted warning per kind.
    """

    strict: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, tuple[str, str]] = field(default_factory=dict)

    def report(
        self,
        kind: str,
        *,
        path: str | Path,
        line: int | None,
        action: str,
        fix: str,
    ) -> None:
        """Record one defect of ``kind`` at ``path:line``; ``action`` says what the reader did."""
        where = f"{path}:{line}" if line is not None else str(path)
        if self.strict:
            raise DataError(f"{kind}", path=path, line=line, fix=fix)
        self.counts[kind] += 1
        self.first.setdefault(kind, (where, action))

    def merge(self, other: DefectLog) -> None:
        """Add ``other``'s counts into this log."""
        self.counts.update(other.counts)
        for k, v in other.first.items():
            self.first.setdefault(k, v)

    def summary(self) -> list[str]:
        """One line per defect kind: count, first place, and what was done."""
        return [
            f"{n} x {kind} (first at {self.first[kind][0]}; {self.first[kind][1]})"
            for kind, n in sorted(self.counts.items())
        ]

    def emit(self) -> None:
        """Log one counted warning per defect kind."""
        for line in self.summary():
            logger.warning("data defect: %s", line)
