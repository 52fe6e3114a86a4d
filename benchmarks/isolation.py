"""Parameter isolation: ``python -m benchmarks.isolation [--quick] [--arms ...]``.

CLUENER FG-2-PG-2 with e5-small under the converged protocol of
``results/cluener-fg2pg2-converged.md`` (each step trained until dev F1 stops improving, a
30-sentence-a-type memory): ``der`` with the memory, and with consolidation past 2 branches,
and ``ctr`` (its arbiter trained on the step's data and the memory), with consolidation past 2
tasks too, beside the best
distillation strategy's committed result. For each arm, every version is
scored **class-incremental** (the run's own matrix: the model does not know a text's step) and
**task-incremental** (the caller names the step's types: :func:`score_task_incremental`), and
its inference speed is measured on the test set (sentences per second, one process, batch 64):
the inference-cost curve against the number of steps (a plot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.run import (
    RESULTS,
    ROOT,
    command_line,
    new_report,
    page_header,
    run_one,
    save_result,
)
from benchmarks.specs import BENCHMARKS, merge
from diancang.config import load_config
from diancang.evaluation.report import markdown_table
from diancang.learn.checkpoint import step_dir
from diancang.learn.evaluate import score_task_incremental
from diancang.model.tagger import Tagger
from diancang.pipeline import load_data, machine, make_stream

CONVERGED = {"train": {"patience": 2, "epochs": 8}}
MEMORY = {"exemplars": {"per_type": 30}}
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "der": ("exemplars+der", {"strategy_params": MEMORY}),
    "der-consolidate2": (
        "exemplars+der",
        {"strategy_params": {**MEMORY, "der": {"max_branches": 2}}},
    ),
    "ctr": ("exemplars+ctr", {"strategy_params": MEMORY}),
    "ctr-consolidate2": (
        "exemplars+ctr",
        {"strategy_params": {**MEMORY, "ctr": {"max_tasks": 2}}},
    ),
}


def measure(run_dir: Path, quick: bool) -> dict[str, Any]:
    """Per version: task-incremental per-type F1 and macro, and inference sentences/s."""
    cfg = load_config(run_dir / "config.yaml")
    stream = make_stream(cfg, load_data(cfg))
    test = stream.steps[-1].test[: 200 if quick else None]
    rows = []
    for k, step in enumerate(stream.steps):
        model = Tagger.from_pretrained(step_dir(run_dir, k))
        started = time.perf_counter()
        model.predict_tags([s.tokens for s in test], 64)
        speed = len(test) / (time.perf_counter() - started)
        til = score_task_incremental(model, test, [st.new_types for st in stream.steps[: k + 1]])
        rows.append(
            {
                "step": k,
                "branches": model.spec.der_branches,
                "sentences_per_second": round(speed, 1),
                "til_per_type": til,
                "til_macro": statistics.mean(til.values()),
                "seen": step.seen_types,
            }
        )
    return {"versions": rows}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3,000 sentences, 1 epoch a step")
    p.add_argument("--arms", default=",".join(ARMS), help="comma list of arms")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)
    bench = BENCHMARKS["cluener-fg2pg2"]
    label = "isolation" + ("-quick" if args.quick else "")
    base = merge(bench.config, bench.quick if args.quick else CONVERGED)
    path = RESULTS / f"{label}.json"
    runs = (
        {r["arm"]: r for r in json.loads(path.read_text("utf-8"))["runs"]} if path.exists() else {}
    )
    argv_used = argv if argv is not None else sys.argv[1:]
    command = command_line("benchmarks.isolation", argv_used)
    for arm in args.arms.split(","):
        strategy, overrides = ARMS[arm]
        config = merge(base, overrides)
        kept = runs.get(arm)
        if kept and kept["config"] == config and kept["seed"] == args.seed:
            print(f"[{label}] {arm}: kept")
            continue
        work = args.work / label / arm  # arms may share a strategy: a folder each
        record = run_one(f"{label}-{arm}", config, strategy, args.seed, work, False)
        run_dir = Path(record["heatmap_src"]).parent
        runs[arm] = {
            "arm": arm,
            "strategy": strategy,
            "seed": args.seed,
            "config": config,
            "command": command,
            "summary": record["summary"],
            "meta": record["meta"],
            **measure(run_dir, args.quick),
        }
        save(label, runs)  # after every arm: a later failure keeps it


def save(label: str, runs: dict[str, dict[str, Any]]) -> None:
    """Write the JSON, the inference-cost plot and the page of the arms run so far."""
    report = new_report(label, [runs[a] for a in ARMS if a in runs], machine=machine())
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(report, RESULTS / f"{label}-inference.png")
    page = render(report, f"{label}-inference.png")
    save_result(label, report, page)
    print(page)


def plot(report: dict[str, Any], path: Path) -> None:
    """Inference speed of each version against the steps learned, one line per arm."""
    lines = {}
    for r in report["runs"]:
        first = r["versions"][0]["sentences_per_second"]
        speeds = [v["sentences_per_second"] for v in r["versions"]]
        lines[r["arm"]] = ([v["step"] + 1 for v in r["versions"]], [first / v for v in speeds])
    cost_plot(lines, "inference time / first version's", path)


def cost_plot(lines: dict[str, tuple[list[int], list[float]]], ylabel: str, path: Path) -> None:
    """Inference-time ratios against the steps learned, a line per name, with the 2 x goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, (xs, ys) in lines.items():
        ax.plot(xs, ys, "o-", ms=3, label=name)
    ax.axhline(2.0, color="grey", ls="--", lw=1, label="goal: 2 x")
    ax.set_xlabel("steps learned")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(report: dict[str, Any], image: str) -> str:
    """The Markdown page: final class- and task-incremental macro F1, inference cost."""
    lines = page_header(
        report,
        "parameter isolation on CLUENER FG-2-PG-2",
        f"machine: {report['machine']}; e5-small (6 layers); test F1 in %; class-incremental = "
        "the run's own scoring, task-incremental = each step's types named by the caller",
    )
    rows = []
    for r in report["runs"]:
        last, first = r["versions"][-1], r["versions"][0]
        cost = first["sentences_per_second"] / last["sentences_per_second"]
        macro = f"{100 * r['summary']['final']['macro']:.1f}"
        til = f"{100 * last['til_macro']:.1f}"
        rows.append([r["arm"], r["strategy"], macro, til, str(last["branches"]), f"{cost:.2f}"])
    header = ["arm", "strategy", "class-inc. final macro", "task-inc. final macro"]
    header += ["branches at the end", "inference time at the end / first version"]
    lines += markdown_table(header, rows)
    return "\n".join([*lines, "", f"![inference cost]({image})", ""])


if __name__ == "__main__":
    main()
