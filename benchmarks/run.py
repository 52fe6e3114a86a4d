"""Run a benchmark: ``python -m benchmarks.run NAME [--quick] [--data-dir DIR] [--seeds 1,2]``.

Each (strategy, seed) runs as its own ``diancang run`` process (so its peak memory is its own and
a killed benchmark resumes where it stopped when the same command is run again). Writes
``benchmarks/results/<name>[-quick].json`` and ``.md``, a heatmap per strategy, and refreshes the
table in ``benchmarks/README.md``, after every run.

A page grows over several commands (and sessions): the runs already in
``results/<label>.json`` (committed, or written by an earlier command) whose run config equals
this command's are kept and not run again (``--restart`` runs them again), so ``--strategies rdp
--seeds 2`` adds one row to the page.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.specs import BENCHMARKS, COMPARED, LEGACY, merge, stated
from benchmarks.summarize import fixed_sibling, refresh_readme, render_benchmark
from diancang.config import parse_overrides, set_dotted
from diancang.data.presets import default_data_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def benchmark_config(
    name: str, quick: bool, data_dir: Path | None, sets: list[str]
) -> dict[str, Any]:
    """The run config of benchmark ``name`` (its quick variant if asked), reading data from
    ``data_dir`` (default: ../shared/data when it exists), with dotted ``sets`` applied."""
    bench = BENCHMARKS[name]
    config = merge(bench.config, bench.quick) if quick else dict(bench.config)
    data_dir = data_dir or default_data_dir()
    preset = config["data"]["preset"]
    if data_dir is not None and not preset.startswith("msra") and preset != "demo":
        config = merge(config, {"data": {"dir": str(data_dir / preset)}})
    config = copy.deepcopy(config)  # the specs' dicts are shared constants
    for key, value in parse_overrides(sets):
        set_dotted(config, key, value)
    return config


def new_report(label: str, runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A results report: the benchmark's label, date, git commit, ``extra`` and the runs."""
    from diancang.provenance import git_commit

    date = datetime.now(UTC).isoformat(timespec="seconds")
    return {"benchmark": label, "date": date, "git_commit": git_commit(), **extra, "runs": runs}


def command_line(module: str, argv: list[str]) -> str:
    """``"python -m benchmarks.dapt --rows a"``: the command that ran ``module`` with ``argv``."""
    return " ".join([f"python -m {module}", *(shlex.quote(a) for a in argv)])


def stale_strategies(run: dict[str, Any]) -> list[str]:
    """The ``name@version`` strategies a run ran that the registry has revised since (a kept
    run of them measures code that is gone)."""
    from diancang.strategies.base import strategies

    out = []
    for item in run.get("meta", {}).get("strategies", []):
        name, _, version = str(item).partition("@")
        if version and strategies.entry(name).version != int(version):
            out.append(str(item))
    return out


def run_name(run: dict[str, Any]) -> str:
    """A run's name on a page: its row, arm or strategy."""
    return str(run.get("row") or run.get("arm") or run.get("strategy") or "?")


def run_commits(
    runs: list[dict[str, Any]], name: Callable[[dict[str, Any]], str] = run_name
) -> str:
    """``"abc123: row-a, row-b; def456: row-c"``: the commit each run ran at (finished runs are
    reused, so one page may span commits); ``"–"`` when no run names its commit."""
    by_commit: dict[str, list[str]] = {}
    for r in runs:
        commit = r.get("meta", {}).get("git_commit")
        if commit:
            by_commit.setdefault(str(commit), []).append(name(r))
    return "; ".join(f"{c}: {', '.join(names)}" for c, names in by_commit.items()) or "–"


def page_header(report: dict[str, Any], title: str, what: str) -> list[str]:
    """The first lines of a results page: title, commands, date and commits, what is measured."""
    commands = ", ".join(sorted({f"`{r['command'].strip()}`" for r in report["runs"]}))
    commits = run_commits(report["runs"])
    commit = f"git commit: {report['git_commit']}"
    if commits != "–":
        commit = f"git commit of the page: {report['git_commit']}; of each run: {commits}"
    return [
        f"# {report['benchmark']}: {title}",
        "",
        f"- commands: {commands}",
        f"- date: {report['date']}; {commit}",
        f"- {what}",
        "",
    ]


def save_result(label: str, report: dict[str, Any] | list[Any], page: str) -> None:
    """Write ``results/<label>.json`` (the report) and ``results/<label>.md`` (its page)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{label}.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=1, default=str) + "\n", "utf-8"
    )
    (RESULTS / f"{label}.md").write_text(page, "utf-8")


def arm_config(
    config: dict[str, Any], name: str, strategy: str, seed: int, out: Path
) -> dict[str, Any]:
    """The run config of one arm (``a+b`` composes strategies): ``strategy_params`` given for
    the whole benchmark apply to the arms that use their strategy."""
    arm = strategy.split("+")
    cfg = merge(
        config,
        {
            "name": name,
            "output_dir": str(out),
            "seed": seed,
            "strategies": arm,
            "train": {"progress": False},
        },
    )
    params = {k: v for k, v in cfg.pop("strategy_params", {}).items() if k in arm}
    return {**cfg, "strategy_params": params} if params else cfg


def committed_runs(
    results: Path, label: str, config: dict[str, Any]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs already in ``results/<label>.json`` that this benchmark config would run
    the same way (equal :func:`arm_config`), keyed by (strategy, seed); each names the command
    that ran it. Runs with another config are left out, with a line saying so."""
    path = results / f"{label}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text("utf-8"))
    kept = {}
    for run in old.get("runs", []):
        key = (run["strategy"], run["seed"])
        then = merge(LEGACY, old["config"])  # settings added since took their legacy value
        same = arm_config(then, label, *key, Path(".")) == arm_config(
            stated(config), label, *key, Path(".")
        )
        if same:
            kept[key] = {"command": old["command"], **run}
        else:
            print(f"[{label}] {key[0]} seed {key[1]} in {path.name}: another config, not kept")
    return kept


def run_one(
    name: str, config: dict[str, Any], strategy: str, seed: int, work: Path, restart: bool
) -> dict[str, Any]:
    """One ``diancang run`` in a subprocess; returns its results.json (meta, summary, matrix)."""
    out = work / f"{strategy}-s{seed}"
    cfg = arm_config(config, name, strategy, seed, out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "benchmark-config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), "utf-8")
    cmd = [sys.executable, "-m", "diancang.cli", "run", str(cfg_path), "--quiet"]
    if restart:
        cmd.append("--restart")
    print(f"[{name}] {strategy} seed {seed}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"[{name}] {strategy} seed {seed} failed (exit {proc.returncode})")
    record: dict[str, Any] = json.loads((out / "results.json").read_text("utf-8"))
    record.update(strategy=strategy, seed=seed, heatmap_src=str(out / "heatmap.png"))
    return record


def run_ceiling(
    name: str, config: dict[str, Any], seed: int, work: Path, restart: bool
) -> dict[str, Any]:
    """``joint`` as the ceiling: one model trained once on all training data with every type (a
    single-step ``diancang run``), then scored after each step of this benchmark's stream on the
    types seen by then (:func:`diancang.learn.evaluate.score_stream`).

    The trained model depends only on data, model and training settings, so benchmarks that
    differ in their stream alone (FG-2-PG-2 and FG-1-PG-1 of one dataset) share it.
    """
    from diancang.config import build_config
    from diancang.evaluation.report import render_heatmap
    from diancang.learn.evaluate import score_stream
    from diancang.model.tagger import Tagger
    from diancang.pipeline import load_data, make_stream

    rc = build_config({**config, "seed": seed})
    splits = load_data(rc)
    sc = rc.stream
    stream = make_stream(rc, splits)
    once = merge(config, {"stream": {"order": stream.order, "fg": len(stream.order), "pg": 1}})
    once["stream"].pop("shots", None)  # one step: nothing to subsample
    shared = {k: once[k] for k in ("data", "stream", "model", "train")}
    key = hashlib.sha1(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:10]
    record = run_one(
        f"ceiling-{key}", shared, "joint", seed, work.parent / f"ceiling-{key}", restart
    )
    run_dir = Path(record["heatmap_src"]).parent
    model = Tagger.from_pretrained(run_dir / "model")
    matrix = score_stream(model, stream, rc.train.eval_batch_size)
    heatmap = work / f"joint-s{seed}-ceiling.png"
    work.mkdir(parents=True, exist_ok=True)
    render_heatmap(matrix, heatmap, title=f"{name}: joint (trained once on all data)")
    record["meta"].update(
        protocol=f"FG-{sc.fg}-PG-{sc.pg}",
        type_order=stream.order,
        joint_trained_once=str(run_dir),
    )
    record.update(matrix=matrix.to_dict(), summary=matrix.summary(), heatmap_src=str(heatmap))
    return record


def write_page(
    label: str,
    description: str,
    command: str,
    quick: bool,
    config: dict[str, Any],
    strategies: list[str],
    done: dict[tuple[str, int], dict[str, Any]],
) -> None:
    """Write ``results/<label>.json`` and ``.md`` of the runs in ``done`` (kept and new; a new
    run's heatmap is copied beside them) and refresh the table in ``benchmarks/README.md``."""
    order = list(dict.fromkeys([s for s, _ in done] + strategies))
    runs = sorted(done.values(), key=lambda r: (order.index(r["strategy"]), r["seed"]))
    report = {
        "benchmark": label,
        "description": description,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "config": stated(config),
        "strategies": order,
        "seeds": sorted({r["seed"] for r in runs}),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if "heatmap_src" in run:  # a run of this command (kept ones have their image)
            target = RESULTS / f"{label}-{run['strategy']}-s{run['seed']}.png"
            target.write_bytes(Path(run.pop("heatmap_src")).read_bytes())
            run["heatmap"] = target.name
    save_result(label, report, render_benchmark(report, fixed_sibling(RESULTS, report)))
    refresh_readme(RESULTS, ROOT / "benchmarks" / "README.md")
    print(f"wrote {RESULTS / (label + '.md')}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("--quick", action="store_true", help="fewer epochs, fixed subsample (minutes)")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets folder (../shared/data)")
    p.add_argument("--strategies", default=None, help="comma list (default: the benchmark's)")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run the continual strategies of specs.COMPARED (finished runs are reused)",
    )
    p.add_argument("--seeds", default="1", help="comma list of seeds (default: 1)")
    p.add_argument("--restart", action="store_true", help="ignore finished runs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override for every run (e.g. model.keep_layers=6); repeatable",
    )
    p.add_argument("--tag", default="", help="suffix of the result name (with --set)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)

    bench = BENCHMARKS[args.name]
    config = benchmark_config(args.name, args.quick, args.data_dir, args.set)
    label = args.name + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    strategies = args.strategies.split(",") if args.strategies else list(bench.strategies)
    if args.compare:
        strategies += [s for s in COMPARED if s not in strategies]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.work / label

    argv_used = argv if argv is not None else sys.argv[1:]
    command = command_line("benchmarks.run", argv_used)
    done = {} if args.restart else committed_runs(RESULTS, label, config)
    ran = False
    for s in strategies:
        for seed in seeds:
            if (s, seed) in done:
                print(f"[{label}] {s} seed {seed}: kept from results/{label}.json")
                continue
            run = (
                run_ceiling(label, config, seed, work, args.restart)
                if s == "joint" and bench.ceiling
                else run_one(label, config, s, seed, work, args.restart)
            )
            done[(s, seed)] = {"command": command, **run}
            ran = True
            # after every run: a session that ends mid-command keeps the runs it finished
            write_page(label, bench.description, command, args.quick, config, strategies, done)
    if not ran:  # every run was kept: the page is re-rendered
        write_page(label, bench.description, command, args.quick, config, strategies, done)


if __name__ == "__main__":
    main()
