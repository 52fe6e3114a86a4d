"""Column-file reader (CoNLL, WNUT, Weibo, MSRA layouts) on small hand-written fixtures."""

from __future__ import annotations

import pytest

from diancang.data import defects as D
from diancang.data.readers import read_any
from diancang.data.readers.conll import read_conll
from diancang.data.record import DefectLog, Span
from diancang.errors import ConfigError, DataError


def write(tmp_path, text, name="data.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_conll2003_layout_with_docstart_and_repeated_blanks(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    )  # no blank line at the end
    log = DefectLog()
    sents = read_conll(write(tmp_path, text), log=log)
    assert [s.tokens for s in sents] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert sents[0].spans == [Span(0, 1, "ORG"), Span(2, 3, "MISC")]
    assert sents[1].spans == [Span(0, 2, "PER")]
    assert (sents[0].source.line, sents[1].source.line) == (3, 9)
    assert not log.counts  # -DOCSTART- is not a defect


def test_crlf_and_leading_bom(tmp_path):
    text = "\ufeff我 B-PER\r\n们 I-PER\r\n\r\n好 O\r\n"
    sents = read_conll(write(tmp_path, text), log=DefectLog(), lang="zh")
    assert [s.tokens for s in sents] == [["我", "们"], ["好"]]
    assert sents[0].spans == [Span(0, 2, "PER")]


def test_stray_bom_line_and_bom_inside_token(tmp_path):
    text = "Dubbz\ufeff\tB-person\n\nThis\tO\nguy\tO\n\ufeff\nNext\tO\n"
    log = DefectLog()
    sents = read_conll(write(tmp_path, text), log=log)
    assert [s.tokens for s in sents] == [["Dubbz"], ["This", "guy"], ["Next"]]
    assert log.counts[D.BOM_LINE] == 1 and log.counts[D.BOM_INSIDE] == 1
    assert "data.txt:5" in " ".join(log.summary())


def test_missing_tag_column(tmp_path):
    log = DefectLog()
    sents = read_conll(write(tmp_path, "Paris B-LOC\nis\nnice O\n"), log=log)
    assert sents[0].tokens == ["Paris", "is", "nice"] and sents[0].spans == [Span(0, 1, "LOC")]
    assert log.counts[D.MISSING_TAG] == 1


def test_unknown_prefix_and_i_without_b(tmp_path):
    log = DefectLog()
    sents = read_conll(write(tmp_path, "a\tO\nb\tI-LOC\nc\tZ-LOC\nd\tPER\n"), log=log)
    assert sents[0].spans == [Span(1, 2, "LOC")]
    assert log.counts[D.I_WITHOUT_B] == 1 and log.counts[D.UNKNOWN_TAG] == 2


def test_weibo_position_digits(tmp_path):
    text = "科0\tB-ORG.NAM\n技1\tI-ORG.NAM\ne12\tO\n112\tO\n我\tO\n\n"
    log = DefectLog()
    sents = read_conll(write(tmp_path, text), log=log, strip_position_digit=True, lang="zh")
    assert sents[0].tokens == ["科", "技", "e", "1", "我"]
    assert sents[0].spans == [Span(0, 2, "ORG.NAM")]
    assert log.counts[D.NO_POSITION_DIGIT] == 1
    assert "data.txt:5" in log.summary()[0]


def test_replacement_character_counted(tmp_path):
    log = DefectLog()
    read_conll(write(tmp_path, "\ufffd\ufffd0\tO\n"), log=log, strip_position_digit=True)
    assert log.counts[D.REPLACEMENT_CHAR] == 1


def test_html_entity_split_counted_not_joined(tmp_path):
    log = DefectLog()
    sents = read_conll(write(tmp_path, "&\tO\ngt\tO\n;\tO\nme\tO\n&\tO\nyou\tO\n;\tO\n"), log=log)
    assert sents[0].tokens == ["&", "gt", ";", "me", "&", "you", ";"]
    assert log.counts[D.HTML_SPLIT] == 1


def test_msra_layout_bmes_crlf(tmp_path):
    text = "中 B-ORG\r\n华 M-ORG\r\n社 E-ORG\r\n讯 O\r\n\r\n王 S-PER\r\n\r\n"
    log = DefectLog()
    sents = read_conll(write(tmp_path, text), log=log, lang="zh")
    assert sents[0].spans == [Span(0, 3, "ORG")] and sents[1].spans == [Span(0, 1, "PER")]
    assert not log.counts


def test_sample_reads_only_chosen_sentences(tmp_path):
    text = "a O\n\nb O\nc O\n\nd O\ne O\nf O\n"
    seen = []

    def pick(lengths):
        seen.extend(lengths)
        return [2, 0]

    sents = read_conll(write(tmp_path, text), log=DefectLog(), sample=pick)
    assert seen == [1, 2, 3]
    assert [s.tokens for s in sents] == [["a"], ["d", "e", "f"]]
    assert sents[1].source.line == 6


def test_invalid_utf8_counted(tmp_path):
    log = DefectLog()
    sents = read_conll(write(tmp_path, b"ok O\nbad\xff O\n"), log=log)
    assert sents[0].tokens[1] == "bad\ufffd"
    assert log.counts[D.INVALID_UTF8] == 1


def test_strict_mode_names_file_and_line(tmp_path):
    path = write(tmp_path, "a\tO\n\nb\tO\nc\n")
    with pytest.raises(DataError, match=r"data\.txt:4: line with no tag column\. Fix: "):
        read_conll(path, log=DefectLog(strict=True))


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_conll(tmp_path / "nope.txt", log=DefectLog())
    with pytest.raises(DataError, match="not a file"):
        read_conll(tmp_path, log=DefectLog())
    path = write(tmp_path, "a O\n")
    with pytest.raises(ConfigError, match="unknown language"):
        read_conll(path, log=DefectLog(), lang="fr")
    with pytest.raises(ConfigError, match="unknown data format"):
        read_any(path, format="xml", log=DefectLog())


def test_read_any_dispatch(tmp_path):
    path = write(tmp_path, "Rome B-LOC\n")
    assert read_any(path, format="conll", log=DefectLog(), lang="en")[0].spans == [
        Span(0, 1, "LOC")
    ]
