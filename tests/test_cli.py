"""The command line through typer's runner: run, predict, eval, data stats, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from diancang.cli import app
from tests.conftest import shared_data

runner = CliRunner()

TINY = [
    "model.encoder=tiny-random",
    "model.keep_layers=null",
    "model.trim_vocab=false",
    "data.max_train=null",
    "data.max_test=null",
    "data.preset=demo",
    "stream.fg=2",
    "stream.pg=1",
    "train.epochs=8",
    "train.batch_size=8",
    "train.head_lr=0.003",
    "train.lr=0.001",
    "train.progress=false",
    "model.tiny_hidden=64",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(
        app, ["run", "--quiet", "--compare", "", "--", *TINY, f"output_dir={out}"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_results_model_and_config(demo_run):
    for name in ("results.json", "results.md", "heatmap.png", "config.yaml", "stream.json"):
        assert (demo_run / name).is_file(), name
    assert (demo_run / "model" / "model.safetensors").is_file()
    saved = json.loads((demo_run / "model" / "config.json").read_text("utf-8"))
    assert saved["run_config"]["train"]["epochs"] == 8
    assert saved["id2label"]["0"] == "O"
    results = json.loads((demo_run / "results.json").read_text("utf-8"))
    assert results["meta"]["matmul_gflops"] > 0  # the host's speed, to compare seconds across hosts
    assert len(results["matrix"]["micro"]) == len(saved["types"]) - 1  # FG-2-PG-1
    # per step, precision and recall of every type seen so far, beside its F1
    pr, per_type = results["meta"]["precision_recall"], results["matrix"]["per_type"]
    assert [set(step) for step in pr] == [set(step) for step in per_type]
    for step_pr, step_f1 in zip(pr, per_type, strict=True):
        for t, (p, r) in step_pr.items():
            assert step_f1[t] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-3)
    # and where each type's false positives land in the hidden full gold
    # (every false positive of a step's scoring, predicted minus correct, is sorted once)
    fps = results["meta"]["false_positives"]
    scored = json.loads((demo_run / "progress.json").read_text("utf-8"))["results"]
    assert len(fps) == len(scored)
    for step_fps, step in zip(fps, scored, strict=True):
        for t, s in step["per_type"].items():
            assert sum(step_fps.get(t, {}).values()) == s["predicted"] - s["correct"]


def test_without_a_terminal_a_run_logs_each_epoch_and_the_scoring(tmp_path, caplog):
    args = [*TINY, "train.epochs=2", "stream.max_steps=2", f"output_dir={tmp_path / 'r'}"]
    with caplog.at_level("INFO", logger="diancang"):
        result = runner.invoke(app, ["run", "--compare", "", "--", *args])
    assert result.exit_code == 0, result.output
    lines = caplog.messages
    assert any(m.startswith("step 1/2 epoch 1/2: mean loss") for m in lines), lines
    assert any(m.startswith("step 2/2 epoch 2/2: mean loss") for m in lines), lines
    assert "step 2/2: scoring test: 10 sentences" in lines
    assert any(m.startswith("step 2/2: micro") and "%" in m for m in lines)


def test_predict_json_chinese_and_english(demo_run):
    result = runner.invoke(
        app, ["predict", str(demo_run / "model"), "张三在北京工作", "Alice flew to Paris"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert [x["text"] for x in lines] == ["张三在北京工作", "Alice flew to Paris"]
    for line in lines:
        for ent in line["entities"]:
            assert line["text"][ent["start"] : ent["end"]] == ent["text"]
            assert 0.0 <= ent["score"] <= 1.0
    model = str(demo_run / "model")
    types = json.loads((demo_run / "model" / "config.json").read_text())["types"]
    result = runner.invoke(app, ["predict", model, "张三在北京工作", "--types", types[0]])
    assert result.exit_code == 0, result.output
    assert {e["type"] for e in json.loads(result.output)["entities"]} <= {types[0]}
    result = runner.invoke(app, ["predict", model, "张三", "--types", "NOPE"])
    assert result.exit_code != 0 and "unknown types ['NOPE']" in result.output


def test_eval_prints_scores(demo_run):
    result = runner.invoke(app, ["eval", str(demo_run / "model"), "--data", "demo"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) >= {"f1", "macro_f1", "per_type"}


def test_strategies_lists_baselines_each_description_whole():
    result = runner.invoke(app, ["strategies"])
    assert result.exit_code == 0
    assert "finetune" in result.output and "joint" in result.output
    for line in result.output.strip().splitlines():
        assert line.rstrip().endswith((".", ")")), f"cut mid-sentence: {line}"


def test_a_first_override_with_a_slash_is_an_override_not_a_config(tmp_path):
    result = runner.invoke(app, ["run", f"output_dir={tmp_path}/x", "train.epochz=1"])
    assert result.exit_code == 2 and "train.epochz" in result.output  # read as an override


def test_serve_refuses_a_file_or_a_missing_archive_before_serving(tmp_path):
    afile = tmp_path / "archive.txt"
    afile.write_text("not an archive", "utf-8")
    result = runner.invoke(app, ["serve", "--archive", str(afile)])
    assert result.exit_code == 2 and "no archive here (it is a file)" in result.output
    missing = tmp_path / "typo"
    result = runner.invoke(app, ["serve", "--archive", str(missing)])
    assert result.exit_code == 2 and "--create" in result.output
    assert "serving" not in result.output and not missing.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("train: [unclosed", "YAML syntax error"),
        ("train:\n  epochz: 2\n", "train.epochz"),
        ("strategies: [nope]\n", "unknown strategy 'nope'"),
        ("- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_config_is_one_paragraph(tmp_path, content, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content, "utf-8")
    result = runner.invoke(app, ["run", str(cfg), f"output_dir={tmp_path / 'o'}"])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") <= 2


def test_bad_override_and_bad_data_file(tmp_path):
    result = runner.invoke(app, ["run", "--", "train.epochs=-1"])
    assert result.exit_code == 2 and "train.epochs" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "abc", "label": {"X": {"ab": [[0, 1]]}}}\n{not json\n', "utf-8")
    result = runner.invoke(app, ["data", "stats", str(bad), "--format", "cluener", "--strict"])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "Traceback" not in result.output


def test_predict_missing_model_is_clear(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "nothing"), "文本"])
    assert result.exit_code == 2 and "config.json" in result.output


def test_data_stats_on_a_real_dataset():
    data = shared_data()
    result = runner.invoke(app, ["data", "stats", str(data / "weibo_ner"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    train = stats["splits"]["train"]
    assert (train["sentences"], train["mentions"]) == (1350, 1895)
    assert train["duplicate_sentences"] == 101
    result = runner.invoke(app, ["data", "stats", str(data / "weibo_ner")])
    assert result.exit_code == 0 and "1350" in result.output.replace(",", "")


def _column_file(path, sentences):
    lines = []
    for words, tags in sentences:
        lines += [f"{w} {t}" for w, t in zip(words, tags, strict=True)] + [""]
    path.write_text("\n".join(lines), "utf-8")


EN = [(["John", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"])] * 3
ZH = [(list("张三在北京工作"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"])] * 3


def test_data_stats_reads_a_folder_or_files_whole_and_guesses_the_language(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    _column_file(folder / "train.char", EN)
    _column_file(folder / "test.char", EN[:1])
    result = runner.invoke(app, ["data", "stats", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["name"] == "mydata" and stats["lang"] == "en"  # not "train", not "zh"
    assert list(stats["splits"]) == ["train", "test"]  # no dev cut out of train
    assert stats["splits"]["train"]["sentences"] == 3
    # one file, read whole; --dev beside it; a Chinese file is guessed Chinese
    _column_file(tmp_path / "zh.txt", ZH)
    _column_file(tmp_path / "zh-dev.txt", ZH[:2])
    args = ["data", "stats", str(tmp_path / "zh.txt"), "--dev", str(tmp_path / "zh-dev.txt")]
    stats = json.loads(runner.invoke(app, [*args, "--json"]).output)
    assert stats["lang"] == "zh" and stats["splits"]["train"]["sentences"] == 3
    assert stats["splits"]["dev"]["sentences"] == 2
    # a given --lang is kept, and the scheme is an option
    result = runner.invoke(app, ["data", "stats", str(folder), "--lang", "zh", "--scheme", "bio"])
    assert result.exit_code == 0 and "# Dataset mydata (zh)" in result.output


def test_data_stats_says_which_files_are_ambiguous_and_counts_long_sentences(tmp_path):
    _column_file(tmp_path / "a.train", ZH)
    _column_file(tmp_path / "b.train", ZH)
    result = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert result.exit_code == 2 and "a.train, b.train" in result.output
    assert "--dev" in result.output and "Traceback" not in result.output
    long = (list("的" * 10 + "张三在北京工作"), ["O"] * 10 + ZH[0][1])
    _column_file(tmp_path / "long.txt", [long, ZH[0]])
    args = ["data", "stats", str(tmp_path / "long.txt"), "--max-length", "12", "--json"]
    stats = json.loads(runner.invoke(app, args).output)
    assert stats["long_sentences"]["splits"]["train"] == {
        "sentences": 1,
        "mentions": 2,
        "mentions_past_first_window": 2,  # characters 11-12 and 14-15 against 10 places
    }


def test_every_shipped_config_is_valid():
    from pathlib import Path

    from diancang.config import load_as, load_config
    from diancang.pretrain.config import PretrainConfig
    from diancang.strategies.base import build_strategies

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        if path.name.startswith("pretrain-"):  # `diancang pretrain` configs
            assert load_as(PretrainConfig, path).texts
            continue
        cfg = load_config(path)
        build_strategies(cfg.strategies, cfg.strategy_params)  # names and parameters exist
