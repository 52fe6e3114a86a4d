"""Which pieces to mask: token, whole-word or entity masking at a configured rate.

A text arrives as tokens (Chinese: characters, Latin runs; English: words), its **words**
(Chinese: jieba's segmentation mapped onto the tokens; English: each token) and its **entities**
(token spans from annotations or keyword matches). Encoded, every token owns one or more pieces.
A masking unit is a piece (``token``), all pieces of a word (``whole_word``), or all pieces of an
entity, entities drawn before words (``entity``). Units are drawn in a seeded random order and
kept while the masked pieces stay within ``rate`` x the text's pieces (at least one unit), so a
unit is always masked whole. Chosen pieces become ``[MASK]`` (``p_mask``), a random piece
(``p_random``) or stay as they are (the rest), as in BERT.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diancang.model.features import Encoded

MaskMode = Literal["token", "whole_word", "entity"]


class Masking(BaseModel):
    """How to mask (typed rates)."""

    model_config = ConfigDict(extra="forbid")
    mode: MaskMode = Field(
        "whole_word",
        description="token: single pieces; whole_word: every piece of a word; entity: whole "
        "entities first (annotations or keywords), then whole words.",
    )
    rate: float = Field(0.15, gt=0, le=1, description="Share of a text's pieces chosen.")
    p_mask: float = Field(0.8, ge=0, le=1, description="Chosen pieces replaced by [MASK].")
    p_random: float = Field(0.1, ge=0, le=1, description="Chosen pieces replaced by a random one.")


def piece_ranges(enc: Encoded) -> list[range]:
    """The piece positions of each kept token of an encoded text (CLS/SEP excluded)."""
    ends = [*enc.word_index[1:], len(enc.input_ids) - 1]
    return [range(a, b) for a, b in zip(enc.word_index, ends, strict=True)]


def units(
    enc: Encoded,
    mode: MaskMode,
    words: Sequence[tuple[int, int]],
    entities: Sequence[tuple[int, int]] = (),
) -> tuple[list[list[int]], int]:
    """The masking units (lists of piece positions) of one encoded text and how many of them
    lead (entities, drawn first). Token spans past the encoded length are cut."""
    pieces = piece_ranges(enc)
    n = len(pieces)
    if mode == "token":
        return [[i] for r in pieces for i in r], 0

    def span(a: int, b: int) -> list[int]:
        return [i for t in range(a, min(b, n)) for i in pieces[t]]

    lead: list[list[int]] = []
    taken: set[int] = set()
    if mode == "entity":
        for a, b in entities:
            unit = span(a, b)
            if unit and not taken & set(range(a, b)):
                lead.append(unit)
                taken.update(range(a, b))
    rest = [span(a, b) for a, b in words if not taken & set(range(a, b))]
    return lead + [u for u in rest if u], len(lead)


def choose(unit_list: list[list[int]], n_lead: int, rate: float, rng: random.Random) -> list[int]:
    """Piece positions to mask: leading units first, then the rest, each group in a random
    order, a unit kept while the total stays within ``rate`` x all pieces (at least one unit)."""
    total = sum(len(u) for u in unit_list)
    budget = max(1, round(rate * total))
    lead, rest = unit_list[:n_lead], unit_list[n_lead:]
    rng.shuffle(lead)
    rng.shuffle(rest)
    chosen: list[int] = []
    for unit in [*lead, *rest]:
        if chosen and len(chosen) + len(unit) > budget:
            continue
        chosen.extend(unit)
        if len(chosen) >= budget:
            break
    return sorted(chosen)


def apply(
    ids: list[int],
    chosen: list[int],
    masking: Masking,
    mask_id: int,
    vocab_size: int,
    rng: random.Random,
    avoid: frozenset[int] = frozenset(),
) -> tuple[list[int], list[int]]:
    """``(inputs, labels)`` for one text: chosen pieces replaced BERT-style, labels -100 except
    at the chosen pieces. Random replacements avoid the ids in ``avoid`` (specials)."""
    inputs = list(ids)
    labels = [-100] * len(ids)
    for i in chosen:
        labels[i] = ids[i]
        r = rng.random()
        if r < masking.p_mask:
            inputs[i] = mask_id
        elif r < masking.p_mask + masking.p_random:
            pick = rng.randrange(vocab_size)
            while pick in avoid:
                pick = rng.randrange(vocab_size)
            inputs[i] = pick
    return inputs, labels
