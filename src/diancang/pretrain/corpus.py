"""Raw text for masked-language-model training: plain lines, JSON lines with a text field (and
optional keywords), or any NER file's sentences (labels kept as entity spans).

Every text becomes a :class:`RawText`: its tokens as the tagger reads them, its words
(Chinese: ``jieba``'s segmentation, English: each token) and its entity token spans (from
annotations, or from the keywords found in the text). Defects (empty lines, lines that are not
JSON, a missing text field) are counted and reported once per kind, like the NER readers'.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import DefectLog, Sentence
from diancang.data.tokenize import tokenize
from diancang.errors import ConfigError

logger = logging.getLogger("diancang.pretrain")

TextFormat = Literal["lines", "jsonl", "conll", "cluener", "ner_jsonl"]


class TextSource(BaseModel):
    """One file of raw text."""

    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="The file (or a preset).")
    preset: str | None = Field(
        None, description="A dataset preset instead of a file: its training sentences."
    )
    data_dir: Path | None = Field(None, description="The preset's data folder (default: found).")
    format: TextFormat = Field(
        "lines",
        description="lines: one text a line; jsonl: JSON objects with a text field; conll, "
        "cluener, ner_jsonl: an NER file (its spans become entities for entity masking).",
    )
    text_field: str = Field("sentence", description="jsonl: the field holding the text.")
    keywords_field: str | None = Field(
        "keywords",
        description="jsonl: a field of keywords (a comma-separated string or a list); each "
        "occurrence in the text is an entity for entity masking. null: none.",
    )
    max_texts: int | None = Field(None, ge=1, description="Read at most this many texts.")


@dataclass
class RawText:
    """``tokens``; ``words`` and ``entities``: token spans ``[start, end)``."""

    tokens: list[str]
    words: list[tuple[int, int]]
    entities: list[tuple[int, int]] = field(default_factory=list)


def segment(tokens: Sequence[str], lang: str) -> list[tuple[int, int]]:
    """Word spans over ``tokens``: jieba's words (Chinese, joined text; a token belongs to the
    word its first character is in) or one word per token (English)."""
    if lang != "zh":
        return [(i, i + 1) for i in range(len(tokens))]
    import jieba

    jieba.setLogLevel(logging.WARNING)
    text = "".join(tokens)
    word_of = [0] * len(text)
    for k, (_, a, b) in enumerate(jieba.tokenize(text)):
        word_of[a:b] = [k] * (b - a)
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, tok in enumerate(tokens):
        if spans and word_of[pos] == word_of[pos - 1] and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
        pos += len(tok)
    return spans


def find_keywords(tokens: Sequence[str], keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Token spans where a keyword occurs (longest first, no overlaps, whole tokens only)."""
    starts, pos = {}, 0
    for i, tok in enumerate(tokens):
        starts[pos] = i
        pos += len(tok)
    starts[pos] = len(tokens)
    text = "".join(tokens)
    taken: set[int] = set()
    found: list[tuple[int, int]] = []
    for kw in sorted({k.strip() for k in keywords if k.strip()}, key=len, reverse=True):
        at = text.find(kw)
        while at >= 0:
            a, b = starts.get(at), starts.get(at + len(kw))
            if a is not None and b is not None and not taken & set(range(a, b)):
                found.append((a, b))
                taken.update(range(a, b))
            at = text.find(kw, at + 1)
    return sorted(found)


def _json_lines(src: TextSource, path: Path, log: DefectLog) -> list[tuple[str, list[str]]]:
    out = []
    lines = path.read_text("utf-8").splitlines()
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            log.report(
                "line is not JSON",
                path=path,
                line=no,
                action="skipped",
                fix="write one JSON object a line",
            )
            continue
        text = obj.get(src.text_field) if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text.strip():
            log.report(
                f"no text in field {src.text_field!r}",
                path=path,
                line=no,
                action="skipped",
                fix="set text_field to the field holding the text",
            )
            continue
        raw = obj.get(src.keywords_field) if src.keywords_field else None
        keywords = raw.split(",") if isinstance(raw, str) else list(raw or [])
        out.append((text, [str(k) for k in keywords]))
    return out


def from_sentences(sentences: Iterable[Sentence], lang: str) -> list[RawText]:
    """NER sentences as raw text: their words, and their spans as entities."""
    return [
        RawText(list(s.tokens), segment(s.tokens, lang), [(x.start, x.end) for x in s.spans])
        for s in sentences
        if s.tokens
    ]


def read_texts(
    sources: Sequence[TextSource], lang: str, latin_words: bool = False
) -> list[RawText]:
    """Every source's texts (see :class:`TextSource`), tokenised as the tagger reads them."""
    from diancang.data.readers import read_any

    texts: list[RawText] = []
    log = DefectLog()
    for src in sources:
        got: list[RawText] = []
        if src.preset is not None:
            from diancang.data.presets import load_preset

            got = from_sentences(load_preset(src.preset, src.data_dir).train, lang)
        elif src.path is None or not src.path.is_file():
            raise ConfigError(
                "text file not found", path=src.path, fix="give an existing file or a preset"
            )
        elif src.format in ("lines", "jsonl"):
            pairs = (
                [(t, []) for t in src.path.read_text("utf-8").splitlines() if t.strip()]
                if src.format == "lines"
                else _json_lines(src, src.path, log)
            )
            for text, keywords in pairs:
                tokens, _ = tokenize(text.strip(), lang, latin_words)
                if tokens:
                    ents = find_keywords(tokens, keywords) if keywords else []
                    got.append(RawText(tokens, segment(tokens, lang), ents))
        else:
            fmt = "jsonl" if src.format == "ner_jsonl" else src.format
            got = from_sentences(read_any(src.path, format=fmt, log=log, lang=lang), lang)
        texts += got[: src.max_texts] if src.max_texts else got
    for kind, n in log.counts.items():
        where, action = log.first[kind]
        logger.warning("text defect: %d x %s (first at %s; %s)", n, kind, where, action)
    return texts
