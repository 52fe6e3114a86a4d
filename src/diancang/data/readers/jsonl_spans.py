"""Character-span JSON formats: doccano JSONL, Label Studio JSON export, and our own JSONL.

One file, format told apart per record:

- ours (written by :func:`diancang.data.writers.write_jsonl`): ``{"text", "spans": [{"start",
  "end", "label"}], "tokens"?}`` with character offsets, end exclusive; ``tokens`` (optional) are
  kept when they spell the text, otherwise the text is tokenised again (counted);
- doccano: ``{"text", "label": [[start, end, "TYPE"], ...]}`` (also ``"labels"``) or
  ``{"text", "entities": [{"start_offset", "end_offset", "label"}]}``;
- Label Studio: the file is one JSON list of tasks ``{"data": {"text"}, "annotations": [{"result":
  [{"value": {"start", "end", "labels": [...]}}]}]}`` (the first annotation that was not
  cancelled); ``Source.line`` is then the task's 1-based position in the list.

Text without a span list loads with no spans. Span boundaries inside a token are snapped outward,
overlaps resolved (longer kept); every repair is counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diancang.data import defects as D
from diancang.data.readers._common import char_spans_to_tokens, read_text
from diancang.data.readers.cluener import load_json_line
from diancang.data.record import DefectLog, Sentence, Source
from diancang.data.tokenize import align_tokens, tokenize
from diancang.errors import DataError

_FIX = (
    'use {"text": "...", "spans": [{"start": 0, "end": 2, "label": "PER"}]} (character offsets, '
    "end exclusive), or doccano / Label Studio exports"
)


def read_jsonl_spans(path: str | Path, *, log: DefectLog, lang: str) -> list[Sentence]:
    """Sentences of a doccano / Label Studio / own-format file, tokenised for ``lang``."""
    name = str(path)
    text = read_text(path, log)
    records: list[tuple[int, Any]] = []
    if text.lstrip().startswith("["):
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"not valid JSON ({e.msg})",
                path=name,
                line=e.lineno,
                fix="export the tasks again from Label Studio as JSON",
            ) from e
        records = list(enumerate(tasks, start=1))
    else:
        for lineno, raw in enumerate(text.split("\n"), start=1):
            if raw.strip():
                record = load_json_line(raw, name, lineno, log)
                if record is not None:
                    records.append((lineno, record))
    out = []
    for line, record in records:
        sentence = _sentence(record, lang, name, line, log)
        if sentence is not None:
            out.append(sentence)
    return out


def _bad(log: DefectLog, path: str, line: int, what: str) -> None:
    log.report(D.BAD_RECORD, path=path, line=line, action=what, fix=_FIX)


def _sentence(record: Any, lang: str, path: str, line: int, log: DefectLog) -> Sentence | None:
    if not isinstance(record, dict):
        _bad(log, path, line, "not a JSON object: skipped it")
        return None
    if isinstance(record.get("data"), dict):  # Label Studio task
        text, spans = _label_studio(record, path, line, log)
    else:
        text, spans = record.get("text"), _spans(record, path, line, log)
    if not isinstance(text, str):
        _bad(log, path, line, 'no string "text": skipped it')
        return None
    if not text.strip():
        log.report(D.EMPTY_TEXT, path=path, line=line, action="skipped it", fix="remove it")
        return None
    tokens_offsets = _given_tokens(record.get("tokens"), text, path, line, log)
    tokens, offsets = tokens_offsets or tokenize(text, lang)
    token_spans = char_spans_to_tokens(spans, offsets, text=text, log=log, path=path, line=line)
    return Sentence(tokens, token_spans, Source(path, line), text=text, offsets=offsets)


def _given_tokens(
    tokens: Any, text: str, path: str, line: int, log: DefectLog
) -> tuple[list[str], list[tuple[int, int]]] | None:
    if tokens is None:
        return None
    offsets = None
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        offsets = align_tokens(text, tokens)
    if offsets is None:
        log.report(
            D.TOKENS_MISMATCH,
            path=path,
            line=line,
            action="tokenised the text again",
            fix='give "tokens" that spell "text" in order (only spaces between them), or omit it',
        )
        return None
    return list(tokens), offsets


def _span(item: Any) -> tuple[Any, Any, Any, int]:
    """``(start, end, label, n_labels)`` of one span item in any supported shape."""
    if isinstance(item, list) and len(item) == 3:
        return item[0], item[1], item[2], 1
    if isinstance(item, dict):
        start = item.get("start", item.get("start_offset"))
        end = item.get("end", item.get("end_offset"))
        label = item.get("label", item.get("labels"))
        if isinstance(label, list):
            return start, end, label[0] if label else None, len(label)
        return start, end, label, 1
    return None, None, None, 0


def _collect(items: Any, path: str, line: int, log: DefectLog) -> list[tuple[int, int, str]]:
    if not isinstance(items, list):
        _bad(log, path, line, "the span list is not a list: ignored it")
        return []
    out = []
    for item in items:
        start, end, label, n = _span(item)
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(label, str)):
            _bad(log, path, line, f"span {item!r} is not [start, end, label]: ignored it")
            continue
        if n > 1:
            log.report(
                D.MULTI_LABEL,
                path=path,
                line=line,
                action=f"kept the first label {label!r}",
                fix="give each span one label",
            )
        out.append((start, end, label))
    return out


def _spans(
    record: dict[str, Any], path: str, line: int, log: DefectLog
) -> list[tuple[int, int, str]]:
    for key in ("spans", "entities", "label", "labels"):
        if key in record:
            return _collect(record[key], path, line, log)
    return []


def _label_studio(
    task: dict[str, Any], path: str, line: int, log: DefectLog
) -> tuple[Any, list[tuple[int, int, str]]]:
    data = task["data"]
    text = data.get("text")
    if text is None:
        strings = [v for v in data.values() if isinstance(v, str)]
        text = strings[0] if len(strings) == 1 else None
    annotations = task.get("annotations") or task.get("completions") or []
    if not isinstance(annotations, list):
        _bad(log, path, line, '"annotations" is not a list: ignored it')
        return text, []
    chosen = next(
        (a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")), None
    )
    if chosen is None:
        return text, []
    results = chosen.get("result") or []
    values = [r.get("value") for r in results if isinstance(r, dict) and "value" in r]
    values = [v for v in values if isinstance(v, dict) and ("labels" in v or "label" in v)]
    return text, _collect(values, path, line, log)
