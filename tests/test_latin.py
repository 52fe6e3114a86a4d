"""Latin words in Chinese text are one token, in training, evaluation and prediction."""

from __future__ import annotations

from diancang.data.latin import join_latin
from diancang.data.record import Sentence, Span
from diancang.data.tokenize import tokenize
from diancang.predict import recognize
from tests.test_tagger import make_tagger, overfit


def test_tokenize_reads_latin_runs_as_words_and_keeps_offsets():
    text = "Alice moved to Paris，用iPhone8拍照 ＮＢＡ"
    tokens, offsets = tokenize(text, "zh", latin_words=True)
    assert tokens == ["Alice", "moved", "to", "Paris", "，", "用", "iPhone8", "拍", "照", "ＮＢＡ"]
    assert all(text[a:b] == t for t, (a, b) in zip(tokens, offsets, strict=True))
    assert tokenize("用iPhone", "zh")[0] == ["用", "i", "P", "h", "o", "n", "e"]  # the default


def test_join_latin_keeps_every_span_exact_and_never_joins_across_one():
    chars = list("买了iPhone8和NBA2K")
    spans = [Span(2, 8, "PRO"), Span(10, 13, "GAME")]  # "iPhone" | "8"; "NBA" | "2K"
    joined = join_latin(Sentence(chars, spans))
    assert joined.tokens == ["买", "了", "iPhone", "8", "和", "NBA", "2K"]
    assert [("".join(joined.tokens[s.start : s.end]), s.label) for s in joined.spans] == [
        ("iPhone", "PRO"),
        ("NBA", "GAME"),
    ]
    text = "ab cd"
    tokens, offsets = tokenize(text, "zh")
    spaced = join_latin(Sentence(tokens, [Span(0, 2, "X")], text=text, offsets=offsets))
    assert spaced.tokens == ["ab", "cd"] and spaced.offsets == [(0, 2), (3, 5)]


def test_a_model_with_latin_words_tags_whole_latin_names():
    names = ["Alice", "Bob", "Carol", "Dave"]
    places = ["Paris", "London", "Tokyo", "Berlin"]
    data = []
    for i in range(16):
        who, where = names[i % 4], places[(i // 4) % 4]
        text = f"{who}在{where}工作"
        spans = [Span(0, len(who), "PER"), Span(len(who) + 1, len(who) + 1 + len(where), "LOC")]
        data.append(join_latin(Sentence(list(text), spans)))
    assert data[0].tokens == ["Alice", "在", "Paris", "工", "作"]
    model = make_tagger(data, ["PER", "LOC"])
    model.spec.latin_words = True
    overfit(model, data, epochs=80)
    (result,) = recognize(model, ["Dave在Tokyo工作"])
    assert [(e["text"], e["type"]) for e in result["entities"]] == [
        ("Dave", "PER"),
        ("Tokyo", "LOC"),
    ]
