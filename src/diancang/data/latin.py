"""Latin words inside Chinese text: one token per run of Latin letters and digits.

Chinese corpora are tokenised one character per token, so "iPhone" is six tokens and a model
reading characters cuts "Alice" into letters. With ``latin_words`` a run of ASCII letters and
digits (after NFKC, so full-width ``Ａ１`` count) is one token, in training, evaluation and
prediction alike; a run is never joined across a space or across an entity boundary, so every
annotated span keeps its exact extent, and spans stay character offsets in the text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import replace

from diancang.data.record import Sentence, Span


def _latin(token: str) -> bool:
    norm = unicodedata.normalize("NFKC", token)
    return len(norm) == 1 and norm.isascii() and norm.isalnum()


def groups(
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]] | None = None,
    bounds: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[int, int]]:
    """Token ranges ``[a, b)`` of the joined tokens: each run of one-character Latin tokens
    that touch in the text (by ``offsets``; consecutive when None) and are not split by a
    position in ``bounds`` (entity starts and ends) is one range; every other token its own."""
    out: list[tuple[int, int]] = []
    i, n = 0, len(tokens)
    while i < n:
        j = i + 1
        if _latin(tokens[i]):
            while (
                j < n
                and _latin(tokens[j])
                and j not in bounds
                and (offsets is None or offsets[j][0] == offsets[j - 1][1])
            ):
                j += 1
        out.append((i, j))
        i = j
    return out


def join_latin(sentence: Sentence) -> Sentence:
    """``sentence`` with its Latin runs joined (see :func:`groups`); unchanged when it has
    none. Spans are renumbered to the new tokens; ``offsets`` (when known) cover each run."""
    bounds = {b for sp in sentence.spans for b in (sp.start, sp.end)}
    ranges = groups(sentence.tokens, sentence.offsets, bounds)
    if len(ranges) == len(sentence.tokens):
        return sentence
    new_index = [0] * (len(sentence.tokens) + 1)
    for k, (a, b) in enumerate(ranges):
        for i in range(a, b):
            new_index[i] = k
    new_index[len(sentence.tokens)] = len(ranges)
    offsets = sentence.offsets
    return replace(
        sentence,
        tokens=["".join(sentence.tokens[a:b]) for a, b in ranges],
        spans=[Span(new_index[s.start], new_index[s.end - 1] + 1, s.label) for s in sentence.spans],
        offsets=None
        if offsets is None
        else [(offsets[a][0], offsets[b - 1][1]) for a, b in ranges],
    )


def join_all(sentences: Sequence[Sentence]) -> list[Sentence]:
    """:func:`join_latin` of every sentence."""
    return [join_latin(s) for s in sentences]
