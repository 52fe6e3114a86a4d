"""Sweep one strategy hyperparameter on a benchmark, scored on **dev** (tuning never looks at
the test split)::

    python -m benchmarks.sweep cluener-fg2pg2 --strategy relabel_o --param threshold \\
        --values 0.9,0.92,0.94,0.96,0.98,1.0 [--quick] [--set KEY=VALUE ...]

Each value is one ``diancang run`` (resumable, under ``runs/bench/<label>/``). Writes
``benchmarks/results/<label>.json`` and ``.md`` with one row per value: final and step-averaged
micro/macro dev F1, and, for ``relabel_o``, the O words relabelled at each step.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.run import ROOT, benchmark_config, command_line, run_one, save_result
from benchmarks.specs import BENCHMARKS
from diancang.config import set_dotted
from diancang.evaluation.report import markdown_table
from diancang.learn.version import run_states


def sweep_table(report: dict[str, Any]) -> list[str]:
    """The Markdown table: one row per value (F1 in percent)."""
    rows = []
    for row in report["rows"]:
        s = row["summary"]
        cells = [
            str(row["value"]),
            *(f"{100 * s[k][m]:.1f}" for k in ("final", "averaged") for m in ("micro", "macro")),
            ", ".join(str(n) for n in row.get("relabelled", [])) or "–",
        ]
        rows.append(cells)
    header = [report["param"], "final micro", "final macro", "avg micro", "avg macro"]
    header += ["relabelled O words"]
    return markdown_table(header, rows)


def render(report: dict[str, Any]) -> str:
    """The page ``benchmarks/results/<label>.md``."""
    first = report["rows"][0]["meta"] if report["rows"] else {}
    return "\n".join(
        [
            f"# {report['label']}",
            "",
            f"Sweep of `{report['strategy']}.{report['param']}` on {report['benchmark']}, "
            f"scored on the **{report['score_on']}** split.",
            "",
            f"- command: `{report['command']}`",
            f"- date: {report['date']}; git commit: {first.get('git_commit')}",
            f"- data: {first.get('dataset')}, protocol {first.get('protocol')}, "
            f"type order {first.get('type_order')}",
            f"- encoder: {first.get('encoder')}; epochs per step: {first.get('epochs')}; "
            f"seed {report['seed']}" + ("; **quick mode**" if report["quick"] else ""),
            "",
            *sweep_table(report),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("--strategy", required=True, help="the strategy whose parameter is swept")
    p.add_argument("--param", required=True, help="its parameter (strategy_params.<s>.<param>)")
    p.add_argument("--values", required=True, help="comma list of values")
    p.add_argument("--with", dest="also", default="", help="comma list of strategies run before")
    p.add_argument("--quick", action="store_true", help="the benchmark's quick variant")
    p.add_argument("--on", choices=["dev", "test"], default="dev", help="split to score on")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", type=Path, default=None, help="datasets folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--restart", action="store_true", help="ignore finished runs")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)

    config = benchmark_config(args.name, args.quick, args.data_dir, args.set)
    set_dotted(config, "data.score_on", args.on)
    label = f"{args.name}{'-quick' if args.quick else ''}-sweep-{args.strategy}-{args.param}"
    names = [s for s in args.also.split(",") if s] + [args.strategy]
    rows = []
    for raw in args.values.split(","):
        value = yaml.safe_load(raw)
        cfg = json.loads(json.dumps(config))
        set_dotted(cfg, f"strategy_params.{args.strategy}.{args.param}", value)
        set_dotted(cfg, "strategies", names)
        record = run_one(
            label, cfg, "+".join(names), args.seed, args.work / label / raw, args.restart
        )
        run_dir = Path(record.pop("heatmap_src")).parent
        state = run_states(run_dir).get(args.strategy, {})
        rows.append({"value": value, **record, "relabelled": state.get("relabelled", [])})
    argv_used = argv if argv is not None else sys.argv[1:]
    report = {
        "label": label,
        "benchmark": args.name,
        "strategy": args.strategy,
        "param": args.param,
        "score_on": args.on,
        "quick": args.quick,
        "seed": args.seed,
        "command": command_line("benchmarks.sweep", argv_used),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "rows": rows,
    }
    save_result(label, report, render(report))
    print(render(report))


if __name__ == "__main__":
    main()
