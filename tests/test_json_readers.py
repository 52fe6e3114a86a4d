"""CLUENER, doccano, Label Studio and own-JSONL readers, tokenisation, and writer round trips."""

from __future__ import annotations

import json

import pytest

from diancang.data import defects as D
from diancang.data.readers import read_any
from diancang.data.readers.cluener import read_cluener
from diancang.data.readers.conll import read_conll
from diancang.data.readers.jsonl_spans import read_jsonl_spans
from diancang.data.record import DefectLog, Sentence, Span
from diancang.data.tokenize import align_tokens, tokenize
from diancang.data.writers import write_bio, write_jsonl
from diancang.errors import ConfigError, DataError


def jsonl(tmp_path, records, name="data.jsonl"):
    path = tmp_path / name
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tokenize_zh_and_en():
    assert tokenize("我 爱 NLP", "zh") == (
        ["我", "爱", "N", "L", "P"],
        [(0, 1), (2, 3), (4, 5), (5, 6), (6, 7)],
    )
    tokens, offsets = tokenize("Hi, New York's mayor.", "en")
    assert tokens == ["Hi", ",", "New", "York", "'", "s", "mayor", "."]
    assert all("Hi, New York's mayor."[a:b] == t for t, (a, b) in zip(tokens, offsets, strict=True))
    with pytest.raises(ConfigError):
        tokenize("x", "de")
    assert align_tokens("New  York", ["New", "York"]) == [(0, 3), (5, 9)]
    assert align_tokens("New York", ["New", "Yrok"]) is None


def test_cluener_spans_text_offsets_and_test_split(tmp_path):
    path = jsonl(
        tmp_path,
        [
            {
                "text": "浙商银行叶老桂",
                "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}},
            },
            {"id": 0, "text": "四川敦煌学"},
        ],
    )
    log = DefectLog()
    sents = read_cluener(path, log=log)
    assert sents[0].spans == [Span(0, 4, "company"), Span(4, 7, "name")]
    assert sents[0].text == "浙商银行叶老桂" and sents[0].offsets[4] == (4, 5)
    assert sents[1].spans == [] and sents[1].source.line == 2
    assert not log.counts


def test_cluener_defects(tmp_path):
    records = [
        # the real train.json case: a book title containing two company names
        {
            "text": "题为《招商银行投资永隆银行》的文章",
            "label": {
                "book": {"《招商银行投资永隆银行》": [[2, 13]]},
                "company": {"招商银行": [[3, 6]], "永隆银行": [[9, 12]]},
            },
        },
        {"text": "北京欢迎你", "label": {"address": {"上海": [[0, 1]]}}},  # mention mismatch
        '{"text": "broken", "label": ',  # bad JSON
        {"text": "天津", "label": {"address": {"天津": [[0, 5]]}}},  # out of range
        {"text": "ok", "label": ["not", "a", "dict"]},
    ]
    log = DefectLog()
    sents = read_cluener(jsonl(tmp_path, records), log=log)
    assert len(sents) == 4  # the bad JSON line is skipped
    assert sents[0].spans == [Span(2, 14, "book")]
    assert log.counts[D.OVERLAP] == 2
    assert log.counts[D.MENTION_MISMATCH] == 1
    assert log.counts[D.BAD_JSON] == 1 and "data.jsonl:3" in " ".join(log.summary())
    assert log.counts[D.SPAN_OUT_OF_RANGE] == 1
    assert log.counts[D.BAD_RECORD] == 1


def test_cluener_strict_bad_json_names_line(tmp_path):
    path = jsonl(tmp_path, [{"text": "好"}, "{oops"])
    with pytest.raises(DataError, match=r"data\.jsonl:2: line is not valid JSON\. Fix: .*column"):
        read_cluener(path, log=DefectLog(strict=True))


def test_doccano_both_layouts(tmp_path):
    path = jsonl(
        tmp_path,
        [
            {"text": "Barack Obama visited Paris.", "label": [[0, 12, "PER"], [21, 26, "LOC"]]},
            {
                "text": "Hello Berlin",
                "entities": [{"start_offset": 6, "end_offset": 12, "label": "LOC"}],
            },
            {"text": "no labels here"},
        ],
    )
    log = DefectLog()
    sents = read_jsonl_spans(path, log=log, lang="en")
    assert sents[0].tokens == ["Barack", "Obama", "visited", "Paris", "."]
    assert sents[0].spans == [Span(0, 2, "PER"), Span(3, 4, "LOC")]
    assert sents[1].spans == [Span(1, 2, "LOC")]
    assert sents[2].spans == []
    assert not log.counts


def test_label_studio_export(tmp_path):
    tasks = [
        {
            "id": 1,
            "data": {"text": "张三在北京"},
            "annotations": [
                {"was_cancelled": True, "result": []},
                {
                    "result": [
                        {
                            "type": "labels",
                            "value": {"start": 0, "end": 2, "text": "张三", "labels": ["PER"]},
                        },
                        {
                            "type": "labels",
                            "value": {"start": 3, "end": 5, "labels": ["LOC", "GPE"]},
                        },
                    ]
                },
            ],
        },
        {"id": 2, "data": {"text": "没有标注"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    log = DefectLog()
    sents = read_jsonl_spans(path, log=log, lang="zh")
    assert sents[0].spans == [Span(0, 2, "PER"), Span(3, 5, "LOC")]
    assert sents[1].spans == [] and sents[1].source.line == 2
    assert log.counts[D.MULTI_LABEL] == 1
    path.write_text("[{]", encoding="utf-8")
    with pytest.raises(DataError, match=r"export\.json:1: not valid JSON"):
        read_jsonl_spans(path, log=DefectLog(), lang="zh")


def test_own_jsonl_boundary_snapping_and_empty_span(tmp_path):
    path = jsonl(
        tmp_path,
        [
            {"text": "New Yorkers love pizza", "spans": [{"start": 4, "end": 8, "label": "LOC"}]},
            {"text": "a   b", "spans": [{"start": 1, "end": 3, "label": "X"}]},
            {
                "text": "Rome is old",
                "tokens": ["Rome", "is", "old"],
                "spans": [
                    {"start": 0, "end": 4, "label": "LOC"},
                    {"start": 0, "end": 4, "label": "LOC"},
                ],
            },
            {"text": "Rome is old", "tokens": ["Roma"], "spans": []},
            {"text": "   ", "spans": []},
        ],
    )
    log = DefectLog()
    sents = read_jsonl_spans(path, log=log, lang="en")
    assert sents[0].spans == [Span(1, 2, "LOC")]  # "York" inside "Yorkers": widened
    assert log.counts[D.BOUNDARY_INSIDE_TOKEN] == 1
    assert sents[1].spans == [] and log.counts[D.EMPTY_SPAN] == 1
    assert sents[2].spans == [Span(0, 1, "LOC")] and log.counts[D.DUPLICATE_SPAN] == 1
    assert sents[3].tokens == ["Rome", "is", "old"] and log.counts[D.TOKENS_MISMATCH] == 1
    assert len(sents) == 4 and log.counts[D.EMPTY_TEXT] == 1


def sample_sentences():
    return [
        Sentence(["张", "伟", "在", "北", "京"], [Span(0, 2, "PER"), Span(3, 5, "LOC")]),
        Sentence(["Apple", "sells", "iPhone", "X"], [Span(0, 1, "ORG"), Span(2, 4, "PRODUCT")]),
        Sentence(["无", "实", "体"], []),
    ]


def test_bio_round_trip(tmp_path):
    path = tmp_path / "out.bio"
    write_bio(path, sample_sentences())
    back = read_conll(path, log=DefectLog(strict=True))
    assert [(s.tokens, s.spans) for s in back] == [(s.tokens, s.spans) for s in sample_sentences()]
    with pytest.raises(DataError, match="whitespace"):
        write_bio(path, [Sentence(["a b"], [])])


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, sample_sentences(), lang="en")
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[1])
    assert first["text"] == "Apple sells iPhone X"
    assert first["spans"][1] == {
        "start": 12,
        "end": 20,
        "label": "PRODUCT",
        "token_start": 2,
        "token_end": 4,
    }
    back = read_any(path, format="jsonl", log=DefectLog(strict=True), lang="zh")
    assert [(s.tokens, s.spans) for s in back] == [(s.tokens, s.spans) for s in sample_sentences()]
    # sentences with their own text (e.g. from CLUENER) keep it
    path2 = tmp_path / "again.jsonl"
    write_jsonl(path2, back)
    again = read_jsonl_spans(path2, log=DefectLog(strict=True), lang="en")
    assert [s.text for s in again] == [s.text for s in back]
    assert [s.spans for s in again] == [s.spans for s in back]
