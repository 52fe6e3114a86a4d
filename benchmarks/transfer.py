"""Transfer to a small domain: ``python -m benchmarks.transfer [--quick] [--seeds 1,2,3]``.

Weibo NER (8 types, all in one step: plain supervised learning) with e5-small at one training
budget: alone, and beside each auxiliary dataset (MSRA NER, People's Daily NER, SIGHAN MSR word
segmentation) under each sharing mode of the ``multitask`` strategy (and ``confusion``:
adversarial sharing with the encoder trained towards the discriminator's uniform output; its
weight's probes, ``confusion-w0.2`` and ``confusion-w0.5``, run only when named); all of it
again at a 300-sentence annotation budget, where transfer should matter most, capped at 30
epochs (``300``) or trained to the dev plateau (``300-long``, up to 100 epochs). Every (arm,
budget, seed) is its own ``diancang run`` (:func:`benchmarks.run.run_one`); runs already in
``results/transfer-weibo[-quick].json`` with the same run config are kept, so a session can add
arms or seeds. Writes that JSON and its Markdown page after every run (test micro and macro
F1, mean and sd over seeds, the gain over Weibo alone, seconds an epoch against alone, and the
adversarial discriminator's balanced accuracy over its last epoch against chance, and a plot of
it epoch by epoch for the runs that recorded it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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
from benchmarks.specs import E5, TRAIN_PRETRAINED, merge
from diancang.data.presets import default_data_dir
from diancang.evaluation.report import markdown_table
from diancang.learn.version import run_states

#: The auxiliary datasets: a multitask ``aux_tasks`` entry each (``{data}``: the data folder).
AUX: dict[str, dict[str, Any]] = {
    "msra": {"kind": "ner", "preset": "msra"},
    "pd": {"kind": "ner", "path": "{data}/peoples_daily/example.dev", "format": "conll"},
    "msr_cws": {
        "kind": "cws",
        "path": "{data}/sighan2005/msr_test_gold.utf8",
        "format": "segmented",
    },
}
#: Each arm's sharing settings of ``multitask``: its three sharing modes, and ``confusion``,
#: ``adversarial`` with the encoder trained towards the discriminator's uniform output instead of
#: through gradient reversal. ``discriminator_weight`` is explicit so that runs of multitask@1
#: (the discriminator learning at adversarial_weight) are not kept as these arms'.
MODES: dict[str, dict[str, Any]] = {
    "hard": {"sharing": "hard"},
    "asymmetric": {"sharing": "asymmetric"},
    "adversarial": {"sharing": "adversarial", "discriminator_weight": 1.0},
    "confusion": {"sharing": "adversarial", "discriminator_weight": 1.0, "adversary": "confusion"},
}
#: Probes of the confusion term's weight (``adversarial_weight``, 0.05 in ``confusion``): run by
#: name with ``--arms``, not part of the default table.
PROBES: dict[str, dict[str, Any]] = {
    f"confusion-w{w}": {**MODES["confusion"], "adversarial_weight": w} for w in (0.2, 0.5)
}
#: Each annotation budget: its config overrides and its heading. At 300 sentences alone runs
#: into the 30-epoch cap still improving, so ``300`` compares models at a fixed budget and
#: ``300-long`` trains every arm until dev F1 stops improving.
BUDGETS: dict[str, tuple[dict[str, Any], str]] = {
    "full": ({"data": {"max_train": None}}, "all 1,350 training sentences"),
    "300": ({"data": {"max_train": 300}}, "300 training sentences, up to 30 epochs"),
    "300-long": (
        {"data": {"max_train": 300}, "train": {"epochs": 100, "patience": 5}},
        "300 training sentences, up to 100 epochs (patience 5)",
    ),
}


def base_config(data_dir: Path, quick: bool) -> dict[str, Any]:
    """Weibo NER in one step, e5-small, trained until dev F1 stops improving."""
    config: dict[str, Any] = {
        "data": {"preset": "weibo_ner", "dir": str(data_dir / "weibo_ner")},
        "stream": {"fg": 8, "pg": 1},
        "model": {**E5, "max_length": 192},
        "train": {**TRAIN_PRETRAINED, "epochs": 30, "patience": 3, "min_updates": 300},
    }
    if quick:
        quick_train = {"epochs": 1, "patience": None, "min_updates": None}
        config = merge(config, {"data": {"max_train": 200}, "train": quick_train})
    return config


def arms(data_dir: Path, quick: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each arm's strategy and config overrides: ``alone``, then ``<aux>-<mode>``."""
    out: dict[str, tuple[str, dict[str, Any]]] = {"alone": ("finetune", {})}
    for aux, task in AUX.items():
        entry: dict[str, Any] = {k: str(v).format(data=data_dir) for k, v in task.items()}
        entry = {"name": aux, **entry, "max_sentences": 300 if quick else 5000}
        for mode, sharing in {**MODES, **PROBES}.items():
            # subsample: each epoch at most as many auxiliary batches as main ones, a fresh
            # subset every epoch (the seed article's scheme); proportional would make an epoch
            # at 300 Weibo sentences ~17 times as long as alone's.
            params = {**sharing, "sampling": "subsample", "aux_tasks": [entry]}
            out[f"{aux}-{mode}"] = ("multitask", {"strategy_params": {"multitask": params}})
    return out


def default_arms(table: dict[str, Any]) -> list[str]:
    """The arms run when ``--arms`` is not given: every one but the :data:`PROBES`."""
    return [a for a in table if not a.endswith(tuple(f"-{p}" for p in PROBES))]


def discriminator(run_dir: Path) -> tuple[float | None, list[float] | None]:
    """The adversarial discriminator's balanced accuracy over the last epoch of the run's last
    step, and in each of its epochs (multitask@3 on; None without them)."""
    last = (run_states(run_dir).get("multitask", {}).get("history") or [{}])[-1]
    value = last.get("discriminator_balanced_last_epoch")
    return (None if value is None else float(value)), last.get("discriminator_balanced_by_epoch")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 sentences, 1 epoch (a smoke run)")
    p.add_argument("--seeds", default="1", help="comma list of seeds")
    p.add_argument("--arms", default=None, help="comma list of arms (default: all but the probes)")
    p.add_argument("--budgets", default="full,300", help=f"comma list of {', '.join(BUDGETS)}")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("no data folder: pass --data-dir (../shared/data)")
    label = "transfer-weibo" + ("-quick" if args.quick else "")
    base = base_config(data_dir, args.quick)
    table = arms(data_dir, args.quick)
    chosen = args.arms.split(",") if args.arms else default_arms(table)
    budgets = args.budgets.split(",")
    for given, known, what in ((chosen, table, "--arms"), (budgets, BUDGETS, "--budgets")):
        if unknown := [x for x in given if x not in known]:
            raise SystemExit(
                f"{what}: unknown {', '.join(unknown)}; choose from {', '.join(known)}"
            )
    path = RESULTS / f"{label}.json"
    old = json.loads(path.read_text("utf-8"))["runs"] if path.exists() else []
    runs = {(r["arm"], r["budget"], r["seed"]): r for r in old}
    argv_used = argv if argv is not None else sys.argv[1:]
    command = command_line("benchmarks.transfer", argv_used)
    for budget in budgets:
        for arm in chosen:
            strategy, overrides = table[arm]
            config = merge(merge(base, overrides), BUDGETS[budget][0])
            for seed in (int(s) for s in args.seeds.split(",")):
                kept = runs.get((arm, budget, seed))
                if kept and kept["config"] == config:
                    print(f"[{label}] {arm} {budget} seed {seed}: kept")
                    continue
                work = args.work / label / f"{arm}-{budget}"
                record = run_one(f"{label}-{arm}-{budget}", config, strategy, seed, work, False)
                run_dir = Path(record.pop("heatmap_src")).parent
                last, by_epoch = discriminator(run_dir)
                runs[(arm, budget, seed)] = {
                    "arm": arm,
                    "budget": budget,
                    "seed": seed,
                    "config": config,
                    "command": command,
                    "summary": record["summary"],
                    "meta": record["meta"],
                    "discriminator_balanced": last,
                    "discriminator_by_epoch": by_epoch,
                }
                if resumed(record["meta"]):
                    runs[(arm, budget, seed)]["timing_void"] = RESUMED
                # after every run: a session that ends mid-table keeps the runs it finished
                ordered = sorted(runs.values(), key=lambda r: (r["budget"], r["arm"], r["seed"]))
                print(publish(label, new_report(label, ordered)))


def publish(label: str, report: dict[str, Any]) -> str:
    """Write the report's JSON, its Markdown page and plots under ``results/``; the page."""
    plot(report, RESULTS / f"{label}.png")
    page = render(report) + f"\n![micro F1 by arm]({label}.png)\n"
    if plot_discriminator(report, RESULTS / f"{label}-discriminator.png"):
        page += f"\n![discriminator by epoch]({label}-discriminator.png)\n"
    save_result(label, report, page)
    return page


def by_arm(report: dict[str, Any], budget: str) -> dict[str, list[dict[str, Any]]]:
    """The runs of one budget, grouped by arm (in the report's order)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in report["runs"]:
        if r["budget"] == budget:
            out.setdefault(r["arm"], []).append(r)
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    """Test micro F1 by arm (mean, sd bars over seeds, seeds as dots), a panel per budget,
    Weibo alone as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [b for b in BUDGETS if by_arm(report, b)]
    if not budgets:
        return
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 3.6), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        groups = by_arm(report, budget)
        names = list(groups)
        micro = [[100 * r["summary"]["final"]["micro"] for r in groups[n]] for n in names]
        means = [statistics.mean(m) for m in micro]
        sds = [statistics.stdev(m) if len(m) > 1 else 0.0 for m in micro]
        ax.bar(range(len(names)), means, yerr=sds, color="#8fb3d9", capsize=3)
        for i, m in enumerate(micro):
            ax.plot([i] * len(m), m, "k.", ms=4)
        if "alone" in groups:
            ax.axhline(means[names.index("alone")], color="grey", ls="--", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("test micro F1 (%)")
        ax.set_title(BUDGETS[budget][1], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_discriminator(report: dict[str, Any], path: Path) -> bool:
    """The discriminator's balanced accuracy epoch by epoch: a panel per arm and budget, a line
    per seed, chance as a dashed line and the goal's band (chance +- 0.1) shaded; False without
    any run that recorded it."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in report["runs"]:
        if r.get("discriminator_by_epoch"):
            groups.setdefault(f"{r['arm']}, {r['budget']}", []).append(r)
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 2.6 * rows), sharey=True, squeeze=False
    )
    for ax, (title, runs) in zip(axes.flat, groups.items(), strict=False):
        for r in runs:
            ys = r["discriminator_by_epoch"]
            ax.plot(range(1, len(ys) + 1), ys, marker=".", lw=1, label=f"seed {r['seed']}")
        ax.axhspan(0.4, 0.6, color="grey", alpha=0.15)
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("balanced accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


#: Why a run resumed mid-step (a killed session's run, started again) has no timing.
RESUMED = (
    "resumed mid-step: its epochs ran in more than one process, perhaps on hosts of other "
    "speeds; F1 holds, seconds do not compare"
)


def resumed(meta: dict[str, Any]) -> bool:
    """Whether a run went on from a killed process's epoch state (its dev epochs say so)."""
    return any(e.get("resumed_after") for step in meta["dev_per_epoch"] for e in step)


def _stat(xs: list[float]) -> str:
    mean = 100 * statistics.mean(xs)
    return f"{mean:.1f}" + (f" ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else "")


def _epochs(run: dict[str, Any]) -> int:
    """Epochs the run trained (early stopping ends them before the cap)."""
    return sum(len(step) for step in run["meta"]["dev_per_epoch"])


def _epoch_seconds(run: dict[str, Any]) -> float:
    """Training seconds per epoch of the main task (early stopping makes totals unequal)."""
    return float(sum(run["meta"]["train_seconds_per_step"])) / (_epochs(run) or 1)


def _timed(runs: list[dict[str, Any]]) -> list[float]:
    """Seconds an epoch of the runs whose timing holds: a run marked ``timing_void`` (with the
    reason: something else shared its cores) counts for F1, not for cost."""
    return [_epoch_seconds(r) for r in runs if not r.get("timing_void")]


HEADER = [
    "arm",
    "seeds",
    "micro F1",
    "macro F1",
    "micro vs alone",
    "s/epoch vs alone",
    "epochs run",
    "discriminator (balanced, last epoch)",
]


def render(report: dict[str, Any]) -> str:
    """The Markdown page: per budget, one row per arm (mean ± sd over seeds)."""
    lines = page_header(
        report,
        "transfer to Weibo NER",
        "Weibo NER, 8 types in one step, e5-small (6 layers, 192 sub-tokens), test F1 in %; "
        "the discriminator's balanced accuracy (mean recall per task) over the last epoch "
        "against chance 0.5 (two tasks); seconds an epoch from the runs that had the cores "
        "alone (a run marked timing_void counts for F1 only)",
    )
    for budget in BUDGETS:
        by = by_arm(report, budget)
        if not by:
            continue
        alone = by.get("alone", [])
        base = statistics.mean(r["summary"]["final"]["micro"] for r in alone) if alone else None
        alone_s = _timed(alone)
        base_s = statistics.mean(alone_s) if alone_s else None
        lines += [f"## {BUDGETS[budget][1]}", ""]
        table = []
        for arm, rs in by.items():
            micro = [r["summary"]["final"]["micro"] for r in rs]
            gain = "–" if base is None else f"{100 * (statistics.mean(micro) - base):+.1f}"
            secs = _timed(rs)
            cost = "–" if not (base_s and secs) else f"{statistics.mean(secs) / base_s:.2f}"
            acc = [
                r["discriminator_balanced"]
                for r in rs
                if r.get("discriminator_balanced") is not None
            ]
            macro = _stat([r["summary"]["final"]["macro"] for r in rs])
            mean_acc = "–" if not acc else f"{statistics.mean(acc):.2f}"
            epochs = "/".join(str(_epochs(r)) for r in rs)
            table.append([arm, str(len(rs)), _stat(micro), macro, gain, cost, epochs, mean_acc])
        lines += [*markdown_table(HEADER, table), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
