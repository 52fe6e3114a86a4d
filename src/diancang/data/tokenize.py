"""Split raw text into tokens with character offsets (for JSON formats and prediction)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from diancang.errors import ConfigError

LANGS: tuple[str, ...] = ("zh", "en")
_EN_TOKEN = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s")


def tokenize(
    text: str, lang: str, latin_words: bool = False
) -> tuple[list[str], list[tuple[int, int]]]:
    """``(tokens, offsets)`` of ``text``; token ``i`` is ``text[offsets[i][0]:offsets[i][1]]``.

    ``zh``: one token per non-space character (as in CLUENER and MSRA); with ``latin_words``
    each run of Latin letters and digits is one token (:mod:`diancang.data.latin`).
    ``en``: runs of letters/digits/underscore, and each other non-space character on its own.
    """
    if lang == "zh":
        if _SPACE.search(text) is None:
            offsets = [(i, i + 1) for i in range(len(text))]
        else:
            offsets = [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
        if latin_words:
            from diancang.data.latin import groups

            chars = [text[a:b] for a, b in offsets]
            offsets = [(offsets[a][0], offsets[b - 1][1]) for a, b in groups(chars, offsets)]
    elif lang == "en":
        offsets = [m.span() for m in _EN_TOKEN.finditer(text)]
    else:
        raise ConfigError(f"unknown language {lang!r}", fix=f"use one of {', '.join(LANGS)}")
    return [text[a:b] for a, b in offsets], offsets


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def guess_lang(tokens: Iterable[str], limit: int = 200_000) -> tuple[str | None, str]:
    """``(lang, evidence)`` from the first ``limit`` characters of ``tokens``: ``zh`` when at
    least 30% of the letters are CJK characters, ``en`` when under 5% are and most letters are
    Latin, else None (mixed or neither)."""
    cjk = latin = 0
    seen = 0
    for tok in tokens:
        for ch in tok:
            if _is_cjk(ch):
                cjk += 1
            elif ch.isascii() and ch.isalpha():
                latin += 1
        seen += len(tok)
        if seen >= limit:
            break
    letters = cjk + latin
    if not letters:
        return None, "no letters"
    share = cjk / letters
    evidence = f"{share:.0%} of {letters:,} letters are CJK characters"
    if share >= 0.3:
        return "zh", evidence
    if share < 0.05:
        return "en", evidence
    return None, evidence


def align_tokens(text: str, tokens: list[str]) -> list[tuple[int, int]] | None:
    """Offsets of ``tokens`` found left to right in ``text`` (only whitespace between them), or
    None when the tokens do not spell the text."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for tok in tokens:
        at = text.find(tok, pos) if tok else -1
        if at < 0 or text[pos:at].strip():
            return None
        offsets.append((at, at + len(tok)))
        pos = at + len(tok)
    if text[pos:].strip():
        return None
    return offsets
