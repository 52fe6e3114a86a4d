"""Word-segmented text (SIGHAN 2005 gold files): words separated by spaces, a paragraph a line.

Each sentence becomes a :class:`~diancang.data.record.Sentence` of characters whose spans are
its words (label :data:`WORD`), so word segmentation rides on the same records, batching and
windows as NER; :func:`cws_tags` and :func:`words_of` convert between words and per-character
``B/M/E/S`` tags. Paragraphs are split into sentences after ``。！？；`` (and a closing quote
right after them); trailing spaces and empty lines are counted defects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from diancang.data import defects as D
from diancang.data.readers._common import read_text
from diancang.data.record import DefectLog, Sentence, Source, Span

#: The span label of a word.
WORD = "W"
#: Per-character tags of word segmentation: Begin, Middle, End of a word, Single-character word.
CWS_TAGS = ("B", "M", "E", "S")
_SENTENCE_END = re.compile(r"[。！？；][”’」』]?")


def read_segmented(path: str | Path, *, log: DefectLog | None = None) -> list[Sentence]:
    """The sentences of a segmented file (see the module docstring)."""
    log = log or DefectLog()
    name = str(path)
    out: list[Sentence] = []
    for number, line in enumerate(read_text(path, log).splitlines(), start=1):
        if line != line.rstrip():
            log.report(
                D.TRAILING_SPACE,
                path=name,
                line=number,
                action="removed them",
                fix="strip trailing spaces",
            )
        words = line.split()
        if not words:
            log.report(
                D.EMPTY_LINE, path=name, line=number, action="skipped it", fix="delete the line"
            )
            continue
        sentences = _split(words)
        if len(sentences) > 1:
            log.report(
                D.LONG_PARAGRAPH,
                path=name,
                line=number,
                action=f"split it into {len(sentences)} sentences after 。！？；",
                fix="none needed (a paragraph a line is the format)",
            )
        for part in sentences:
            out.append(_sentence(part, Source(name, number)))
    return out


def _split(words: list[str]) -> list[list[str]]:
    """Sentences of a paragraph's words: a sentence ends after a word that ends one."""
    parts: list[list[str]] = [[]]
    for w in words:
        parts[-1].append(w)
        if _SENTENCE_END.fullmatch(w) or (len(w) > 1 and _SENTENCE_END.fullmatch(w[-1])):
            parts.append([])
    return [p for p in parts if p]


def _sentence(words: Sequence[str], source: Source | None = None) -> Sentence:
    tokens: list[str] = []
    spans: list[Span] = []
    for w in words:
        spans.append(Span(len(tokens), len(tokens) + len(w), WORD))
        tokens.extend(w)
    return Sentence(tokens=tokens, spans=spans, source=source)


def from_words(words: Sequence[str]) -> Sentence:
    """A sentence of characters whose spans are ``words``."""
    return _sentence(words)


def cws_tags(sentence: Sentence) -> list[str]:
    """Per-character ``B/M/E/S`` tags of a segmented sentence (a character outside every word,
    which a reader never makes, is a single-character word)."""
    tags = ["S"] * len(sentence.tokens)
    for sp in sentence.spans:
        if sp.end - sp.start > 1:
            tags[sp.start] = "B"
            tags[sp.start + 1 : sp.end - 1] = ["M"] * (sp.end - sp.start - 2)
            tags[sp.end - 1] = "E"
    return tags


def words_of(tokens: Sequence[str], tags: Sequence[str]) -> list[str]:
    """The words ``B/M/E/S`` tags cut ``tokens`` into; a malformed sequence (``M`` or ``E``
    with no ``B``, a word left open) is read leniently: a word ends at ``E``/``S`` or before a
    ``B``/``S``."""
    words: list[str] = []
    current = ""
    for tok, tag in zip(tokens, tags, strict=True):
        if tag in ("B", "S") and current:
            words.append(current)
            current = ""
        current += tok
        if tag in ("E", "S"):
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return words


def word_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Word-level precision, recall and F1 of segmentations (each a list of words of the same
    text), as the SIGHAN scorer counts them: a word is right when its character span matches."""

    def spans(words: Sequence[str]) -> set[tuple[int, int]]:
        out, pos = set(), 0
        for w in words:
            out.add((pos, pos + len(w)))
            pos += len(w)
        return out

    hit = n_gold = n_pred = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = spans(g), spans(p)
        hit += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = hit / n_pred if n_pred else 0.0
    recall = hit / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
