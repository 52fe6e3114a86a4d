"""The archive (典藏): versions of a continually updated recognizer, and the promotion gate.

:class:`Archive` stores each version's model files by content hash next to an SQLite log of
versions, datasets and events; :func:`decide` judges whether a candidate may replace the live one.
"""

from diancang.archive.gate import GateConfig, decide
from diancang.archive.store import STATUSES, Archive, Version

__all__ = ["STATUSES", "Archive", "GateConfig", "Version", "decide"]
