"""What an upload must hold before a learning step starts, checked without loading a model.

:func:`check_upload` is shared by ``diancang learn`` and the service; the service runs
:func:`check_upload_file` in a separate process, so parsing a large upload never holds the
serving process's interpreter.
"""

from __future__ import annotations

import re
from pathlib import Path

from diancang.data.record import Sentence
from diancang.errors import DataError, DiancangError

#: The fewest sentences an upload may have: a fifth goes to the new types' dev set.
MIN_SENTENCES = 5
#: A type name: a letter, then up to 63 letters, digits, ``_``, ``.`` or ``-``.
TYPE_NAME = re.compile(r"[^\W\d_][\w.\-]{0,63}")
_TAG_LIKE = re.compile(r"[BIESMLU]-", re.IGNORECASE)


def check_upload(
    sentences: list[Sentence], known: list[str], version: int, *, max_new_types: int
) -> list[str]:
    """The new types of an upload, once it is shown to be learnable: every type name valid
    (:data:`TYPE_NAME`, not ``O``, not a tag such as ``B-PER``), at least one type the version
    lacks, at most ``max_new_types`` new ones, at least :data:`MIN_SENTENCES` sentences. Each
    failure is a :class:`DataError` naming the line, so a service refuses it before a job."""
    for s in sentences:
        for sp in s.spans:
            name = sp.label
            if TYPE_NAME.fullmatch(name) and name != "O" and not _TAG_LIKE.match(name):
                continue
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise DataError(
                f"type name {shown!r} is not allowed",
                path=s.source.path if s.source else None,
                line=s.source.line if s.source else None,
                fix="a type name is 1-64 letters, digits, '_', '.' or '-' starting with a "
                "letter, and neither O nor a tag such as B-PER",
            )
    new = sorted({sp.label for s in sentences for sp in s.spans} - set(known))
    if not new:
        raise DataError(
            f"the data names no type that version {version} lacks (it knows {', '.join(known)})",
            fix="annotate the new types' mentions in the uploaded sentences",
        )
    if len(new) > max_new_types:
        raise DataError(
            f"{len(new)} new types in one upload ({', '.join(new[:5])}, ...); at most "
            f"{max_new_types} a step",
            fix="upload fewer types at a time",
        )
    if len(sentences) < MIN_SENTENCES:
        raise DataError(
            f"{len(sentences)} sentences are too few to train and check a new type",
            fix=f"upload at least {MIN_SENTENCES} annotated sentences",
        )
    return new


def check_upload_file(
    path: str, fmt: str, lang: str, known: list[str], version: int, max_new_types: int
) -> tuple[str | None, int]:
    """Read an uploaded file strictly and :func:`check_upload` it: ``(None, sentences)`` when
    it can be learned, else ``(the error as a client may read it, 0)`` (a path-free string:
    this runs in a worker process and its answer goes to a client)."""
    from diancang.data.presets import load_files

    try:
        sentences = load_files(None, None, Path(path), format=fmt, lang=lang, strict=True).test
        check_upload(sentences, known, version, max_new_types=max_new_types)
    except DiancangError as err:
        return public(err), 0
    return None, len(sentences)


def public(err: DiancangError) -> str:
    """An error as a client may read it: the line, what and how to fix, never a server path."""
    where = f"line {err.line}: " if err.line is not None else ""
    fix = f" Fix: {err.fix.rstrip('.')}." if err.fix else ""
    return where + err.what.rstrip(".") + "." + fix
