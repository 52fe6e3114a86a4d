"""Readers: one per file format, each returning ``list[Sentence]`` and counting defects."""

from __future__ import annotations

from pathlib import Path

from diancang.data.record import DefectLog, Sentence
from diancang.errors import ConfigError

FORMATS: tuple[str, ...] = ("conll", "cluener", "jsonl")


def read_any(
    path: str | Path,
    *,
    format: str,
    log: DefectLog,
    scheme: str = "auto",
    lang: str = "zh",
) -> list[Sentence]:
    """Read ``path`` in ``format``: ``conll`` (column file), ``cluener`` (CLUENER JSON lines) or
    ``jsonl`` (doccano / Label Studio / own JSONL); ``scheme`` applies to column files and
    ``lang`` to tokenising text (column files are read as tokenised)."""
    if format == "conll":
        from diancang.data.readers.conll import read_conll

        return read_conll(path, log=log, scheme=scheme, lang=lang)
    if format == "cluener":
        from diancang.data.readers.cluener import read_cluener

        return read_cluener(path, log=log)
    if format == "jsonl":
        from diancang.data.readers.jsonl_spans import read_jsonl_spans

        return read_jsonl_spans(path, log=log, lang=lang)
    raise ConfigError(f"unknown data format {format!r}", fix=f"use one of {', '.join(FORMATS)}")
