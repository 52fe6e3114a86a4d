"""The benchmark harness's pure parts: spec merging, result pages, the README table."""

from __future__ import annotations

import json

import pytest

from benchmarks.specs import BENCHMARKS, merge
from benchmarks.summarize import END, START, refresh_readme, render_benchmark
from diancang.config import build_config


def report(strategy_f1: dict[str, float]) -> dict:
    runs = []
    for strategy, f1 in strategy_f1.items():
        runs.append(
            {
                "strategy": strategy,
                "seed": 1,
                "heatmap": f"x-{strategy}-s1.png",
                "summary": {
                    "final": {"micro": f1, "macro": f1},
                    "averaged": {"micro": f1, "macro": f1},
                    "forgetting": 0.1,
                },
                "meta": {"train_seconds_per_step": [10.0, 30.0], "sentences_per_second": 5.0},
                "matrix": {
                    "step_types": [["A"], ["B"]],
                    "per_type": [{"A": 0.5}, {"A": 0.4, "B": f1}],
                    "micro": [f1, f1],
                    "macro": [f1, f1],
                },
            }
        )
    return {
        "benchmark": "x",
        "description": "d",
        "command": "c",
        "date": "t",
        "seeds": [1],
        "runs": runs,
    }


def test_merge_is_recursive_and_specs_are_valid():
    merged = merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "d": 4}
    for bench in BENCHMARKS.values():  # every spec (and its quick variant) is a valid run config
        build_config(bench.config)
        build_config(merge(bench.config, bench.quick))


def test_page_has_ratio_to_joint_and_time_relative_to_finetune():
    page = render_benchmark(report({"finetune": 0.2, "joint": 0.8}))
    row = next(line for line in page.splitlines() if line.startswith("| finetune"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:4] == ["20.0", "20.0"]  # final micro, final macro (percent)
    assert cells[6:8] == ["10.0", "–"]  # forgetting (A: 50 -> 40), never learned: none
    assert cells[8] == "0.25"  # final macro / joint
    assert cells[9] == "0.25"  # step-averaged macro / joint
    assert cells[11] == "1.00"  # s/step vs finetune


def test_readme_table_skips_other_json(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.json").write_text(json.dumps(report({"joint": 0.8})), "utf-8")
    (results / "encoder-speed.json").write_text(json.dumps({"rows": []}), "utf-8")
    # a page of its own made with new_report (benchmark and runs, but no strategy per run)
    cost = {"benchmark": "isolation-cost", "runs": [{"command": "c", "rows": []}]}
    (results / "isolation-cost.json").write_text(json.dumps(cost), "utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{START}\nold\n{END}\ntail\n", "utf-8")
    refresh_readme(results, readme)
    text = readme.read_text("utf-8")
    assert "old" not in text and text.endswith("tail\n")
    assert "| x | joint (s1) | 80.0 | 80.0 |" in text
    assert "encoder-speed" not in text and "isolation-cost" not in text


def test_benchmark_config_applies_overrides_without_touching_the_specs(tmp_path):
    from benchmarks.run import benchmark_config

    before = json.dumps(BENCHMARKS["cluener-fg2pg2"].config, sort_keys=True)
    cfg = benchmark_config("cluener-fg2pg2", True, tmp_path, ["model.keep_layers=6"])
    assert cfg["model"]["keep_layers"] == 6 and cfg["data"]["dir"] == str(tmp_path / "cluener2020")
    assert cfg["data"]["max_train"] == 3000  # the quick variant
    assert json.dumps(BENCHMARKS["cluener-fg2pg2"].config, sort_keys=True) == before
    build_config(cfg)


def test_sweep_table_has_one_row_per_value():
    from benchmarks.sweep import render

    def row(value, f1, relabelled):
        summary = {k: {"micro": f1, "macro": f1 / 2} for k in ("final", "averaged")}
        return {"value": value, "summary": summary, "meta": {}, "relabelled": relabelled}

    page = render(
        {
            "label": "x-sweep",
            "benchmark": "x",
            "strategy": "relabel_o",
            "param": "threshold",
            "score_on": "dev",
            "quick": True,
            "seed": 1,
            "command": "c",
            "date": "d",
            "rows": [row(0.9, 0.5, [0, 12]), row(1.0, 0.4, [0, 3])],
        }
    )
    assert "| 0.9 | 50.0 | 25.0 | 50.0 | 25.0 | 0, 12 |" in page
    assert "| 1.0 | 40.0 | 20.0 | 40.0 | 20.0 | 0, 3 |" in page
    assert "scored on the **dev** split" in page


def test_joint_ceiling_is_trained_once_and_scored_per_step(tmp_path):
    """``run_ceiling`` on the demo data: one single-step run, a matrix with every step."""
    from benchmarks.run import run_ceiling

    config = {
        "data": {"preset": "msra-demo", "max_train": 150, "max_test": 60},
        "stream": {"fg": 1, "pg": 1},
        "model": {"encoder": "tiny-random", "tiny_layers": 1, "tiny_hidden": 32},
        "train": {"epochs": 1, "batch_size": 16},
    }
    work = tmp_path / "bench" / "x"
    record = run_ceiling("x", config, 1, work, restart=False)
    matrix = record["matrix"]
    assert len(matrix["step_types"]) == len(matrix["micro"]) == 3  # PER, LOC, ORG one a step
    assert record["meta"]["protocol"] == "FG-1-PG-1"
    assert record["meta"]["train_sizes"] == [150]  # one training on every sentence
    shared = [p.name for p in (tmp_path / "bench").iterdir()]
    assert len([n for n in shared if n.startswith("ceiling-")]) == 1
    again = run_ceiling(
        "y", {**config, "stream": {"fg": 2, "pg": 1}}, 1, tmp_path / "bench" / "y", False
    )
    assert len(again["matrix"]["micro"]) == 2  # another protocol reuses the same model
    assert len([p for p in (tmp_path / "bench").iterdir() if p.name.startswith("ceiling-")]) == 1


def test_fewshot_arms_are_valid_runs_and_the_page_has_a_table_per_k():
    from benchmarks.fewshot import arm_config, config_for, render
    from benchmarks.specs import FEWSHOT_ARMS
    from diancang.strategies.base import build_strategies, check_heads

    for arm, (strategies, head, train) in FEWSHOT_ARMS.items():
        rc = build_config(arm_config(None, arm, 10, 2, None))
        assert rc.stream.shots == 10 and rc.stream.shot_seed == 2 and rc.model.head == head
        assert rc.types and all(getattr(rc.train, key) == v for key, v in train.items())
        check_heads(build_strategies(strategies.split("+"), {}), head)
    assert "shot_seed" not in arm_config(None, "finetune", 10, 1, None)["stream"]  # = seed
    assert "head" not in config_for(None, "linear", None)["model"]  # the ceiling's config
    row = {"final_macro": 0.5, "base_macro": 0.6, "avg_macro": 0.55, "cost": None}
    page = render(
        {
            "command": "c",
            "date": "d",
            "meta": {},
            "joint_final_macro": 0.625,
            "zero_shot": {"prompt_span": {"movie": 0.25}},
            "by_shots": {
                "10": [
                    {"arm": "finetune", "new_macro": 0.1, **row},
                    {"arm": "best", "new_macro": 0.3, **row},
                    {"arm": "distill-lr1e-5", "new_macro": 0.2, **row},
                ]
            },
        }
    )
    assert "## K = 10" in page
    best = next(line for line in page.splitlines() if line.startswith("| best"))
    assert [c.strip() for c in best.strip("|").split("|")][1:6] == [
        "50.0",
        "0.80",
        "60.0",
        "30.0",
        "3.00",
    ]
    assert "| movie | 25.0 |" in page
    assert '- arm `distill-lr1e-5` trains the few-shot steps with {"lr": 1e-05}' in page
    assert "synthetic_replay-lr1e-5" not in page  # not run, so not described


def test_fewshot_page_names_the_commit_of_each_run():
    from benchmarks.fewshot import shot_name
    from benchmarks.run import run_commits

    runs = [
        {"meta": {"git_commit": "aaa"}, "arm": "finetune", "shots": 10},
        {"meta": {"git_commit": "bbb"}, "arm": "distill", "shots": 10, "draw": 2},
        {"meta": {"git_commit": "aaa"}, "arm": "finetune", "shots": 5},
    ]
    expected = "aaa: K=10 finetune, K=5 finetune; bbb: K=10 distill draw 2"
    assert run_commits(runs, shot_name) == expected
    assert run_commits([]) == "–"


def test_page_header_names_each_runs_commit_and_the_command_without_a_trailing_space():
    from benchmarks.run import command_line, page_header

    assert command_line("benchmarks.dapt", []) == "python -m benchmarks.dapt"
    quoted = command_line("benchmarks.dapt", ["--rows", "a b"])
    assert quoted == "python -m benchmarks.dapt --rows 'a b'"
    cmd = "python -m benchmarks.dapt"
    runs = [  # the first was written by an older version, with a trailing space
        {"row": "weibo-joint-none", "command": cmd + " ", "meta": {"git_commit": "aaa"}},
        {"row": "cluener-joint-none", "command": cmd, "meta": {"git_commit": "bbb"}},
        {"arm": "der", "command": cmd, "meta": {"git_commit": "aaa"}},
    ]
    report = {"benchmark": "dapt", "date": "2026-12-07", "git_commit": "ccc", "runs": runs}
    header = page_header(report, "t", "w")
    assert header[2] == "- commands: `python -m benchmarks.dapt`"
    assert header[3] == (
        "- date: 2026-12-07; git commit of the page: ccc; of each run: "
        "aaa: weibo-joint-none, der; bbb: cluener-joint-none"
    )
    no_meta = [{"arm": "der", "command": cmd}]
    plain = page_header({**report, "runs": no_meta}, "t", "w")[3]
    assert plain == "- date: 2026-12-07; git commit: ccc"


def test_synthesis_cost_charges_each_step_its_language_model_and_generation(tmp_path):
    from benchmarks.fewshot import synthesis_cost

    history = [
        {"step": 0, "lm_seconds": 50.0},  # trained after the base step: paid by step 1
        {"step": 1, "generate_seconds": 4.0, "lm_seconds": 1.0},
        {"step": 2, "generate_seconds": 6.0, "lm_seconds": 1.0},  # the last LM serves no step
    ]
    progress = {"seconds": [300.0, 44.0, 66.0], "finished": 3}
    (tmp_path / "progress.json").write_text(json.dumps(progress), "utf-8")
    last = tmp_path / "checkpoints" / "step-2"
    last.mkdir(parents=True)
    record = {
        "step": 2,
        "strategies": [{"name": "lm", "id": "lm@1", "state": {"history": history}}],
    }
    (last / "strategies.json").write_text(json.dumps(record), "utf-8")
    cost = synthesis_cost(tmp_path)
    assert cost is not None
    assert cost["synthetic_seconds"] == 61.0  # 50 + 4 + 1 + 6
    assert cost["train_seconds"] == 100.0  # 40 + 60: the generation inside the hook taken out
    assert cost["worst"] == 54.0 / 40.0
    (tmp_path / "progress.json").write_text(json.dumps({"seconds": [3.0, 1.0], "finished": 0}))
    assert synthesis_cost(tmp_path) is None


def test_fewshot_rows_over_draws_are_means_with_the_final_sd():
    from benchmarks.fewshot import final_cell, mean_row

    def row(final: float, worst: float | None) -> dict:
        cost = {"synthetic_seconds": 1.0, "train_seconds": 1.0, "ratio": 1.0, "worst": worst}
        return {
            "arm": "a",
            "final_macro": final,
            "base_macro": 0.3,
            "new_macro": 0.1,
            "avg_macro": 0.25,
            "cost": cost if worst else None,
        }

    m = mean_row([row(0.2, 1.5), row(0.3, 2.0), row(0.25, None)])
    assert m["draws"] == 3 and m["final_macro"] == pytest.approx(0.25)
    assert m["final_macro_sd"] == pytest.approx(0.05)  # sample sd of 0.2, 0.3, 0.25
    assert m["cost"]["worst"] == 2.0  # the draw with the worst step
    assert final_cell(m) == "25.0 ± 5.0"
    assert final_cell(mean_row([row(0.2, None)])) == "20.0"


def test_type_table_sets_learning_and_forgetting_beside_joint():
    from benchmarks.run_tables import type_table
    from diancang.evaluation.matrix import ResultMatrix

    method = ResultMatrix(
        step_types=[["A"], ["B"]],
        per_type=[{"A": 0.9}, {"A": 0.5, "B": 0.6}],
        micro=[0.9, 0.55],
        macro=[0.9, 0.55],
    )
    joint = ResultMatrix(
        step_types=[["A"], ["B"]],
        per_type=[{"A": 0.95}, {"A": 0.94, "B": 0.8}],
        micro=[0.95, 0.9],
        macro=[0.95, 0.87],
    )
    lines = type_table(method, joint)
    assert lines[2] == "| A | 1 | 90.0 | 95.0 | 50.0 | 94.0 | 0.56 (< 0.8) |"
    assert lines[3] == "| B | 2 | 60.0 | 80.0 | 60.0 | 80.0 | 1.00 |"
    assert type_table(method, None)[2] == "| A | 1 | 90.0 | – | 50.0 | – | 0.56 (< 0.8) |"
    scores = [{"A": [0.95, 0.855]}, {"A": [0.4, 0.667], "B": [0.5, 0.75]}]
    lines = type_table(method, joint, scores)
    assert lines[0].endswith("| kept | P / R after its step | P / R final |")
    assert lines[1].count("---") == 9
    assert lines[2].endswith("| 0.56 (< 0.8) | 95.0 / 85.5 | 40.0 / 66.7 |")
    assert lines[3].endswith("| 1.00 | 50.0 / 75.0 | 50.0 / 75.0 |")


def test_learned_and_kept_split_the_ratio_to_joint():
    from benchmarks.summarize import learned_and_kept

    def m(per_type):
        return {
            "step_types": [["A"], ["B"]],
            "per_type": per_type,
            "micro": [0, 0],
            "macro": [0, 0],
        }

    run = m([{"A": 0.9}, {"A": 0.5, "B": 0.6}])
    joint = m([{"A": 0.95}, {"A": 0.95, "B": 0.8}])
    out = learned_and_kept(run, joint)
    assert out["learned_vs_joint"] == pytest.approx(1.5 / 1.75)  # (0.9 + 0.6) / (0.95 + 0.8)
    assert out["final_vs_learned"] == pytest.approx(1.1 / 1.5)  # (0.5 + 0.6) / (0.9 + 0.6)
    # their product is the final macro / joint's: 0.55 / 0.875
    assert out["learned_vs_joint"] * out["final_vs_learned"] == pytest.approx(0.55 / 0.875)
    assert learned_and_kept(m([{"A": 0.0}, {"A": 0.0, "B": 0.0}]), joint) == {}


def test_seed_table_gives_mean_and_sd_over_seeds():
    from benchmarks.summarize import seed_table

    one, two = report({"cpfd": 0.4, "joint": 0.8}), report({"cpfd": 0.6, "joint": 0.8})
    for run in two["runs"]:
        run["seed"] = 2
    both = {**one, "seeds": [1, 2], "runs": one["runs"] + two["runs"]}
    assert seed_table(one) == []
    row = next(line for line in seed_table(both) if line.startswith("| cpfd"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"
    assert cells[2] == "50.0 ± 14.1"  # final macro: mean of 40 and 60, sample sd
    assert cells[6] == "0.62 ± 0.18"  # / joint: 0.5 and 0.75


def test_budget_table_sets_fixed_beside_converged_against_the_converged_joint(tmp_path):
    from benchmarks.summarize import budget_table, fixed_sibling

    fixed = report({"cpfd": 0.4, "joint": 0.5})
    fixed.update(benchmark="cluener-fg2pg2", config={"train": {"epochs": 2}})
    conv = report({"cpfd": 0.6, "joint": 0.8})
    conv.update(benchmark="cluener-fg2pg2-converged", config={"train": {"patience": 2}})
    epoch = {"epoch": 1, "dev_micro": 0.5, "dev_macro": 0.5, "train_seconds": 1.0}
    conv["runs"][0]["meta"]["dev_per_epoch"] = [[epoch] * 5, [epoch] * 7]
    row = next(line for line in budget_table(conv, fixed) if line.startswith("| cpfd"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["40.0", "0.80", "0.50", "60.0", "0.75", "5, 7"]
    (tmp_path / "cluener-fg2pg2.json").write_text(json.dumps(fixed), "utf-8")
    assert fixed_sibling(tmp_path, conv) == fixed
    assert fixed_sibling(tmp_path, fixed) is None  # a fixed-budget run has no sibling
    probe = {**conv, "config": {"train": {"patience": 2}, "data": {"score_on": "dev"}}}
    assert fixed_sibling(tmp_path, probe) is None  # scored on another split
    assert "converged: epochs per step" in render_benchmark(conv, fixed)


def test_strategy_params_reach_only_the_arms_that_use_them(tmp_path):
    from benchmarks.run import arm_config, benchmark_config

    sets = ["strategy_params.exemplars.per_type=30", "train.patience=2"]
    cfg = benchmark_config("cluener-fg2pg2", True, tmp_path, sets)
    both = arm_config(cfg, "x", "cpfd+exemplars", 1, tmp_path)
    assert both["strategy_params"] == {"exemplars": {"per_type": 30}}
    alone = arm_config(cfg, "x", "cpfd", 1, tmp_path)
    assert "strategy_params" not in alone and alone["train"]["patience"] == 2
    build_config(alone)
    build_config(both)


def test_mentions_table_shows_own_share_and_hidden_old_mentions():
    from benchmarks.run_tables import mentions_table

    meta = {
        "step_mentions": [
            {"own": {"A": 8}, "share": {"A": 0.8}, "old": {}, "future": 3},
            {"own": {"B": 5}, "share": {"B": 0.5}, "old": {"A": 2}, "future": 0},
        ]
    }
    lines = mentions_table(meta)
    assert "| 1 | A 8 (80%) | 0 | 3 |" in lines
    assert "| 2 | B 5 (50%) | 2 (A 2) | 0 |" in lines
    assert mentions_table({}) == []


def test_step_cost_arms_take_their_own_strategies_and_params():
    from benchmarks.step_cost import arm_sets, render

    sets = ["strategy_params.exemplars.per_type=30", "train.lr=1e-4"]
    assert arm_sets("cpfd+exemplars", sets) == [
        "strategies=[cpfd,exemplars]",
        "train.teacher_cache_mb=4096",
        *sets,
    ]
    assert arm_sets("cpfd:live", sets) == [
        "strategies=[cpfd]",
        "train.teacher_cache_mb=0",
        "train.lr=1e-4",
    ]
    rows = [
        {"arm": a, "step2_train_seconds": s, "step2_micro": 0.5, "step2_macro": 0.4}
        for a, s in (("finetune", 50.0), ("cpfd", 60.0))
    ]
    machine = {"cpu_count": 2, "torch": "x"}
    report = {"title": "t", "command": "c", "date": "d", "git_commit": "g", "epochs": 4}
    page = render({**report, "machine": machine, "rows": rows})
    assert "| cpfd | 60.0 | 1.20 | 50.0 | 40.0 |" in page


def test_confusion_lines_name_the_largest_confusions_and_when_they_began():
    from benchmarks.run_tables import confusion_lines

    meta = {"confusion": [{}, {"book": {"game": 9}}, {"book": {"movie": 7, "game": 2}}]}
    (line, _) = confusion_lines(meta)
    assert "book as movie 7 (since step 3), book as game 2 (since step 2)" in line
    assert confusion_lines({}) == []


def test_a_page_of_a_spec_that_leaves_out_a_legacy_setting_keeps_its_runs(tmp_path):
    """conll03's spec does not state ``model.latin_words``: its page records today's default,
    so the next command keeps its runs, while a page from before the setting does not."""
    from benchmarks.run import benchmark_config, committed_runs
    from benchmarks.specs import stated

    cfg = benchmark_config("conll03-fg1pg1", False, tmp_path, ["train.patience=2"])
    assert "latin_words" not in cfg["model"]
    assert stated(cfg)["model"]["latin_words"] is True
    page = report({"finetune": 0.1, "joint": 0.8})
    page.update(command="python -m benchmarks.run first", config=stated(cfg))
    (tmp_path / "x.json").write_text(json.dumps(page), "utf-8")
    assert set(committed_runs(tmp_path, "x", cfg)) == {("finetune", 1), ("joint", 1)}
    page.update(config=cfg)  # written before latin_words existed: it read one char a token
    (tmp_path / "x.json").write_text(json.dumps(page), "utf-8")
    assert committed_runs(tmp_path, "x", cfg) == {}


def test_a_page_keeps_its_committed_runs_of_the_same_config(tmp_path):
    from benchmarks.run import benchmark_config, committed_runs

    sets = ["train.patience=2"]
    cfg = benchmark_config("cluener-fg2pg2", True, tmp_path, sets)
    old = report({"cpfd": 0.6, "joint": 0.8})
    old.update(command="python -m benchmarks.run first", config=cfg)
    (tmp_path / "x.json").write_text(json.dumps(old), "utf-8")
    # exemplars' params leave cpfd's and joint's run configs as they were: both kept
    more = benchmark_config("cluener-fg2pg2", True, tmp_path, [*sets, "strategy_params.x.y=1"])
    kept = committed_runs(tmp_path, "x", more)
    assert set(kept) == {("cpfd", 1), ("joint", 1)}
    assert kept[("cpfd", 1)]["command"] == "python -m benchmarks.run first"
    # another training setting changes every run: nothing kept
    assert not committed_runs(
        tmp_path, "x", benchmark_config("cluener-fg2pg2", True, tmp_path, ["train.patience=3"])
    )
    assert committed_runs(tmp_path, "missing", cfg) == {}
    # the page names the command of every run
    old["runs"][1]["command"] = "python -m benchmarks.run second"
    page = render_benchmark(old)
    assert "`python -m benchmarks.run first`" in page
    assert "`python -m benchmarks.run second`" in page


def test_the_product_default_is_the_best_measured_method():
    from importlib.resources import files

    import yaml

    from benchmarks.specs import BEST, BEST_PARAMS

    demo = yaml.safe_load((files("diancang") / "resources" / "demo.yaml").read_text("utf-8"))
    assert demo["strategies"] == BEST.split("+")
    assert demo.get("strategy_params", {}) == BEST_PARAMS


def test_false_positive_table_counts_each_type_after_its_step_and_at_the_end():
    from benchmarks.run_tables import false_positive_table
    from diancang.evaluation.matrix import ResultMatrix

    matrix = ResultMatrix(
        step_types=[["A"], ["B"]],
        per_type=[{"A": 0.5}, {"A": 0.6, "B": 0.6}],
        micro=[0.5, 0.6],
        macro=[0.5, 0.6],
    )
    meta = {
        "false_positives": [
            {"A": {"later type": 6, "no entity": 2}},
            {"A": {"no entity": 3}, "B": {"boundary": 1}},
        ]
    }
    lines = false_positive_table(matrix, meta)
    assert lines[4] == "| A | 1 | 8 | 6 | 0 | 0 | 0 | 2 | 3 |"
    assert lines[5] == "| B | 2 | 1 | 0 | 0 | 1 | 0 | 0 | 1 |"
    assert lines[3].count("---") == 9
    assert false_positive_table(matrix, {}) == []


def test_dapt_page_compares_each_row_with_its_row_without_and_streams_with_the_joint():
    from benchmarks.dapt import render

    def run(row: str, macro: float) -> dict:
        final = {"micro": macro, "macro": macro}
        return {"row": row, "strategy": "s", "command": "c", "summary": {"final": final}}

    rows = [
        ("weibo-joint-none", 0.4),
        ("weibo-joint-train", 0.3),
        ("cluener-joint-none", 0.7),
        ("cluener-joint-train", 0.71),
        ("cluener-fg2pg2-best", 0.56),
        ("cluener-fg2pg2-best+adapt", 0.63),
    ]
    report = {"benchmark": "dapt", "date": "d", "git_commit": "c"}
    page = render({**report, "runs": [run(r, m) for r, m in rows]})
    cells = {ln.split(" | ")[0][2:]: ln.split(" | ")[4:6] for ln in page.splitlines()[7:]}
    assert cells["weibo-joint-none"] == ["–", "–"]
    assert cells["weibo-joint-train"] == ["-10.0", "–"]
    assert cells["cluener-joint-train"] == ["+1.0", "–"]
    assert cells["cluener-fg2pg2-best"] == ["–", "0.80"]
    assert cells["cluener-fg2pg2-best+adapt"] == ["+7.0", "0.90"]


def test_dapt_keeps_finished_rows_without_pretraining_and_saves_after_each_row(
    tmp_path, monkeypatch
):
    import benchmarks.dapt as dapt
    import benchmarks.run as run

    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(dapt, "RESULTS", tmp_path / "results")
    work = tmp_path / "work"
    table = dapt.rows(tmp_path, True, work)
    kept_row = "weibo-joint-train"  # needs a pre-trained encoder; finished in an earlier session
    _, cfg, _ = table[kept_row]
    encoder = str(dapt.encoder_dir("train", "weibo", True, work))
    cfg = dapt.merge(cfg, {"model": {"encoder": encoder}})
    final = {"micro": 0.5, "macro": 0.4}
    old = {
        "row": kept_row,
        "strategy": "finetune",
        "seed": 1,
        "config": cfg,
        "command": "x",
        "pretrain": None,
        "summary": {"final": final},
        "meta": {},
    }
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "dapt-quick.json").write_text(json.dumps({"runs": [old]}), "utf-8")

    def no_pretraining(*args):
        raise AssertionError("a kept row must not pre-train its encoder")

    ran = []

    def fake_run(name, config, strategy, seed, out, restart):
        ran.append(name)
        if len(ran) == 2:
            raise KeyboardInterrupt  # the session ends during the second new row
        return {"summary": {"final": {"micro": 0.6, "macro": 0.5}}, "meta": {}}

    monkeypatch.setattr(dapt, "pretrained", no_pretraining)
    monkeypatch.setattr(dapt, "run_one", fake_run)
    rows = f"{kept_row},weibo-joint-none,cluener-joint-none"
    with pytest.raises(KeyboardInterrupt):
        dapt.main(["--quick", "--rows", rows, "--data-dir", str(tmp_path), "--work", str(work)])
    assert ran == ["dapt-quick-weibo-joint-none", "dapt-quick-cluener-joint-none"]
    saved = json.loads((tmp_path / "results" / "dapt-quick.json").read_text("utf-8"))
    assert [r["row"] for r in saved["runs"]] == ["weibo-joint-none", kept_row]


def test_dapt_trains_the_unlabeled_encoder_once_for_both_datasets(tmp_path):
    import benchmarks.dapt as dapt

    shared = {dapt.encoder_dir("unlabeled", d, False, tmp_path) for d in dapt.DATASETS}
    own = {dapt.encoder_dir("train", d, False, tmp_path) for d in dapt.DATASETS}
    assert len(shared) == 1 and len(own) == len(dapt.DATASETS)
    assert dapt.sources("unlabeled", "weibo", tmp_path) == dapt.sources(
        "unlabeled", "cluener", tmp_path
    )


def test_a_benchmark_command_writes_its_page_after_every_run(tmp_path, monkeypatch):
    import benchmarks.run as run

    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "refresh_readme", lambda results, readme: None)
    fake = report({"finetune": 0.2})["runs"][0]
    ran = []

    def fake_run(label, config, strategy, seed, work, restart):
        ran.append(strategy)
        if strategy == "cpfd":
            raise KeyboardInterrupt  # the session ends during the second run
        (tmp_path / "h.png").write_bytes(b"png")
        return {**fake, "strategy": strategy, "heatmap_src": str(tmp_path / "h.png")}

    monkeypatch.setattr(run, "run_one", fake_run)
    argv = ["cluener-fg2pg2", "--quick", "--data-dir", str(tmp_path), "--work", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        run.main([*argv, "--strategies", "finetune,cpfd"])
    saved = json.loads((tmp_path / "cluener-fg2pg2-quick.json").read_text("utf-8"))
    assert [r["strategy"] for r in saved["runs"]] == ["finetune"]
    assert (tmp_path / "cluener-fg2pg2-quick-finetune-s1.png").read_bytes() == b"png"
    # the same command again keeps the finished run and runs only the other
    ran.clear()
    with pytest.raises(KeyboardInterrupt):
        run.main([*argv, "--strategies", "finetune,cpfd"])
    assert ran == ["cpfd"]


def test_transfer_page_gives_the_gain_over_alone_the_cost_per_epoch_and_a_plot(tmp_path):
    import benchmarks.transfer as transfer

    def run(arm: str, seed: int, micro: float, seconds: float, epochs: int) -> dict:
        return {
            "arm": arm,
            "budget": "300",
            "seed": seed,
            "command": "python -m benchmarks.transfer",
            "summary": {"final": {"micro": micro, "macro": micro / 2}},
            "meta": {"train_seconds_per_step": [seconds], "dev_per_epoch": [[{}] * epochs]},
            "discriminator_balanced": 0.55 if arm.endswith("adversarial") else None,
        }

    runs = [
        run("alone", 1, 0.30, 300.0, 30),  # 10 s an epoch
        run("alone", 2, 0.34, 200.0, 20),
        run("cws-adversarial", 1, 0.40, 300.0, 20),  # 15 s an epoch: 1.5 x alone
    ]
    report = {"benchmark": "transfer-weibo", "date": "d", "git_commit": "c", "runs": runs}
    page = transfer.render(report)
    assert "| alone | 2 | 32.0 ± 2.8 | 16.0 ± 1.4 | +0.0 | 1.00 | 30/20 | – |" in page
    assert "| cws-adversarial | 1 | 40.0 | 20.0 | +8.0 | 1.50 | 20 | 0.55 |" in page
    # a run whose cores were shared counts for F1, not for the cost
    report["runs"] = [*runs, {**run("cws-adversarial", 2, 0.44, 900.0, 20), "timing_void": "x"}]
    page = transfer.render(report)
    assert "| cws-adversarial | 2 | 42.0 ± 2.8 | 21.0 ± 1.4 | +10.0 | 1.50 | 20/20 | 0.55 |" in page
    report["runs"] = runs
    # a run that went on from a killed process's epoch state is timed in two processes
    assert not transfer.resumed(runs[0]["meta"])
    assert transfer.resumed({"dev_per_epoch": [[{"epoch": 1, "resumed_after": True}, {}]]})
    assert "## 300 training sentences, up to 30 epochs" in page
    assert "1,350" not in page  # no run at the full budget: no section
    transfer.plot(report, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert not transfer.plot_discriminator(report, tmp_path / "d.png")  # none recorded epochs
    runs[2]["discriminator_by_epoch"] = [0.7, 0.6, 0.55]
    assert transfer.plot_discriminator(report, tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_the_confusion_arm_is_adversarial_sharing_and_leaves_the_reversal_arm_as_it_was(tmp_path):
    import benchmarks.transfer as transfer

    table = transfer.arms(tmp_path, quick=False)
    reverse = table["msr_cws-adversarial"][1]["strategy_params"]["multitask"]
    confusion = table["msr_cws-confusion"][1]["strategy_params"]["multitask"]
    assert "adversary" not in reverse  # the config of the runs already kept
    assert {k: v for k, v in confusion.items() if k != "adversary"} == reverse
    assert confusion["adversary"] == "confusion" and reverse["sharing"] == "adversarial"


def test_the_confusion_weight_probes_differ_only_in_the_weight_and_run_only_by_name(tmp_path):
    import benchmarks.transfer as transfer

    table = transfer.arms(tmp_path, quick=False)
    confusion = table["msr_cws-confusion"][1]["strategy_params"]["multitask"]
    probe = table["msr_cws-confusion-w0.5"][1]["strategy_params"]["multitask"]
    assert probe == {**confusion, "adversarial_weight": 0.5}
    default = transfer.default_arms(table)
    assert "msr_cws-confusion" in default and "msr_cws-confusion-w0.5" not in default
    assert not [a for a in default if "-w0." in a] and len(default) == len(table) - 6


def test_transfer_budgets_keep_the_configs_of_kept_runs_and_300_long_lifts_the_cap(tmp_path):
    import benchmarks.transfer as transfer
    from benchmarks.specs import merge

    base = transfer.base_config(tmp_path, quick=False)
    assert merge(base, transfer.BUDGETS["full"][0])["data"]["max_train"] is None
    assert merge(base, transfer.BUDGETS["300"][0])["train"] == base["train"]
    long = merge(base, transfer.BUDGETS["300-long"][0])
    assert long["data"]["max_train"] == 300
    assert (long["train"]["epochs"], long["train"]["patience"]) == (100, 5)
    with pytest.raises(SystemExit, match="unknown 3000; choose from full, 300, 300-long"):
        transfer.main(["--budgets", "3000", "--data-dir", str(tmp_path)])


def test_isolation_page_sets_both_settings_beside_the_committed_runs_and_judges_the_goals(
    tmp_path, monkeypatch
):
    from benchmarks import isolation

    def version(step, seen, til, speed, branches):
        macro = sum(til.values()) / len(til)
        return {
            "step": step,
            "seen": seen,
            "til_per_type": til,
            "til_macro": macro,
            "sentences_per_second": speed,
            "branches": branches,
            "tasks": 0,
        }

    der = {
        "arm": "der",
        "strategy": "exemplars+der",
        "command": "python -m benchmarks.isolation",
        "summary": {"final": {"macro": 0.6}, "forgetting": 0.05},
        "matrix": {"per_type": [{"book": 0.7}, {"book": 0.5, "game": 0.7}]},
        "single_sentences_per_second": 100.0,
        "versions": [
            version(0, ["book"], {"book": 0.8}, 90.0, 1),
            version(1, ["book", "game"], {"book": 0.7, "game": 0.7}, 50.0, 2),
        ],
    }
    page_runs = [
        {
            "strategy": s,
            "seed": 1,
            "summary": {"final": {"macro": m}, "forgetting": f},
            "matrix": {"per_type": [{"book": m, "game": m}]},
        }
        for s, m, f in (("cpfd+exemplars", 0.55, 0.02), ("joint", 0.7, 0.0), ("cpfd", 0.4, 0.1))
    ]
    monkeypatch.setattr(isolation, "RESULTS", tmp_path)
    (tmp_path / "cluener-fg2pg2-converged.json").write_text(json.dumps({"runs": page_runs}))
    beside = isolation.beside("cluener-fg2pg2", 1)
    assert [b["strategy"] for b in beside] == ["cpfd+exemplars", "joint"]
    assert isolation.beside("conll03-fg1pg1", 1) == []  # no committed page: nothing beside
    assert isolation.label_of("cluener-fg2pg2", False) == "isolation"
    assert isolation.label_of("conll03-fg1pg1", True) == "isolation-conll03-fg1pg1-quick"
    # task-incremental forgetting: book 80 right after its step, 70 at the end
    assert isolation.til_matrix(der["versions"]).forgetting() == pytest.approx(0.1)
    report = {
        "benchmark": "isolation",
        "date": "t",
        "git_commit": "abc",
        "machine": {"cpu_count": 2},
        "bench": "cluener-fg2pg2",
        "beside": beside,
        "runs": [der],
    }
    page = isolation.render(report, "x.png")
    row = next(line for line in page.splitlines() if line.startswith("| der"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # class-inc. 60.0 (0.86 of joint), forgetting 5.0; task-inc. 70.0 (1.00), forgetting 10.0;
    # book and game at the end; 2 branches; 100 / 50 sentences/s: 2 x one model's time
    assert cells[1:] == [
        "60.0",
        "0.86",
        "5.0",
        "70.0",
        "1.00",
        "10.0",
        "50.0",
        "70.0",
        "2 branches",
        "2.00",
    ]
    assert "| joint (results/cluener-fg2pg2-converged.json) | 70.0 | 1.00 |" in page
    goal = next(line for line in page.splitlines() if line.startswith("- der:"))
    assert "task-incremental 1.00 x joint (goal 0.95) without zero forgetting: not met" in goal
    assert "class-incremental 60.0 against cpfd+exemplars's 55.0: met" in goal
    assert "2.00 x one model's at 2 steps" in goal and "goal 2 x at 10" not in goal
    assert "Merging the tasks' claims" not in page  # no arbiter: no such table
    der["merging"] = {"arbiter": {"book": 0.6, "game": 0.8}, "rule": {"book": 0.4, "game": 0.8}}
    page = isolation.render(report, "x.png")
    assert "| der | arbiter | 70.0 | 60.0 | 80.0 |" in page
    assert "| der | rule | 60.0 | 40.0 | 80.0 |" in page


def test_a_run_of_a_strategy_revised_since_is_stale():
    from benchmarks.run import stale_strategies
    from diancang.strategies.base import strategies

    now = strategies.entry("ctr").version
    assert stale_strategies({"meta": {"strategies": ["exemplars@3", f"ctr@{now}"]}}) == []
    assert stale_strategies({"meta": {"strategies": [f"ctr@{now - 1}"]}}) == [f"ctr@{now - 1}"]
    assert stale_strategies({"meta": {}}) == []  # no versions recorded: nothing to tell


def test_isolation_arms_are_valid_runs(tmp_path):
    from benchmarks.isolation import ARMS, BENCHES
    from benchmarks.run import arm_config

    for bench in BENCHES:
        for arm, (strategy, overrides) in ARMS.items():
            config = merge(BENCHMARKS[bench].config, overrides)
            run = build_config(arm_config(config, arm, strategy, 1, tmp_path))
            assert run.strategies == strategy.split("+")
