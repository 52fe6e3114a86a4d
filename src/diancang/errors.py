"""User-facing errors: every bad input becomes one clear paragraph (where, what, how to fix)."""

from __future__ import annotations

from pathlib import Path


class DiancangError(Exception):
    """A mistake in the user's input (data, config, arguments), not a bug.

    The CLI prints ``str(error)`` as one paragraph and exits with status 2, never a traceback.
    """

    def __init__(
        self,
        what: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.path = str(path) if path is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        """One paragraph: ``file:line: what. Fix: how.``"""
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        text = where + self.what.rstrip(".") + "."
        if self.fix:
            text += " Fix: " + self.fix.rstrip(".") + "."
        return text


class DataError(DiancangError):
    """A data file is malformed (raised in strict mode, or when nothing sensible can be read)."""


class ConfigError(DiancangError):
    """A configuration file or override is invalid."""


class NotFound(DiancangError):
    """Something the user named does not exist (an unknown version id); HTTP answers 404."""
