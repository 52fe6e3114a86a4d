"""Tag schemes: decode per-token tags (BIO/IOB2, IOB1, BIOES, BMES) into spans, encode spans as BIO.

Tags are ``O`` or ``<prefix><sep><type>`` with separator ``-`` or ``_`` (``B-PER``, ``B_PER``); the
type may contain dots or dashes (Weibo's ``B-PER.NAM``, WNUT's ``B-creative-work``). BILOU's
``L``/``U`` are read as ``E``/``S``; ``M`` and ``I`` mean the same (inside).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from diancang.data import defects as D
from diancang.data.record import DefectLog, Span, spans_to_bio
from diancang.errors import ConfigError

SCHEMES: tuple[str, ...] = ("bio", "iob1", "bioes", "bmes")
_TAG = re.compile(r"([A-Za-z])[-_](.+)")
_ALIAS = {"L": "E", "U": "S", "M": "I"}
_ALLOWED = {"bio": "BI", "iob1": "BI", "bioes": "BIES", "bmes": "BIES"}
_FIX = (
    "tag each entity's first token B-TYPE and its other tokens I-TYPE (or use the BIOES/BMES "
    "prefixes consistently)"
)


@functools.lru_cache(maxsize=4096)
def parse_tag(tag: str) -> tuple[str, str] | None:
    """``("O", "")`` for outside, ``(prefix, type)`` with prefix in B/I/E/S, or None if unknown."""
    if tag == "O":
        return ("O", "")
    m = _TAG.fullmatch(tag)
    if m is None:
        return None
    prefix = m.group(1).upper()
    prefix = _ALIAS.get(prefix, prefix)
    if prefix not in "BIES":
        return None
    return (prefix, m.group(2))


def detect_scheme(tags: Iterable[str]) -> str:
    """Guess the scheme from the prefixes present.

    ``bmes`` if any ``M-`` tag, else ``bioes`` if any ``E-``/``S-`` (or ``L-``/``U-``), else ``bio``
    (IOB2). IOB1 cannot be told from a lenient IOB2 reading, so it is used only when asked for;
    reading IOB1 as ``bio`` gives the same spans but counts each ``I-`` start as a defect.
    """
    prefixes = set()
    for tag in set(tags):
        m = _TAG.fullmatch(tag)
        if m is not None:
            prefixes.add(m.group(1).upper())
    if "M" in prefixes:
        return "bmes"
    if prefixes & {"E", "S", "L", "U"}:
        return "bioes"
    return "bio"


def check_scheme(scheme: str) -> str:
    """``scheme`` if known (``auto`` included), else a ConfigError listing the known schemes."""
    if scheme != "auto" and scheme not in SCHEMES:
        raise ConfigError(
            f"unknown tag scheme {scheme!r}", fix=f"use auto or one of {', '.join(SCHEMES)}"
        )
    return scheme


def decode_tags(
    tags: Sequence[str],
    scheme: str,
    *,
    log: DefectLog,
    path: str | Path,
    lines: Sequence[int],
) -> list[Span]:
    """Spans of one sentence's ``tags`` (``lines[i]`` is the file line of token ``i``).

    Repairs, each counted in ``log``: an unknown tag is read as ``O``; an ``I-``/``M-``/``E-`` that
    does not continue an entity of its type starts a new entity there (the usual seqeval-style
    repair); in BIOES/BMES an entity not closed by ``E-`` is kept up to its last token.
    """
    check_scheme(scheme)
    if scheme == "auto":
        scheme = detect_scheme(tags)
    closing = scheme in ("bioes", "bmes")
    allowed = _ALLOWED[scheme]
    spans: list[Span] = []
    start = -1
    label = ""

    def close(end: int, i: int, *, complete: bool) -> None:
        nonlocal start
        if closing and not complete:
            log.report(
                D.UNCLOSED,
                path=path,
                line=lines[i],
                action=f"kept the {label} entity without its E-",
                fix="end every multi-token entity with E-TYPE (and single tokens with S-TYPE)",
            )
        spans.append(Span(start, end, label))
        start = -1

    for i, tag in enumerate(tags):
        if tag == "O":
            if start >= 0:
                close(i, i, complete=False)
            continue
        parsed = parse_tag(tag)
        if parsed is not None and parsed[0] != "O" and parsed[0] not in allowed:
            parsed = None
        if parsed is None:
            log.report(
                D.UNKNOWN_TAG,
                path=path,
                line=lines[i],
                action=f"read tag {tag!r} as O",
                fix=f"use O or {'/'.join(allowed)}-TYPE tags ({scheme} scheme)",
            )
            parsed = ("O", "")
        prefix, typ = parsed
        inside = start >= 0
        if prefix == "O":
            if inside:
                close(i, i, complete=False)
            continue
        if prefix in "BS":
            if inside:
                close(i, i, complete=False)
            start, label = i, typ
            if prefix == "S":
                close(i + 1, i, complete=True)
            continue
        # I or E: continues an entity of the same type, or starts one (a defect except in IOB1).
        if not (inside and label == typ):
            if scheme != "iob1":
                kind = D.TYPE_CHANGE if inside else D.I_WITHOUT_B
                log.report(
                    kind,
                    path=path,
                    line=lines[i],
                    action=f"started a new {typ} entity at {tag!r}",
                    fix=_FIX,
                )
            if inside:
                spans.append(Span(start, i, label))
            start, label = i, typ
        if prefix == "E":
            close(i + 1, i, complete=True)
    if start >= 0:
        close(len(tags), len(tags) - 1, complete=False)
    return spans


def encode_bio(n_tokens: int, spans: Sequence[Span]) -> list[str]:
    """IOB2 tags (``O``, ``B-X``, ``I-X``) of length ``n_tokens`` for non-overlapping ``spans``."""
    return spans_to_bio(n_tokens, spans)
