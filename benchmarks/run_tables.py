"""The per-run sections of a benchmark page: the step x task table, learning and forgetting
per type, where false positives land, the largest type confusions, what each step's sentences
hold, and dev F1 per epoch."""

from __future__ import annotations

from typing import Any

from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.metrics import FP_KINDS
from diancang.evaluation.report import audit_lines, markdown_table


def machine_line(machine: dict[str, Any]) -> str:
    """``"2 CPU cores, torch threads 2, GPU: none, torch 2.13.0+cpu, Linux-..."``."""
    return (
        f"{machine.get('cpu_count')} CPU cores, torch threads {machine.get('torch_threads')}, "
        f"GPU: {machine.get('cuda') or 'none'}, torch {machine.get('torch')}, "
        f"{machine.get('platform')}"
    )


def pct(x: float | None) -> str:
    """A fraction as a percent with one decimal; ``–`` for None."""
    return "–" if x is None else f"{100 * x:.1f}"


def task_table(matrix: ResultMatrix) -> list[str]:
    """Step x task F1 (percent), rows after each step."""
    tasks = matrix.task_matrix()
    names = [", ".join(t) for t in matrix.step_types]
    rows = [
        [str(i + 1), *("–" if v != v else f"{100 * v:.1f}" for v in row)]
        for i, row in enumerate(tasks)
    ]
    return markdown_table(["after step", *names], rows)


def type_table(
    matrix: ResultMatrix, joint: ResultMatrix | None, scores: list[dict[str, Any]] | None = None
) -> list[str]:
    """Per type: F1 right after its step (learning) and final (forgetting), each beside the
    joint model's at the same step (percent); ``kept`` = final / right after, flagged when a
    type that reached 50 keeps less than 0.8 of it. With ``scores`` (run meta
    ``precision_recall``: per step, type -> [precision, recall]) the precision / recall right
    after its step and final are set beside them."""
    intro, last = matrix.introduced_at(), matrix.n_steps - 1
    cols = ["type", "step", "right after its step", "joint then", "final", "joint final", "kept"]
    if scores:
        cols += ["P / R after its step", "P / R final"]
    rows: list[list[str]] = []

    def pr(step: int, t: str) -> str:
        p_r = scores[step].get(t) if scores and step < len(scores) else None
        return "–" if not p_r else f"{pct(p_r[0])} / {pct(p_r[1])}"

    for t, k in intro.items():
        if k > last:
            continue
        after, final = matrix.per_type[k].get(t), matrix.per_type[last].get(t)
        j_after = joint.per_type[k].get(t) if joint and k < joint.n_steps else None
        j_final = joint.per_type[last].get(t) if joint and last < joint.n_steps else None
        kept = "–"
        if after and final is not None:
            kept = f"{final / after:.2f}" + (
                " (< 0.8)" if after >= 0.5 and final < 0.8 * after else ""
            )
        cells = [t, str(k + 1), pct(after), pct(j_after), pct(final), pct(j_final), kept]
        if scores:
            cells += [pr(k, t), pr(last, t)]
        rows.append(cells)
    return markdown_table(cols, rows)


def confusion_lines(meta: dict[str, Any], top: int = 5) -> list[str]:
    """The largest type confusions on the scored set (gold entities found with their exact
    boundaries but under another type), at the last step, with the step each first appeared
    at; empty for runs without the record."""
    steps = meta.get("confusion")
    if not steps or not steps[-1]:
        return []
    last = sorted(
        ((n, gold, pred) for gold, row in steps[-1].items() for pred, n in row.items()),
        key=lambda x: (-x[0], x[1], x[2]),
    )[:top]

    def since(gold: str, pred: str) -> int:
        return next(k for k, s in enumerate(steps) if s.get(gold, {}).get(pred)) + 1

    pairs = ", ".join(f"{g} as {p} {n} (since step {since(g, p)})" for n, g, p in last)
    return [
        f"Largest type confusions after the last step (gold entities found with their exact "
        f"boundaries under another type): {pairs}.",
        "",
    ]


def mentions_table(meta: dict[str, Any]) -> list[str]:
    """What each step's training sentences hold under the hidden full annotation (run meta
    ``step_mentions``): the step's own mentions and their share of all, and the old- and
    future-type mentions it sees as ``O``; empty for runs without the record."""
    steps = meta.get("step_mentions")
    if not steps:
        return []
    rows = []
    for k, m in enumerate(steps):
        own = ", ".join(f"{t} {n} ({100 * m['share'][t]:.0f}%)" for t, n in m["own"].items())
        detail = ", ".join(f"{t} {n}" for t, n in m["old"].items())
        old = str(sum(m["old"].values())) + (f" ({detail})" if detail else "")
        rows.append([str(k + 1), own, old, str(m["future"])])
    header = ["step", "own mentions (share of all)", "earlier types' mentions"]
    header += ["later types' mentions"]
    return [
        "What each step's training sentences hold (hidden full annotation, for measurement "
        "only): mentions of its new types and their share of all their mentions (the rest are "
        "`O` in other steps' sentences), and mentions of earlier and later types, which the "
        "step sees as `O`:",
        "",
        *markdown_table(header, rows),
        "",
    ]


def false_positive_table(matrix: ResultMatrix, meta: dict[str, Any]) -> list[str]:
    """Per type, its false positives right after its own step and at the end, by where they
    land in the hidden full gold (run meta ``false_positives``); empty for runs without it."""
    steps = meta.get("false_positives")
    if not steps or not any(steps):
        return []
    last = len(steps) - 1
    rows = []
    for t, k in matrix.introduced_at().items():
        if k > last:
            continue
        row, end = steps[k].get(t, {}), steps[last].get(t, {})
        counts = [str(row.get(x, 0)) for x in FP_KINDS]
        rows.append([t, str(k + 1), str(sum(row.values())), *counts, str(sum(end.values()))])
    return [
        "False positives of each type right after its step (and at the end), by where they land "
        "in the hidden full gold (measurement only): `later type` is exactly an entity of a "
        "type not learnt yet at that step, `boundary` overlaps one of its own type:",
        "",
        *markdown_table(["type", "step", "false positives", *FP_KINDS, "final"], rows),
        "",
    ]


def epoch_lines(meta: dict[str, Any]) -> list[str]:
    """Dev F1 per epoch, one table per step that logged it (converged runs)."""
    out: list[str] = []
    for k, epochs in enumerate(meta.get("dev_per_epoch") or []):
        if epochs:
            rows = [
                [str(e["epoch"]), pct(e["dev_micro"]), pct(e["dev_macro"]), str(e["train_seconds"])]
                for e in epochs
            ]
            header = ["epoch", "dev micro", "dev macro", "train seconds"]
            out += [f"Dev F1 per epoch, step {k + 1}:", "", *markdown_table(header, rows), ""]
    return out


def run_section(run: dict[str, Any], joint: ResultMatrix | None) -> list[str]:
    """The page section of one run (a strategy and seed); ``joint``: the same seed's joint."""
    matrix = ResultMatrix.from_dict(run["matrix"])
    out = [
        f"## {run['strategy']} (seed {run['seed']})",
        "",
        "Per step micro / macro F1: "
        + ", ".join(
            f"{100 * a:.1f} / {100 * b:.1f}"
            for a, b in zip(matrix.micro, matrix.macro, strict=True)
        ),
        "",
        *task_table(matrix),
        "",
        f"![{run['strategy']} heatmap]({run['heatmap']})",
        "",
    ]
    if run["strategy"] != "joint":
        out += [
            "Per type: learning (F1 right after its step) and forgetting (final), beside joint"
            + (", with precision / recall" if run["meta"].get("precision_recall") else "")
            + ":",
            "",
            *type_table(matrix, joint, run["meta"].get("precision_recall")),
            "",
        ]
        out += false_positive_table(matrix, run["meta"])
    out += confusion_lines(run["meta"])
    out += audit_lines(run["meta"].get("supervision_audit") or [])
    return out + epoch_lines(run["meta"])
