"""What keeping the teacher's outputs saves: ``python -m benchmarks.teacher_cache``.

The main job's data and encoder (MSRA demo, e5-small 4 layers), cpfd, two steps: the first step
once, then the second step twice from it, with ``train.teacher_cache_mb: 0`` (the teacher runs
on every batch of every epoch) and with the default cache (once per sentence and step). Writes
``results/teacher-cache.{json,md}``: training seconds of the second step and its F1. Run it
alone on the machine.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from benchmarks.run import ROOT, save_result
from diancang.config import load_config
from diancang.evaluation.report import load_results
from diancang.learn.checkpoint import step_dir
from diancang.pipeline import machine, run
from diancang.provenance import git_commit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs of each step")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "teacher-cache")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    demo = Path(str(files("diancang") / "resources" / "demo.yaml"))
    sets = [f"train.epochs={args.epochs}", "strategies=[cpfd]", "stream.max_steps=2"]
    rows = []
    for label, mb in (("live teacher", 0), ("cached teacher", 4096)):
        extra = [f"train.teacher_cache_mb={mb}", f"output_dir={args.work / str(mb)}"]
        if rows:  # the second arm starts from the first arm's first step
            extra.append(f"train.first_step_from={step_dir(args.work / '0', 0)}")
        result = run(load_config(demo, [*sets, *extra]), restart=True)
        _, meta = load_results(result.output_dir / "results.json")
        seconds = meta["train_seconds_per_step"][1]
        rows.append(
            {
                "arm": label,
                "teacher_cache_mb": mb,
                "step2_train_seconds": seconds,
                "step2_micro": result.matrix.micro[1],
                "step2_macro": result.matrix.macro[1],
            }
        )
    report = {
        "command": "python -m benchmarks.teacher_cache"
        + (f" --epochs {args.epochs}" if args.epochs != 4 else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "epochs": args.epochs,
        "rows": rows,
    }
    lines = [
        "# Teacher outputs kept per step (cpfd, second step of the main job's stream)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- machine: {report['machine']['cpu_count']} CPU cores, "
        f"torch {report['machine']['torch']}",
        f"- msra-demo, e5-small 4 layers, 600 sentences a step, {args.epochs} epochs, batch 16",
        "",
        "| arm | step 2 training s | micro F1 | macro F1 |",
        "|---|---|---|---|",
        *[
            f"| {r['arm']} | {r['step2_train_seconds']:.1f} | {100 * r['step2_micro']:.1f} | "
            f"{100 * r['step2_macro']:.1f} |"
            for r in rows
        ],
        "",
    ]
    save_result("teacher-cache", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
