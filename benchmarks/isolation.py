"""Parameter isolation: ``python -m benchmarks.isolation [--bench B] [--quick] [--arms ...]``.

CLUENER FG-2-PG-2 (the default; ``--bench cluener-fg1pg1`` or ``conll03-fg1pg1`` for the
others) under the converged protocol of ``results/<bench>-converged.md`` (each step trained
until dev F1 stops improving, a 30-sentence-a-type memory): ``der`` with the memory, and with
consolidation past 2 branches, and ``ctr`` (its arbiter trained on the step's data and the
memory), with consolidation past 2 tasks too, beside the best distillation strategy's and the
joint model's committed results of the same protocol. For each arm, every version is scored
**class-incremental** (the run's own matrix: the model does not know a text's step) and
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
    stale_strategies,
)
from benchmarks.run_tables import machine_line, pct
from benchmarks.specs import BENCHMARKS, BEST, merge
from diancang.config import load_config
from diancang.data.record import Sentence
from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.report import markdown_table
from diancang.learn.checkpoint import step_dir
from diancang.learn.evaluate import score_task_incremental
from diancang.model.tagger import Tagger
from diancang.pipeline import load_data, machine, make_stream, model_factory

CONVERGED = {"train": {"patience": 2, "epochs": 8}}
MEMORY = {"exemplars": {"per_type": 30}}
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "der": ("exemplars+der", {"strategy_params": MEMORY}),
    # the best distillation strategy's pseudo-labels and KL for the old types the step's data
    # leaves O, which a memory alone does not undo (the shared head's old rows learn O)
    "der-cpfd": ("cpfd+exemplars+der", {"strategy_params": MEMORY}),
    "der-consolidate2": (
        "exemplars+der",
        {"strategy_params": {**MEMORY, "der": {"max_branches": 2}}},
    ),
    # the plugins and the head (both at the head's rate) learn faster at 3e-3 than at 1e-3 on
    # the frozen encoder (a 3-epoch probe of cluener-fg2pg2's first step, session 47)
    "ctr": ("exemplars+ctr", {"strategy_params": MEMORY, "train": {"head_lr": 3e-3}}),
    "ctr-consolidate2": (
        "exemplars+ctr",
        {"strategy_params": {**MEMORY, "ctr": {"max_tasks": 2}}, "train": {"head_lr": 3e-3}},
    ),
}

#: The benchmarks it runs on; the first writes ``results/isolation.*``, the others
#: ``results/isolation-<bench>.*``.
BENCHES = ["cluener-fg2pg2", "cluener-fg1pg1", "conll03-fg1pg1"]
#: CLUENER's most confusable types (results/cluener-fg2pg2-converged.md's confusions): where
#: step modules claim the same spans, so where merging their claims is tested.
CONFUSABLE = ["book", "game", "movie"]


def label_of(bench: str, quick: bool) -> str:
    """The results' file stem: ``isolation`` for the default benchmark."""
    stem = "isolation" if bench == BENCHES[0] else f"isolation-{bench}"
    return stem + ("-quick" if quick else "")


def beside(bench: str, seed: int) -> list[dict[str, Any]]:
    """The committed converged runs of ``bench`` this page compares with: the best distillation
    strategy and the joint model, same seed (none when the page is missing)."""
    path = RESULTS / f"{bench}-converged.json"
    if not path.exists():
        return []
    page = json.loads(path.read_text("utf-8"))
    keep = (BEST, "joint")
    return [
        {
            "strategy": r["strategy"],
            "seed": r["seed"],
            "summary": r["summary"],
            "matrix": r["matrix"],
            "source": f"results/{bench}-converged.json",
        }
        for r in page["runs"]
        if r["strategy"] in keep and r["seed"] == seed
    ]


def measure(run_dir: Path, quick: bool) -> dict[str, Any]:
    """Per version: task-incremental per-type F1 and macro, and inference sentences/s on the
    last step's test set (batch 64, after a warm-up batch), beside a plain tagger of the same
    encoder over every type (``single``: the cost of one model)."""
    cfg = load_config(run_dir / "config.yaml")
    splits = load_data(cfg)
    stream = make_stream(cfg, splits)
    test = stream.steps[-1].test[: 200 if quick else None]
    tokens = [s.tokens for s in test]

    def speed(model: Tagger) -> float:
        model.predict_tags(tokens[:64], 64)
        started = time.perf_counter()
        model.predict_tags(tokens, 64)
        return round(len(tokens) / (time.perf_counter() - started), 1)

    texts = splits.train + splits.dev + splits.test
    single = model_factory(cfg, splits.lang, splits.train, texts)(stream.steps[-1].seen_types)
    rows = []
    for k, step in enumerate(stream.steps):
        model = Tagger.from_pretrained(step_dir(run_dir, k))
        til = score_task_incremental(model, test, [st.new_types for st in stream.steps[: k + 1]])
        rows.append(
            {
                "step": k,
                "branches": model.spec.der_branches,
                "tasks": len(model.spec.ctr_tasks),
                "sentences_per_second": speed(model),
                "til_per_type": til,
                "til_macro": statistics.mean(til.values()),
                "seen": step.seen_types,
            }
        )
    merge = merging(model, test, stream.steps[-1].seen_types)
    out = {"single_sentences_per_second": speed(single.eval()), "versions": rows}
    return out | ({"merging": merge} if merge else {})


def merging(model: Tagger, test: list[Sentence], seen: list[str]) -> dict[str, dict[str, float]]:
    """Class-incremental per-type F1 of a ``ctr`` version whose tasks' claims an arbiter merges,
    and of the same version merging them by the calibrated rule instead ({}: no arbiter)."""
    plugins = model.plugins
    if plugins is None or plugins.arbiter is None:
        return {}
    out = {"arbiter": score_task_incremental(model, test, [seen])}
    arbiter, plugins.arbiter = plugins.arbiter, None
    try:
        out["rule"] = score_task_incremental(model, test, [seen])
    finally:
        plugins.arbiter = arbiter
    return out


def til_matrix(versions: list[dict[str, Any]]) -> ResultMatrix:
    """The task-incremental scores of each version as a result matrix (its forgetting: F1 of
    an old type right after its step minus at the end; no micro F1: the macro stands in)."""
    seen = [v["seen"] for v in versions]
    steps = [
        [t for t in now if t not in before]
        for before, now in zip([[], *seen[:-1]], seen, strict=True)
    ]
    macro = [v["til_macro"] for v in versions]
    return ResultMatrix(steps, [v["til_per_type"] for v in versions], macro, macro)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bench", choices=BENCHES, default=BENCHES[0], help="the benchmark")
    p.add_argument("--quick", action="store_true", help="3,000 sentences, 1 epoch a step")
    p.add_argument("--arms", default=",".join(ARMS), help="comma list of arms")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)
    bench = BENCHMARKS[args.bench]
    label = label_of(args.bench, args.quick)
    base = merge(bench.config, bench.quick if args.quick else CONVERGED)
    path = RESULTS / f"{label}.json"
    runs = (
        {r["arm"]: r for r in json.loads(path.read_text("utf-8"))["runs"]} if path.exists() else {}
    )
    argv_used = argv if argv is not None else sys.argv[1:]
    command = command_line("benchmarks.isolation", argv_used)
    unknown = sorted(set(args.arms.split(",")) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; the arms are {', '.join(ARMS)}")
    for arm in args.arms.split(","):
        strategy, overrides = ARMS[arm]
        config = merge(base, overrides)
        kept = runs.get(arm)
        stale = stale_strategies(kept) if kept else []
        if kept and kept["config"] == config and kept["seed"] == args.seed and not stale:
            print(f"[{label}] {arm}: kept")
            continue
        work = args.work / label / arm  # arms may share a strategy: a folder each
        # a revised strategy's old folder would only be reloaded: start it again
        record = run_one(f"{label}-{arm}", config, strategy, args.seed, work, bool(stale))
        run_dir = Path(record["heatmap_src"]).parent
        runs[arm] = {
            "arm": arm,
            "strategy": strategy,
            "seed": args.seed,
            "config": config,
            "command": command,
            "summary": record["summary"],
            "matrix": record["matrix"],
            "meta": record["meta"],
            **measure(run_dir, args.quick),
        }
        # after every arm: a later failure keeps it
        save(label, runs, args.bench, args.seed, args.quick)


def save(label: str, runs: dict[str, dict[str, Any]], bench: str, seed: int, quick: bool) -> None:
    """Write the JSON, the inference-cost plot and the page of the arms run so far."""
    arms = [runs[a] for a in ARMS if a in runs]
    report = new_report(
        label, arms, machine=machine(), bench=bench, quick=quick, beside=beside(bench, seed)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(report, RESULTS / f"{label}-inference.png")
    page = render(report, f"{label}-inference.png")
    save_result(label, report, page)
    print(page)


def plot(report: dict[str, Any], path: Path) -> None:
    """Inference speed of each version against the steps learned, one line per arm."""
    lines = {
        r["arm"]: (
            [v["step"] + 1 for v in r["versions"]],
            [cost(r, v) or 0.0 for v in r["versions"]],
        )
        for r in report["runs"]
    }
    cost_plot(lines, "inference time / one model's", path)


def cost(run: dict[str, Any], version: dict[str, Any]) -> float | None:
    """A version's inference time over a plain tagger's of the same encoder (None: untimed)."""
    single = run.get("single_sentences_per_second")
    return single / version["sentences_per_second"] if single else None


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
    """The Markdown page: final class- and task-incremental macro F1 and forgetting of each
    arm beside the best distillation strategy and the joint model, the confusable types, the
    inference cost, and the issue's goals."""
    bench = report.get("bench", BENCHES[0])
    quick = report.get("quick", False)
    protocol = "quick check (1 epoch a step, cut data)" if quick else "converged protocol"
    lines = page_header(
        report,
        f"parameter isolation on {bench}",
        f"machine: {machine_line(report['machine'])}; {BENCHMARKS[bench].description}; "
        f"{protocol}; test F1 in %; class-incremental = the run's own scoring, "
        "task-incremental = each step's types named by the caller",
    )
    beside = report.get("beside", [])
    joint = next((b["summary"]["final"]["macro"] for b in beside if b["strategy"] == "joint"), 0)
    types = [
        t for t in CONFUSABLE if any(t in v["seen"] for r in report["runs"] for v in r["versions"])
    ]

    def ratio(x: float) -> str:
        return ratio_or_dash(x / joint if joint else None)

    rows = []
    for r in report["runs"]:
        last = r["versions"][-1]
        ci, ti = r["summary"]["final"]["macro"], last["til_macro"]
        final = r.get("matrix", {"per_type": [{}]})["per_type"][-1]
        held = modules(last)
        stale = stale_strategies(r)
        rows.append(
            [
                r["arm"] + (f" ({', '.join(stale)}, revised since)" if stale else ""),
                pct(ci),
                ratio(ci),
                pct(r["summary"]["forgetting"]),
                pct(ti),
                ratio(ti),
                pct(til_matrix(r["versions"]).forgetting()),
                *(pct(final.get(t)) for t in types),
                held,
                ratio_or_dash(cost(r, last)),
            ]
        )
    for b in beside:
        ci = b["summary"]["final"]["macro"]
        final = b["matrix"]["per_type"][-1]
        rows.append(
            [
                f"{b['strategy']} ({b['source']})",
                pct(ci),
                ratio(ci),
                pct(b["summary"]["forgetting"]),
                "–",
                "–",
                "–",
                *(pct(final.get(t)) for t in types),
                "–",
                "1.00",
            ]
        )
    header = ["arm", "class-inc. final macro", "/ joint", "class-inc. forgetting"]
    header += ["task-inc. final macro", "/ joint", "task-inc. forgetting"]
    header += [f"{t} (class-inc.)" for t in types]
    header += ["modules at the end", "inference time at the end / one model's"]
    lines += markdown_table(header, rows)
    lines += ["", *merging_table(report, types), "", *goals(report, joint)]
    lines += ["", f"![inference cost]({image})", ""]
    return "\n".join(lines)


def merging_table(report: dict[str, Any], types: list[str]) -> list[str]:
    """Where step modules claim the same spans: the last version's class-incremental F1 with
    its arbiter and with the calibrated rule ([] when no arm has an arbiter)."""
    rows = [
        [r["arm"], how, pct(statistics.mean(f1.values())), *(pct(f1.get(t)) for t in types)]
        for r in report["runs"]
        for how, f1 in r.get("merging", {}).items()
    ]
    if not rows:
        return []
    head = "Merging the tasks' claims (class-incremental, last version, macro and per type):"
    return [head, "", *markdown_table(["arm", "merged by", "macro", *types], rows)]


def goals(report: dict[str, Any], joint: float) -> list[str]:
    """The issue's three goals, met or not, for each arm run."""
    best = next((b for b in report.get("beside", []) if b["strategy"] == BEST), None)
    bar = best["summary"]["final"]["macro"] if best else None
    out = ["Goals (issue 21), each arm:", ""]
    for r in report["runs"]:
        last = r["versions"][-1]
        til = last["til_macro"] / joint if joint else 0.0
        kept = round(100 * til_matrix(r["versions"]).forgetting(), 1) <= 0.0
        ci = r["summary"]["final"]["macro"]
        steps = len(r["versions"])
        times = cost(r, last)
        out.append(
            f"- {r['arm']}: task-incremental {til:.2f} x joint (goal 0.95) "
            f"{'with' if kept else 'without'} zero forgetting: "
            f"{'met' if til >= 0.95 and kept else 'not met'}; class-incremental "
            f"{100 * ci:.1f} against {BEST}'s {pct(bar)}: "
            f"{'met' if bar is not None and ci > bar else 'not met'}; inference "
            + (f"{times:.2f} x one model's at {steps} steps" if times else "not timed")
            + (
                f" (goal 2 x at 10 steps: {'met' if times <= 2 else 'not met'})"
                if times and steps == 10
                else ""
            )
        )
    return out


def modules(version: dict[str, Any]) -> str:
    """``"2 branches"`` (der) or ``"1 task"`` (ctr): the modules a version holds."""
    n, kind = (version["branches"], "branch") if version["branches"] else (version["tasks"], "task")
    return f"{n} {kind}" + ("" if n == 1 else "es" if kind == "branch" else "s")


def ratio_or_dash(x: float | None) -> str:
    """``x`` to two places, or a dash."""
    return "–" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
