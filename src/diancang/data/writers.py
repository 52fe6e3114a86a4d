"""Writers: BIO column files and our own JSONL (both read back by the readers)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from diancang.data.record import Sentence
from diancang.data.tags import encode_bio
from diancang.errors import DataError


def write_bio(path: str | Path, sentences: Iterable[Sentence]) -> None:
    """``token<TAB>tag`` lines (IOB2), a blank line after each sentence, UTF-8."""
    lines: list[str] = []
    for s in sentences:
        for token, tag in zip(s.tokens, encode_bio(len(s.tokens), s.spans), strict=True):
            if not token or any(ch.isspace() for ch in token):
                raise DataError(
                    f"token {token!r} is empty or holds whitespace; a column file cannot keep it",
                    path=s.source.path if s.source else None,
                    line=s.source.line if s.source else None,
                    fix="write the data as JSONL instead (write_jsonl)",
                )
            lines.append(f"{token}\t{tag}\n")
        lines.append("\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def sentence_text(sentence: Sentence, lang: str) -> tuple[str, list[tuple[int, int]]]:
    """The sentence's text and token offsets: its own when it has them, else its tokens joined
    with ``""`` (``zh``) or ``" "`` (``en``)."""
    if sentence.text is not None and sentence.offsets is not None:
        return sentence.text, list(sentence.offsets)
    sep = "" if lang == "zh" else " "
    offsets: list[tuple[int, int]] = []
    pos = 0
    for token in sentence.tokens:
        offsets.append((pos, pos + len(token)))
        pos += len(token) + len(sep)
    return sep.join(sentence.tokens), offsets


def write_jsonl(path: str | Path, sentences: Iterable[Sentence], *, lang: str = "zh") -> None:
    """One object per line: ``{"text", "tokens", "spans": [{"start", "end", "label",
    "token_start", "token_end"}]}``; ``start``/``end`` are character offsets (end exclusive),
    ``token_start``/``token_end`` token indices (end exclusive)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for s in sentences:
            text, offsets = sentence_text(s, lang)
            spans = [
                {
                    "start": offsets[sp.start][0],
                    "end": offsets[sp.end - 1][1],
                    "label": sp.label,
                    "token_start": sp.start,
                    "token_end": sp.end,
                }
                for sp in sorted(s.spans)
            ]
            record = {"text": text, "tokens": s.tokens, "spans": spans}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
