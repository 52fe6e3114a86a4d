"""What a strategy costs a step: ``python -m benchmarks.step_cost [--arms a,b,...]``.

The main job's data and encoder (MSRA demo, e5-small 4 layers), two steps: the first step once
(it has no teacher, so it is the same for every arm), then the second step from it once per arm,
at the same epochs. An arm is a strategy list joined by ``+``; ``:live`` after it sets
``train.teacher_cache_mb: 0`` (the teacher runs on every batch of every epoch instead of once per
sentence and step); ``--set`` overrides apply to every arm (e.g.
``strategy_params.exemplars.per_type=30``, for the arms that use exemplars). Writes
``results/<name>.{json,md}``: training seconds of the second step, its ratio to ``finetune``'s
when that is an arm, and the step's F1. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from benchmarks.run import ROOT, command_line, save_result
from diancang.config import load_config, parse_overrides
from diancang.evaluation.report import load_results, markdown_table
from diancang.learn.checkpoint import step_dir
from diancang.pipeline import machine, run
from diancang.provenance import git_commit

DEFAULT_ARMS = "finetune,cpfd:live,cpfd,rdp,seq_star,cpfd+exemplars"


def arm_sets(arm: str, sets: list[str]) -> list[str]:
    """The config overrides of one arm (``a+b[:live]``): its strategies, the teacher cache,
    and the ``strategy_params`` of ``sets`` that name one of its strategies."""
    names, _, mode = arm.partition(":")
    strategies = names.split("+")
    mine = [
        s for s in sets if not s.startswith("strategy_params.") or s.split(".")[1] in strategies
    ]
    cache = 0 if mode == "live" else 4096
    return [f"strategies=[{','.join(strategies)}]", f"train.teacher_cache_mb={cache}", *mine]


def render(report: dict[str, Any]) -> str:
    """The result page."""
    rows = report["rows"]
    base = next((r["step2_train_seconds"] for r in rows if r["arm"] == "finetune"), None)
    lines = [
        f"# {report['title']}",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- machine: {report['machine']['cpu_count']} CPU cores, "
        f"torch {report['machine']['torch']}",
        f"- msra-demo, e5-small 4 layers, 600 sentences a step, {report['epochs']} epochs, "
        "batch 16; every arm's second step starts from the same first step",
        "",
    ]
    cells = []
    for r in rows:
        ratio = "–" if not base else f"{r['step2_train_seconds'] / base:.2f}"
        f1 = [f"{100 * r['step2_micro']:.1f}", f"{100 * r['step2_macro']:.1f}"]
        cells.append([r["arm"], f"{r['step2_train_seconds']:.1f}", ratio, *f1])
    header = ["arm", "step 2 training s", "vs finetune", "micro F1", "macro F1"]
    return "\n".join([*lines, *markdown_table(header, cells), ""])


def main(argv: list[str] | None = None, *, name: str = "step-cost", title: str = "") -> None:
    """Command-line entry point (``name``/``title``: the result's file name and heading)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma list (default {DEFAULT_ARMS})")
    p.add_argument("--epochs", type=int, default=4, help="epochs of each step")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / name)
    args = p.parse_args(argv)
    parse_overrides(args.set)  # a malformed override fails before any training
    shutil.rmtree(args.work, ignore_errors=True)
    demo = Path(str(files("diancang") / "resources" / "demo.yaml"))
    common = [f"train.epochs={args.epochs}", "stream.max_steps=2"]
    rows = []
    first: Path | None = None
    for i, arm in enumerate(args.arms.split(",")):
        out = args.work / str(i)
        extra = [f"output_dir={out}"]
        if first is not None:  # every later arm starts from the first arm's first step
            extra.append(f"train.first_step_from={first}")
        config = load_config(demo, [*common, *arm_sets(arm, args.set), *extra])
        result = run(config, restart=True)
        first = first or step_dir(out, 0)
        _, meta = load_results(result.output_dir / "results.json")
        rows.append(
            {
                "arm": arm,
                "step2_train_seconds": meta["train_seconds_per_step"][1],
                "step2_micro": result.matrix.micro[1],
                "step2_macro": result.matrix.macro[1],
            }
        )
    command = command_line("benchmarks." + name.replace("-", "_"), argv or [])
    report = {
        "title": title or "What a strategy costs a step (second step of the main job's stream)",
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "epochs": args.epochs,
        "rows": rows,
    }
    page = render(report)
    save_result(name, report, page)
    print(page)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
