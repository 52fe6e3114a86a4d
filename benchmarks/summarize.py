"""Markdown for benchmark results: one page per benchmark, one summary table in the README.

``python -m benchmarks.summarize LABEL [LABEL ...]`` renders ``results/<LABEL>.md`` again from
its JSON (after a change to the pages' layout) and refreshes the README's table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.run_tables import machine_line, mentions_table, pct, run_section
from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.report import markdown_table

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def trained_seconds(meta: dict[str, Any]) -> list[float]:
    """Training seconds of the steps a run trained itself (steps loaded from another run with
    ``train.first_step_from`` trained 0 s here)."""
    return [x for x in meta.get("train_seconds_per_step", []) if x > 0]


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    """The run's summary by today's definitions (recomputed from its matrix, so runs kept from
    earlier sessions count forgetting the same way as new ones)."""
    if "matrix" not in run:
        return dict(run["summary"])
    return ResultMatrix.from_dict(run["matrix"]).summary()


def learned_and_kept(run: dict[str, Any], joint: dict[str, Any]) -> dict[str, float]:
    """The final macro F1 / joint's, split into learning and keeping: ``learned_vs_joint`` =
    the sum over types of F1 right after each type's step / the same sum for joint at those
    steps; ``final_vs_learned`` = the sum of final F1 / the sum right after. Their product is
    the final macro / joint's final macro (joint, trained once, scores a type the same at every
    step). Empty when a sum is 0 or a type was never scored."""
    m, j = ResultMatrix.from_dict(run), ResultMatrix.from_dict(joint)
    intro, last = m.introduced_at(), m.n_steps - 1
    if last >= j.n_steps:
        return {}
    try:
        a = sum(m.per_type[k][t] for t, k in intro.items())  # right after each type's step
        b = sum(j.per_type[k][t] for t, k in intro.items())  # joint at those steps
        c = sum(m.per_type[last][t] for t in intro)  # final
    except KeyError:
        return {}
    return {"learned_vs_joint": a / b, "final_vs_learned": c / a} if a and b else {}


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run: the headline numbers, and ratios to joint (same seed) when present."""
    out = []
    joint = {r["seed"]: r for r in report["runs"] if r["strategy"] == "joint"}
    finetune = {r["seed"]: r for r in report["runs"] if r["strategy"] == "finetune"}
    for r in report["runs"]:
        s, m = _summary(r), r["meta"]
        secs = trained_seconds(m)
        row = {
            "strategy": r["strategy"],
            "seed": r["seed"],
            "final_micro": s["final"]["micro"],
            "final_macro": s["final"]["macro"],
            "avg_micro": s["averaged"]["micro"],
            "avg_macro": s["averaged"]["macro"],
            "forgetting": s["forgetting"],
            "never_learned": s.get("never_learned", []),
            "sec_per_step": _mean(secs),
            "sent_per_sec": m.get("sentences_per_second"),
            "peak_mb": m.get("peak_memory_mb"),
        }
        j, f = joint.get(r["seed"]), finetune.get(r["seed"])
        js = _summary(j) if j else None
        if js and js["final"]["macro"]:
            row["final_macro_vs_joint"] = s["final"]["macro"] / js["final"]["macro"]
        if js and js["averaged"]["macro"]:
            row["avg_macro_vs_joint"] = s["averaged"]["macro"] / js["averaged"]["macro"]
        if j and "matrix" in r and "matrix" in j:
            row |= learned_and_kept(r["matrix"], j["matrix"])
        f_secs = trained_seconds(f["meta"]) if f else []
        if row["sec_per_step"] and f_secs:
            row["time_vs_finetune"] = row["sec_per_step"] / sum(f_secs) * len(f_secs)
        out.append(row)
    return out


def comparison_table(report: dict[str, Any]) -> list[str]:
    """The headline table (F1 in percent)."""

    def num(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    header = ["strategy", "seed", "final micro", "final macro", "avg micro", "avg macro"]
    header += ["forgetting", "never learned", "final macro / joint", "avg macro / joint"]
    header += ["s/step", "s/step vs finetune", "sentences/s", "peak MB"]
    table = []
    for r in rows(report):
        cells = [
            r["strategy"],
            str(r["seed"]),
            *(pct(r[k]) for k in ("final_micro", "final_macro", "avg_micro", "avg_macro")),
            pct(r["forgetting"]),
            ", ".join(r["never_learned"]) or "–",
            num(r.get("final_macro_vs_joint"), ".2f"),
            num(r.get("avg_macro_vs_joint"), ".2f"),
            num(r["sec_per_step"], ".1f"),
            num(r.get("time_vs_finetune"), ".2f"),
            num(r["sent_per_sec"], ".1f"),
            num(r["peak_mb"], ".0f"),
        ]
        table.append(cells)
    return markdown_table(header, table)


def _std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def seed_table(report: dict[str, Any]) -> list[str]:
    """Mean and sample sd over seeds per strategy (F1 in percent); empty with one seed."""
    if len(report["seeds"]) < 2:
        return []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows(report):
        by.setdefault(r["strategy"], []).append(r)
    keys = [
        "final_macro",
        "final_micro",
        "avg_macro",
        "forgetting",
        "final_macro_vs_joint",
        "learned_vs_joint",
        "final_vs_learned",
    ]
    table = []
    for strategy, rs in by.items():
        cells = [strategy, str(len(rs))]
        for k in keys:
            xs = [r[k] for r in rs if r.get(k) is not None]
            mean, sd = _mean(xs), _std(xs)
            scale, fmt = (1, ".2f") if "_vs_" in k else (100, ".1f")
            cell = "–" if mean is None else format(scale * mean, fmt)
            if sd is not None:
                cell += " ± " + format(scale * sd, fmt)
            cells.append(cell)
        table.append(cells)
    header = ["strategy", "seeds", "final macro", "final micro", "avg macro", "forgetting"]
    header += ["final macro / joint", "learned / joint", "final / learned"]
    return [
        "Mean ± sd over seeds. The ratio to joint splits into learning and keeping: `learned / "
        "joint` sums each type's F1 right after its own step against joint's; `final / learned` "
        "sums the final F1 against that (their product is final macro / joint).",
        "",
        *markdown_table(header, table),
        "",
    ]


def epochs_per_step(run: dict[str, Any]) -> list[int]:
    """Epochs each step trained (from its dev-per-epoch log; [] when it was not logged)."""
    return [len(e) for e in run["meta"].get("dev_per_epoch") or []]


def budget_table(converged: dict[str, Any], fixed: dict[str, Any]) -> list[str]:
    """Fixed budget against converged steps, strategy by strategy (seed 1 of each, or the first
    seed): final macro F1 and its ratio to each run's own joint and to the converged joint,
    which is the headline ratio."""

    def by_strategy(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for run in report["runs"]:
            out.setdefault(run["strategy"], run)
        return out

    conv, fix = by_strategy(converged), by_strategy(fixed)
    ceiling = conv.get("joint")
    top = ceiling["summary"]["final"]["macro"] if ceiling else None

    def ratio(x: float, joint: dict[str, Any] | None) -> str:
        j = joint["summary"]["final"]["macro"] if joint else None
        return "–" if not j else f"{x / j:.2f}"

    table = []
    for name in [*conv, *(n for n in fix if n not in conv)]:
        f, c = fix.get(name), conv.get(name)
        fm = f["summary"]["final"]["macro"] if f else None
        cm = c["summary"]["final"]["macro"] if c else None
        cells = [
            name,
            pct(fm),
            "–" if fm is None else ratio(fm, fix.get("joint")),
            "–" if fm is None or not top else f"{fm / top:.2f}",
            pct(cm),
            "–" if cm is None or not top else f"{cm / top:.2f}",
            ", ".join(map(str, epochs_per_step(c))) if c else "–",
        ]
        table.append(cells)
    header = ["strategy", "fixed: final macro", "/ fixed joint", "/ converged joint"]
    header += ["converged: final macro", "/ converged joint", "converged: epochs per step"]
    return [
        f"Fixed budget ({fixed['benchmark']}, {fixed['runs'][0]['meta'].get('epochs')} epochs a "
        f"step) against converged steps ({converged['benchmark']}): final macro F1 and its "
        "ratio to the joint model of the same budget and to the converged joint (the headline).",
        "",
        *markdown_table(header, table),
        "",
    ]


def _joint_note(report: dict[str, Any]) -> list[str]:
    if not any(r["meta"].get("joint_trained_once") for r in report["runs"]):
        return []
    return [
        "`joint` is the ceiling trained **once** on all training data with every type (same "
        "encoder, epochs and learning rates); after step k it is scored on the types seen by "
        "step k. Its s/step is that one training's time, not a per-step cost.",
        "",
    ]


def _epochs(meta: dict[str, Any]) -> str:
    if not meta.get("patience"):
        return str(meta.get("epochs"))
    return (
        f"at most {meta.get('epochs')}, until dev macro F1 on the step's types has not improved "
        f"for {meta['patience']} epochs (the best epoch's weights kept)"
    )


def render_benchmark(report: dict[str, Any], fixed: dict[str, Any] | None = None) -> str:
    """The page ``benchmarks/results/<name>.md``; ``fixed``: the same benchmark's fixed-budget
    report, set beside this converged one (:func:`budget_table`)."""
    # The header describes the continual runs (the joint ceiling is one step over all data).
    metas = [r["meta"] for r in report["runs"] if r["strategy"] != "joint"]
    first = (metas or [r["meta"] for r in report["runs"]] or [{}])[0]
    machine = first.get("machine", {})
    # A page can gather runs of several commands (benchmarks.run keeps committed runs).
    commands = dict.fromkeys(r.get("command", report["command"]) for r in report["runs"])
    commands = commands or {report["command"]: None}
    commits = dict.fromkeys(str(m.get("git_commit")) for m in metas or [first])
    out = [
        f"# {report['benchmark']}",
        "",
        report["description"],
        "",
        *[f"- command: `{c}`" for c in commands],
        f"- date: {report['date']}; git commit: {', '.join(commits)}",
        f"- machine: {machine_line(machine)}",
        f"- data: {first.get('dataset')}, training sentences per step {first.get('train_sizes')}",
        f"- protocol: {first.get('protocol')}, type order {first.get('type_order')}",
        f"- encoder: {first.get('encoder')}; epochs per step: {_epochs(first)}; "
        f"seeds: {report['seeds']}" + ("; **quick mode**" if report.get("quick") else ""),
        "",
        f"F1 in percent, strict entity level, on the {first.get('scored_on') or 'test'} set of "
        "all types seen so far. "
        "Forgetting: F1 right after a type's step minus its final F1, averaged over the old "
        "types that were learned (F1 >= 10 right after their step); the others are listed as "
        "never learned.",
        "",
        *_joint_note(report),
        *comparison_table(report),
        "",
        *seed_table(report),
        *(budget_table(report, fixed) if fixed else []),
        *mentions_table(first),
    ]
    joints = {
        r["seed"]: ResultMatrix.from_dict(r["matrix"])
        for r in report["runs"]
        if r["strategy"] == "joint"
    }
    for r in report["runs"]:
        out += run_section(r, joints.get(r["seed"]))
    return "\n".join(out)


def is_stream_report(report: dict[str, Any]) -> bool:
    """Whether a result JSON holds ``benchmarks.run`` runs (a strategy and seed each, scored
    after every step); pages with tables of their own (encoder speed, few-shot, inference cost)
    are not in the README's table."""
    runs = report.get("runs")
    return "benchmark" in report and isinstance(runs, list) and all("strategy" in r for r in runs)


def refresh_readme(results: Path, readme: Path) -> None:
    """Rewrite the table between the markers in ``readme`` from every result JSON."""
    table = []
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text("utf-8"))
        if not is_stream_report(report):
            continue
        for r in rows(report):
            sps = "–" if r["sec_per_step"] is None else f"{r['sec_per_step']:.1f}"
            table.append(
                [
                    report["benchmark"],
                    f"{r['strategy']} (s{r['seed']})",
                    *(pct(r[k]) for k in ("final_micro", "final_macro", "avg_micro", "avg_macro")),
                    pct(r["forgetting"]),
                    sps,
                    "–" if r["sent_per_sec"] is None else format(r["sent_per_sec"], ".1f"),
                    f"[{path.stem}](results/{path.stem}.md)",
                ]
            )
    header = ["benchmark", "strategy", "final micro", "final macro", "avg micro", "avg macro"]
    header += ["forgetting", "s/step", "sentences/s", "details"]
    lines = [*markdown_table(header, table), "", "Heatmaps (step x type F1):", ""]
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text("utf-8"))
        for r in report["runs"] if is_stream_report(report) else []:
            name = f"{report['benchmark']} {r['strategy']} (s{r['seed']})"
            lines.append(f"- {name}: ![{name}](results/{r['heatmap']})")
    replace_block(readme, START, END, lines)


def fixed_sibling(results: Path, report: dict[str, Any]) -> dict[str, Any] | None:
    """For a converged run (``train.patience`` set): the same benchmark's fixed-budget result
    (``<results>/<name>[-quick].json``, the label without its tag), when it exists and was
    scored on the same split, steps and shots."""
    from benchmarks.specs import BENCHMARKS

    if not report["config"].get("train", {}).get("patience"):
        return None
    names = [b for b in BENCHMARKS if report["benchmark"].startswith(b)]
    if not names:
        return None
    path = results / f"{max(names, key=len)}{'-quick' if report.get('quick') else ''}.json"
    if not path.is_file():
        return None
    fixed: dict[str, Any] = json.loads(path.read_text("utf-8"))

    def protocol(config: dict[str, Any]) -> tuple[Any, ...]:
        data, stream = config.get("data", {}), config.get("stream", {})
        return data.get("score_on"), stream.get("max_steps"), stream.get("shots")

    if fixed["config"].get("train", {}).get("patience"):
        return None
    return fixed if protocol(fixed["config"]) == protocol(report["config"]) else None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: re-render the named result pages."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("labels", nargs="+", help="result names (results/<LABEL>.json)")
    args = p.parse_args(argv)
    results = Path(__file__).resolve().parent / "results"
    for label in args.labels:
        report = json.loads((results / f"{label}.json").read_text("utf-8"))
        page = render_benchmark(report, fixed_sibling(results, report))
        (results / f"{label}.md").write_text(page, "utf-8")
        print(f"wrote {results / (label + '.md')}")
    refresh_readme(results, results.parent / "README.md")


def replace_block(readme: Path, start: str, end: str, lines: list[str]) -> None:
    """Put ``lines`` between the ``start`` and ``end`` markers of ``readme`` (markers appended
    when missing, the file created when absent)."""
    text = readme.read_text("utf-8") if readme.is_file() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail, "utf-8")


if __name__ == "__main__":
    main()
