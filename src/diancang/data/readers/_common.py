"""Helpers shared by the readers: reading a text file, mapping character spans to tokens."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path

from diancang.data import defects as D
from diancang.data.record import DefectLog, Span
from diancang.errors import DataError


def read_text(path: str | Path, log: DefectLog) -> str:
    """The file's text: UTF-8, a leading byte-order mark removed, line ends left as they are.

    Bytes that are not UTF-8 are a defect (replaced by U+FFFD); a missing file is a DataError.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=p, fix="check the path (or the data.dir setting)")
    if not p.is_file():
        raise DataError("not a file", path=p, fix="give the path of a data file, not a folder")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        log.report(
            D.INVALID_UTF8,
            path=p,
            line=data.count(b"\n", 0, e.start) + 1,
            action="replaced the bytes that are not UTF-8 with U+FFFD",
            fix="save the file as UTF-8",
        )
        text = data.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def char_spans_to_tokens(
    spans: Sequence[tuple[int, int, str]],
    offsets: Sequence[tuple[int, int]],
    *,
    text: str,
    log: DefectLog,
    path: str | Path,
    line: int,
) -> list[Span]:
    """Token spans for character spans ``(start, end_exclusive, label)`` over ``text``.

    A boundary inside a token is snapped outward (counted); spans outside the text or covering no
    token are dropped (counted); overlapping spans are resolved by :func:`drop_overlaps`.
    """
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]
    out: list[Span] = []
    for cs, ce, label in spans:
        if not (0 <= cs < ce <= len(text)):
            log.report(
                D.SPAN_OUT_OF_RANGE,
                path=path,
                line=line,
                action=f"dropped the {label} span [{cs}, {ce})",
                fix=f"give 0 <= start < end <= {len(text)} (the text's length)",
            )
            continue
        t0 = bisect_right(ends, cs)  # first token ending after cs
        t1 = bisect_left(starts, ce) - 1  # last token starting before ce
        if t0 > t1:
            log.report(
                D.EMPTY_SPAN,
                path=path,
                line=line,
                action=f"dropped the {label} span {text[cs:ce]!r}",
                fix="let every span cover at least one non-space character",
            )
            continue
        if starts[t0] < cs or ends[t1] > ce:
            log.report(
                D.BOUNDARY_INSIDE_TOKEN,
                path=path,
                line=line,
                action=f"widened the {label} span {text[cs:ce]!r} to "
                f"{text[starts[t0] : ends[t1]]!r}",
                fix="put span boundaries between tokens (or fix the offsets)",
            )
        out.append(Span(t0, t1 + 1, label))
    return drop_overlaps(out, log=log, path=path, line=line)


def drop_overlaps(
    spans: Sequence[Span], *, log: DefectLog, path: str | Path, line: int
) -> list[Span]:
    """Non-overlapping spans, sorted: the longer span wins (the earlier one on a tie); every
    dropped span is counted (an exact repeat as a duplicate, otherwise as an overlap)."""
    kept: list[Span] = []
    order = sorted(range(len(spans)), key=lambda k: (spans[k].start - spans[k].end, k))
    for k in order:
        s = spans[k]
        clash = next((o for o in kept if s.start < o.end and o.start < s.end), None)
        if clash is None:
            kept.append(s)
        elif clash == s:
            log.report(
                D.DUPLICATE_SPAN,
                path=path,
                line=line,
                action=f"kept one copy of the {s.label} span [{s.start}, {s.end})",
                fix="list each span once",
            )
        else:
            log.report(
                D.OVERLAP,
                path=path,
                line=line,
                action=f"kept the {clash.label} span [{clash.start}, {clash.end}) and dropped "
                f"the {s.label} span [{s.start}, {s.end})",
                fix="flat NER needs non-overlapping spans: remove one of them",
            )
    return sorted(kept)
