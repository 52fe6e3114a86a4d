"""Sentences longer than the encoder's ``max_length``: split into windows, never cut silently.

Training (:func:`training_cuts`) splits a long sentence into consecutive windows that each fit,
cutting after punctuation where it can and never inside a labelled entity unless the entity
alone is too long. Prediction and evaluation (:func:`prediction_windows`) tag overlapping
windows and keep, for every token, the window in which it sits farthest from an edge
(:func:`owners`), so a user's paragraph is tagged whole.

A window is a token range ``(start, end)`` (end exclusive); ``counts[i]`` is the number of
sub-token pieces of token ``i``; ``budget`` the pieces a window may hold (``max_length`` minus
the two special tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from diancang.data.record import Sentence, Span

#: Tokens after which a training cut reads naturally (sentence and clause ends).
BREAKS = frozenset("。！？；…，、,.!?;:：")


def _reach(counts: Sequence[int], start: int, budget: int) -> int:
    """The largest ``end > start`` with ``sum(counts[start:end]) <= budget`` (at least
    ``start + 1``: a token longer than the budget gets a window of its own)."""
    total, end = 0, start
    while end < len(counts) and total + counts[end] <= budget:
        total += counts[end]
        end += 1
    return max(end, start + 1)


def fits(counts: Sequence[int], budget: int) -> bool:
    """Whether the whole sentence fits in one window."""
    return sum(counts) <= budget


def training_cuts(
    counts: Sequence[int], budget: int, spans: Sequence[Span], tokens: Sequence[str]
) -> list[tuple[int, int]]:
    """Consecutive windows covering the sentence, each within ``budget``. Each cut is the
    latest position that falls outside every span of ``spans``, preferring one right after a
    token of :data:`BREAKS` in the window's second half; only an entity longer than a window
    is cut."""
    n = len(counts)
    inside = [False] * (n + 1)  # inside[c]: a cut before token c would split an entity
    for sp in spans:
        for c in range(sp.start + 1, sp.end):
            inside[c] = True
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = _reach(counts, start, budget)
        if end < n:
            free = [c for c in range(end, start, -1) if not inside[c]]
            natural = [
                c for c in free if c > start + (end - start) // 2 and tokens[c - 1] in BREAKS
            ]
            end = (natural or free or [end])[0]
        windows.append((start, end))
        start = end
    return windows


def prediction_windows(counts: Sequence[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Windows covering the sentence, each within ``budget``, neighbours sharing up to
    ``overlap`` tokens of context (fewer when a window is short)."""
    n = len(counts)
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end = _reach(counts, start, budget)
        windows.append((start, end))
        if end >= n:
            return windows
        start = max(start + 1, end - min(overlap, (end - start) // 2))


def owners(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The token range each window answers for: an overlap is split at its middle, so every
    token is read from the window where it has the most context on both sides."""
    out = []
    for k, (start, end) in enumerate(windows):
        lo = 0 if k == 0 else (start + windows[k - 1][1]) // 2
        hi = end if k == len(windows) - 1 else (windows[k + 1][0] + end) // 2
        out.append((lo, hi))
    return out


def cut_sentence(sentence: Sentence, windows: Sequence[tuple[int, int]]) -> list[Sentence]:
    """``sentence`` as one sentence per window; spans are shifted (and clipped where a cut
    crosses one); ``text`` and ``source`` stay, ``offsets`` still index the whole ``text``."""
    if len(windows) <= 1:
        return [sentence]
    parts = []
    for start, end in windows:
        spans = [
            Span(max(s.start, start) - start, min(s.end, end) - start, s.label)
            for s in sentence.spans
            if s.start < end and s.end > start
        ]
        offsets = None if sentence.offsets is None else sentence.offsets[start:end]
        parts.append(
            replace(sentence, tokens=sentence.tokens[start:end], spans=spans, offsets=offsets)
        )
    return parts


def plan(
    sentences: Sequence[Sequence[str]], count: Callable[[str], int], budget: int, overlap: int
) -> tuple[list[list[tuple[int, int]]], list[list[str]]]:
    """Prediction windows of every sentence (one ``(0, n)`` when it fits) and the token lists
    to tag, all windows of all sentences in order."""
    windows: list[list[tuple[int, int]]] = []
    parts: list[list[str]] = []
    for toks in sentences:
        counts = [count(t) for t in toks]
        wins = (
            [(0, len(toks))]
            if fits(counts, budget)
            else prediction_windows(counts, budget, overlap)
        )
        windows.append(wins)
        parts.extend(list(toks[a:b]) for a, b in wins)
    return windows, parts


def merge(
    windows: Sequence[Sequence[tuple[int, int]]],
    part_tags: Sequence[list[str]],
    part_probs: Sequence[list[float]],
) -> tuple[list[list[str]], list[list[float]]]:
    """Each sentence's tags and probabilities from its windows' (see :func:`plan`): every token
    read from the window that :func:`owners` gives it. An ``I-X`` that opens a window's share
    after anything but ``X`` becomes ``B-X`` (the earlier window did not see that entity)."""
    tags: list[list[str]] = []
    probs: list[list[float]] = []
    k = 0
    for wins in windows:
        merged: list[str] = []
        merged_probs: list[float] = []
        for (start, _), (lo, hi) in zip(wins, owners(wins), strict=True):
            part = part_tags[k][lo - start : hi - start]
            if merged and part and part[0].startswith("I-") and merged[-1][2:] != part[0][2:]:
                part[0] = "B-" + part[0][2:]
            merged.extend(part)
            merged_probs.extend(part_probs[k][lo - start : hi - start])
            k += 1
        tags.append(merged)
        probs.append(merged_probs)
    return tags, probs


def split_long(
    sentences: Sequence[Sentence],
    count: Callable[[str], int],
    budget: int,
    also: Sequence[Sequence[Sentence]] = (),
) -> tuple[list[Sentence], list[list[Sentence]], list[int]]:
    """Training data that fits: each sentence of ``sentences`` longer than ``budget`` pieces
    becomes the windows of :func:`training_cuts` (cut around its own spans). ``also`` are
    parallel lists (the same sentences with other spans), cut at the same places. Returns the
    new list, the new parallel lists, and for each new sentence the index of its original."""
    out: list[Sentence] = []
    parallel: list[list[Sentence]] = [[] for _ in also]
    origin: list[int] = []
    for i, s in enumerate(sentences):
        counts = [count(t) for t in s.tokens]
        cuts = [(0, len(s.tokens))]
        if not fits(counts, budget):
            cuts = training_cuts(counts, budget, s.spans, s.tokens)
        out.extend(cut_sentence(s, cuts))
        for target, source in zip(parallel, also, strict=True):
            target.extend(cut_sentence(source[i], cuts))
        origin.extend([i] * len(cuts))
    return out, parallel, origin
