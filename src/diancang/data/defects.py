"""Names of the data defects the readers count (one name per kind, shared by readers and stats).

Each name is the ``kind`` passed to :meth:`diancang.data.record.DefectLog.report`; the stats module
groups them (tag-sequence errors, dropped mentions) by the sets below.
"""

from __future__ import annotations

# Tag sequences (column files).
I_WITHOUT_B = "I-/M-/E- tag with no B- before it"
TYPE_CHANGE = "entity type changes inside an entity"
UNCLOSED = "BIOES/BMES entity not closed by E-"
UNKNOWN_TAG = "unknown tag prefix"

# Column-file lines and tokens.
MISSING_TAG = "line with no tag column"
BOM_LINE = "line holding only a byte-order mark"
BOM_INSIDE = "byte-order mark inside a line"
NO_POSITION_DIGIT = "token lacks the word-position digit"
REPLACEMENT_CHAR = "token holds U+FFFD (text lost before release)"
HTML_SPLIT = "HTML entity split into separate tokens"
INVALID_UTF8 = "bytes that are not UTF-8"

# JSON formats and character spans.
BAD_JSON = "line is not valid JSON"
BAD_RECORD = "record has the wrong shape"
EMPTY_TEXT = "record with empty text"
MENTION_MISMATCH = "mention text differs from the text at its offsets"
SPAN_OUT_OF_RANGE = "span offsets outside the text"
EMPTY_SPAN = "span covers no token"
BOUNDARY_INSIDE_TOKEN = "span boundary inside a token"
OVERLAP = "overlapping spans"
DUPLICATE_SPAN = "same span listed twice"
MULTI_LABEL = "span with several labels"
TOKENS_MISMATCH = "tokens do not match the text"

# Word-segmented text (SIGHAN).
TRAILING_SPACE = "line ends with spaces"
EMPTY_LINE = "empty line inside the file"
LONG_PARAGRAPH = "paragraph split into sentences"

#: Defects that are errors in the tag sequence (the "tag-sequence errors" of a dataset).
TAG_SEQUENCE: frozenset[str] = frozenset({I_WITHOUT_B, TYPE_CHANGE, UNCLOSED})

#: Defects after which an annotated mention is not loaded (counted, never silent).
DROPS_MENTION: frozenset[str] = frozenset(
    {MENTION_MISMATCH, SPAN_OUT_OF_RANGE, EMPTY_SPAN, OVERLAP, DUPLICATE_SPAN}
)
