"""CLUENER2020 JSON lines: ``{"text": str, "label": {type: {mention: [[start, end_inclusive]]}}}``.

Tokens are the text's characters (spaces skipped). Records without ``"label"`` (the official test
split) load with no spans. Counted defects: a bad JSON line (skipped), a record of the wrong shape,
a mention that differs from ``text[start:end+1]`` or lies outside the text (dropped), overlapping
spans (the longer kept, see :func:`drop_overlaps`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diancang.data import defects as D
from diancang.data.readers._common import char_spans_to_tokens, read_text
from diancang.data.record import DefectLog, Sentence, Source
from diancang.data.tokenize import tokenize

_SHAPE_FIX = (
    'write each line as {"text": "...", "label": {"TYPE": {"mention": [[start, end_inclusive]]}}}'
)


def read_cluener(path: str | Path, *, log: DefectLog) -> list[Sentence]:
    """Sentences of a CLUENER2020 JSON-lines file (``Sentence.text`` and ``offsets`` set)."""
    name = str(path)
    out: list[Sentence] = []
    for lineno, raw in enumerate(read_text(path, log).split("\n"), start=1):
        if not raw.strip():
            continue
        record = load_json_line(raw, name, lineno, log)
        if record is None:
            continue
        text = record.get("text")
        if not isinstance(text, str):
            _shape(log, name, lineno, 'no string "text"', "skipped the line")
            continue
        if not text.strip():
            log.report(
                D.EMPTY_TEXT,
                path=name,
                line=lineno,
                action="skipped the line",
                fix="remove lines with empty text",
            )
            continue
        char_spans = _mentions(record.get("label"), text, name, lineno, log)
        tokens, offsets = tokenize(text, "zh")
        spans = char_spans_to_tokens(
            char_spans, offsets, text=text, log=log, path=name, line=lineno
        )
        out.append(Sentence(tokens, spans, Source(name, lineno), text=text, offsets=offsets))
    return out


def load_json_line(raw: str, path: str, lineno: int, log: DefectLog) -> dict[str, Any] | None:
    """The JSON object on one line, or None (counted defect; a DataError in strict mode)."""
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        log.report(
            D.BAD_JSON,
            path=path,
            line=lineno,
            action="skipped the line",
            fix=f"make the line one JSON object ({e.msg} at column {e.colno})",
        )
        return None
    if not isinstance(record, dict):
        _shape(log, path, lineno, "not a JSON object", "skipped the line")
        return None
    return record


def _shape(log: DefectLog, path: str, line: int, what: str, action: str) -> None:
    log.report(D.BAD_RECORD, path=path, line=line, action=f"{what}: {action}", fix=_SHAPE_FIX)


def _mentions(
    label: object, text: str, path: str, line: int, log: DefectLog
) -> list[tuple[int, int, str]]:
    """Character spans ``(start, end_exclusive, type)`` of one record's ``label`` object."""
    if label is None:
        return []
    if not isinstance(label, dict):
        _shape(log, path, line, '"label" is not an object', "ignored its labels")
        return []
    spans: list[tuple[int, int, str]] = []
    for typ, mentions in label.items():
        if not isinstance(mentions, dict):
            _shape(log, path, line, f"type {typ!r} does not map mentions", "ignored the type")
            continue
        for mention, positions in mentions.items():
            if not isinstance(positions, list):
                _shape(log, path, line, f"{mention!r} has no position list", "ignored it")
                continue
            for pos in positions:
                ok = isinstance(pos, list) and len(pos) == 2
                if not ok or not all(isinstance(x, int) for x in pos):
                    _shape(log, path, line, f"position {pos!r} of {mention!r}", "ignored it")
                    continue
                start, end = pos[0], pos[1] + 1
                if not 0 <= start < end <= len(text):
                    log.report(
                        D.SPAN_OUT_OF_RANGE,
                        path=path,
                        line=line,
                        action=f"dropped the {typ} mention {mention!r} at {pos}",
                        fix=f"give 0 <= start <= end < {len(text)} (inclusive end)",
                    )
                elif text[start:end] != mention:
                    log.report(
                        D.MENTION_MISMATCH,
                        path=path,
                        line=line,
                        action=f"dropped the {typ} mention {mention!r}: the text at {pos} is "
                        f"{text[start:end]!r}",
                        fix="correct the offsets (start and inclusive end) or the mention",
                    )
                else:
                    spans.append((start, end, typ))
    return spans
