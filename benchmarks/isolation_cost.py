"""Inference cost of parameter isolation against the steps learned:
``python -m benchmarks.isolation_cost [--steps 10] [--texts 256]``.

No training: cost depends on the modules a version holds, not on their weights. For
``n = 1..steps`` the CLUENER test texts are tagged (batch 32, one process) by the model a
stream of ``n`` steps of one type each leaves behind, built with the same calls the strategies
make: ``der`` (``Tagger.add_branch`` per step: the trunk runs once, every branch after it),
``der`` with consolidation past ``max_branches`` (the branches a served version holds), and
``ctr`` (``ctr.add_task`` per step), class-incremental (every task's pass, merged), with
consolidation past ``--bound`` tasks, and task-incremental (one named step's types: its task's
pass only). Each is timed against the
plain tagger of the same encoder. Writes ``results/isolation-cost.json``/``.md``/``.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS, command_line, new_report, page_header, save_result
from benchmarks.specs import BENCHMARKS
from diancang.evaluation.report import markdown_table

#: The ``ctr`` and ``der`` defaults (strategies/ctr.py, strategies/der.py).
CTR_SIZES = [128, 8, 32]
DER_LAYERS = 2


def served_modules(steps: int, bound: int | None) -> int:
    """Branches (``der``) or tasks (``ctr``) a version holds after ``steps`` steps: one per
    step, reset to one by a consolidation whenever a step ends with more than the bound."""
    branches = 0
    for _ in range(steps):
        branches += 1
        if bound and branches > bound:
            branches = 1
    return branches


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="steps learned, 1..steps")
    p.add_argument("--texts", type=int, default=256, help="CLUENER test texts tagged")
    p.add_argument("--bound", type=int, default=2, help="der's and ctr's consolidation bound")
    p.add_argument("--repeats", type=int, default=2, help="timings per cell (the best kept)")
    p.add_argument("--encoder", default="e5-small", help="encoder (tiny-random for a smoke)")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    args = p.parse_args(argv)

    import torch

    from diancang.config import build_config
    from diancang.data.presets import default_data_dir, load_preset
    from diancang.model import ctr
    from diancang.pipeline import machine, model_factory

    bench = BENCHMARKS["cluener-fg2pg2"]
    overrides = [f"model.encoder={args.encoder}"]
    if args.encoder == "tiny-random":  # 4 layers, so that 2 can branch
        overrides += ["model.keep_layers=null", "model.tiny_layers=4"]
    config = build_config(bench.config, overrides=overrides)
    data_dir = args.data_dir or default_data_dir()
    splits = load_preset("cluener2020", data_dir / "cluener2020" if data_dir else None)
    texts = [s.tokens for s in splits.test[: args.texts]]
    types = sorted({sp.label for s in splits.train for sp in s.spans})
    make = model_factory(config, "zh", splits.train)
    torch.set_grad_enabled(False)

    def speed(model: Any, named: list[str] | None = None) -> float:
        """Sentences/s of ``model`` over ``texts``: the best of ``repeats`` after a warm-up."""
        model.eval()
        asked = None if named is None else [named] * len(texts)
        model.predict_tags(texts[:32], 32, types=None if asked is None else asked[:32])
        best = 0.0
        for _ in range(args.repeats):
            began = time.perf_counter()
            model.predict_tags(texts, 32, types=asked)
            best = max(best, len(texts) / (time.perf_counter() - began))
        return best

    single = speed(make(types))
    print(f"single model: {single:.1f} sentences/s", flush=True)
    rows: list[dict[str, Any]] = []
    cache: dict[tuple[str, int], float] = {}

    def build(kind: str, modules: int) -> Any:
        """The model after ``modules`` der branches or ctr tasks (one type a task)."""
        model = make(types)
        for t in range(modules):
            if kind == "der":
                model.add_branch(DER_LAYERS)
            else:
                ctr.add_task(model, [types[t % len(types)]], CTR_SIZES)
        return model

    for n in range(1, args.steps + 1):
        row: dict[str, Any] = {"steps": n}
        for kind in ("der", "ctr"):
            for arm, bound in ((kind, None), (f"{kind}-consolidate{args.bound}", args.bound)):
                b = served_modules(n, bound)
                if (kind, b) not in cache:
                    model = build(kind, b)
                    cache[kind, b] = speed(model)
                    if kind == "ctr":
                        cache["ctr-task", b] = speed(model, types[:1])
                row[arm] = {"modules": b, "sentences_per_second": round(cache[kind, b], 1)}
        row["ctr-task"] = {"modules": n, "sentences_per_second": round(cache["ctr-task", n], 1)}
        print(row, flush=True)
        rows.append(row)

    argv_used = argv if argv is not None else sys.argv[1:]
    command = command_line("benchmarks.isolation_cost", argv_used)
    run = {"command": command, "single": round(single, 1), "repeats": args.repeats, "rows": rows}
    report = new_report(
        "isolation-cost",
        [run],
        machine=machine(),
        encoder=f"{args.encoder} as the benchmarks run it ({bench.config['model']})",
        texts=f"CLUENER test, first {len(texts)} texts, batch 32",
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(report, RESULTS / "isolation-cost.png")
    page = render(report)
    save_result("isolation-cost", report, page)
    print(page)


def _arms(row: dict[str, Any]) -> list[str]:
    return [k for k in row if k != "steps"]


def render(report: dict[str, Any]) -> str:
    """The Markdown page: inference time per arm and steps, as a multiple of the single
    model's."""
    run = report["runs"][0]
    arms = _arms(run["rows"][0])
    lines = page_header(
        report,
        "inference cost of parameter isolation against the steps learned",
        f"encoder: {report['encoder']}; texts: {report['texts']}; machine: "
        f"{report['machine']['cpu_count']} CPU cores, torch threads "
        f"{report['machine']['torch_threads']}; the best of {run['repeats']} timings; no "
        f"training (cost depends on the modules, not their weights); the single model tags "
        f"{run['single']} sentences/s. Each cell: "
        "inference time / the single model's (sentences/s in brackets)",
    )
    rows = []
    for row in run["rows"]:
        sps = [row[a]["sentences_per_second"] for a in arms]
        rows.append([str(row["steps"]), *(f"{run['single'] / x:.2f} ({x})" for x in sps)])
    lines += markdown_table(["steps", *arms], rows)
    lines += [
        "",
        "`ctr` is class-incremental (every task's pass, merged per word); `ctr-task` names one "
        "step's types, so only that task's plugins run. `der` runs the trunk once and every "
        "branch after it. `*-consolidate` hold the branches or tasks a version keeps when a "
        "step that ends with more than the bound distils them into one.",
        "",
        "![inference cost](isolation-cost.png)",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Inference time / the single model's against the steps, one line per arm."""
    from benchmarks.isolation import cost_plot

    run = report["runs"][0]
    xs = [r["steps"] for r in run["rows"]]
    lines = {
        arm: (xs, [run["single"] / r[arm]["sentences_per_second"] for r in run["rows"]])
        for arm in _arms(run["rows"][0])
    }
    cost_plot(lines, "inference time / single model's", path)


if __name__ == "__main__":
    main()
