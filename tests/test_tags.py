"""Tag schemes: detection, decoding with counted repairs, strict mode, BIO encoding."""

from __future__ import annotations

import pytest

from diancang.data import defects as D
from diancang.data.record import DefectLog, Span
from diancang.data.tags import decode_tags, detect_scheme, encode_bio, parse_tag
from diancang.errors import ConfigError, DataError


def decode(tags, scheme="auto", strict=False):
    log = DefectLog(strict)
    spans = decode_tags(tags, scheme, log=log, path="f.txt", lines=list(range(1, len(tags) + 1)))
    return spans, log


def test_parse_tag_separators_and_dotted_types():
    assert parse_tag("O") == ("O", "")
    assert parse_tag("B-PER") == ("B", "PER")
    assert parse_tag("B_PER") == ("B", "PER")
    assert parse_tag("I-PER.NAM") == ("I", "PER.NAM")
    assert parse_tag("B-creative-work") == ("B", "creative-work")
    assert parse_tag("M-ORG") == ("I", "ORG")
    assert parse_tag("L-LOC") == ("E", "LOC")
    assert parse_tag("U-LOC") == ("S", "LOC")
    assert parse_tag("X-PER") is None
    assert parse_tag("PER") is None


def test_detect_scheme():
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "bio"
    assert detect_scheme(["B-PER", "E-PER", "S-LOC"]) == "bioes"
    assert detect_scheme(["B-PER", "M-PER", "E-PER"]) == "bmes"
    assert detect_scheme(["B_PER", "L_PER"]) == "bioes"
    assert detect_scheme([]) == "bio"


def test_bio_clean():
    spans, log = decode(["B-PER", "I-PER", "O", "B_LOC", "B-LOC", "I-PER.NAM"], "bio")
    assert spans == [Span(0, 2, "PER"), Span(3, 4, "LOC"), Span(4, 5, "LOC"), Span(5, 6, "PER.NAM")]
    assert dict(log.counts) == {D.TYPE_CHANGE: 1}  # I-PER.NAM right after B-LOC


def test_i_without_b_starts_entity():
    spans, log = decode(["O", "I-PER", "I-PER", "O"])
    assert spans == [Span(1, 3, "PER")]
    assert log.counts[D.I_WITHOUT_B] == 1
    assert "f.txt:2" in log.summary()[0]


def test_type_change_inside_entity():
    spans, log = decode(["B-PER", "I-LOC"])
    assert spans == [Span(0, 1, "PER"), Span(1, 2, "LOC")]
    assert log.counts[D.TYPE_CHANGE] == 1


def test_unknown_prefix_read_as_o():
    spans, log = decode(["B-PER", "X-PER", "Q"], "bio")
    assert spans == [Span(0, 1, "PER")]
    assert log.counts[D.UNKNOWN_TAG] == 2


def test_bioes_prefix_not_allowed_in_bio():
    spans, log = decode(["S-PER"], "bio")
    assert spans == [] and log.counts[D.UNKNOWN_TAG] == 1


def test_iob1_i_starts_entity_without_defect():
    spans, log = decode(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "iob1")
    assert spans == [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 5, "LOC")]
    assert not log.counts


def test_bmes_and_bioes():
    spans, log = decode(["B-ORG", "M-ORG", "E-ORG", "S-PER", "O", "B-LOC", "E-LOC"])
    assert spans == [Span(0, 3, "ORG"), Span(3, 4, "PER"), Span(5, 7, "LOC")]
    assert not log.counts
    spans, log = decode(["B-LOC", "I-LOC", "E-LOC", "S-PER"], "bioes")
    assert spans == [Span(0, 3, "LOC"), Span(3, 4, "PER")]


def test_bmes_defects():
    spans, log = decode(["O", "E-PER", "B-ORG", "M-ORG", "O", "M-LOC"], "bmes")
    assert spans == [Span(1, 2, "PER"), Span(2, 4, "ORG"), Span(5, 6, "LOC")]
    assert log.counts[D.I_WITHOUT_B] == 2
    assert log.counts[D.UNCLOSED] == 2  # ORG ended by O, LOC by the sentence end


def test_strict_raises_with_file_and_line():
    with pytest.raises(DataError, match=r"f\.txt:3: I-/M-/E- tag with no B- before it"):
        decode(["O", "O", "I-PER"], strict=True)


def test_unknown_scheme():
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        decode(["O"], "bilou2")


def test_encode_bio_round_trip():
    spans = [Span(0, 2, "PER"), Span(3, 4, "LOC")]
    tags = encode_bio(5, spans)
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert decode(tags)[0] == spans
