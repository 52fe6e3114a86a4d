"""Markdown for benchmark results: one page per benchmark, one summary table in the README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.report import audit_lines

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run: the headline numbers, and ratios to joint (same seed) when present."""
    out = []
    joint = {r["seed"]: r for r in report["runs"] if r["strategy"] == "joint"}
    finetune = {r["seed"]: r for r in report["runs"] if r["strategy"] == "finetune"}
    for r in report["runs"]:
        s, m = r["summary"], r["meta"]
        secs = m.get("train_seconds_per_step", [])
        row = {
            "strategy": r["strategy"],
            "seed": r["seed"],
            "final_micro": s["final"]["micro"],
            "final_macro": s["final"]["macro"],
            "avg_micro": s["averaged"]["micro"],
            "avg_macro": s["averaged"]["macro"],
            "forgetting": s["forgetting"],
            "sec_per_step": _mean(secs),
            "sent_per_sec": m.get("sentences_per_second"),
            "peak_mb": m.get("peak_memory_mb"),
        }
        j, f = joint.get(r["seed"]), finetune.get(r["seed"])
        if j and j["summary"]["final"]["macro"]:
            row["final_macro_vs_joint"] = s["final"]["macro"] / j["summary"]["final"]["macro"]
        if j and j["summary"]["averaged"]["macro"]:
            row["avg_macro_vs_joint"] = s["averaged"]["macro"] / j["summary"]["averaged"]["macro"]
        if f and row["sec_per_step"] and _mean(f["meta"].get("train_seconds_per_step", [])):
            row["time_vs_finetune"] = row["sec_per_step"] / _mean(
                f["meta"]["train_seconds_per_step"]
            )
        out.append(row)
    return out


def comparison_table(report: dict[str, Any]) -> list[str]:
    """The headline table (F1 in percent)."""

    def num(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    lines = [
        "| strategy | seed | final micro | final macro | avg micro | avg macro | forgetting "
        "| final macro / joint | avg macro / joint | s/step | s/step vs finetune | sentences/s "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows(report):
        cells = [
            r["strategy"],
            str(r["seed"]),
            *(_pct(r[k]) for k in ("final_micro", "final_macro", "avg_micro", "avg_macro")),
            _pct(r["forgetting"]),
            num(r.get("final_macro_vs_joint"), ".2f"),
            num(r.get("avg_macro_vs_joint"), ".2f"),
            num(r["sec_per_step"], ".1f"),
            num(r.get("time_vs_finetune"), ".2f"),
            num(r["sent_per_sec"], ".1f"),
            num(r["peak_mb"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def task_table(matrix: ResultMatrix) -> list[str]:
    """Step x task F1 (percent), rows after each step."""
    tasks = matrix.task_matrix()
    names = [", ".join(t) for t in matrix.step_types]
    lines = ["| after step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, row in enumerate(tasks):
        cells = ["–" if v != v else f"{100 * v:.1f}" for v in row]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return lines


def type_table(matrix: ResultMatrix, joint: ResultMatrix | None) -> list[str]:
    """Per type: F1 right after its step (learning) and final (forgetting), each beside the
    joint model's at the same step (percent); ``kept`` = final / right after, flagged when a
    type that reached 50 keeps less than 0.8 of it."""
    intro, last = matrix.introduced_at(), matrix.n_steps - 1
    lines = [
        "| type | step | right after its step | joint then | final | joint final | kept |",
        "|---|---|---|---|---|---|---|",
    ]
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
        cells = [t, str(k + 1), _pct(after), _pct(j_after), _pct(final), _pct(j_final), kept]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _joint_note(report: dict[str, Any]) -> list[str]:
    if not any(r["meta"].get("joint_trained_once") for r in report["runs"]):
        return []
    return [
        "`joint` is the ceiling trained **once** on all training data with every type (same "
        "encoder, epochs and learning rates); after step k it is scored on the types seen by "
        "step k. Its s/step is that one training's time, not a per-step cost.",
        "",
    ]


def render_benchmark(report: dict[str, Any]) -> str:
    """The page ``benchmarks/results/<name>.md``."""
    first = report["runs"][0]["meta"] if report["runs"] else {}
    machine = first.get("machine", {})
    out = [
        f"# {report['benchmark']}",
        "",
        report["description"],
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {first.get('git_commit')}",
        f"- machine: {machine.get('cpu_count')} CPU cores, torch threads "
        f"{machine.get('torch_threads')}, GPU: {machine.get('cuda') or 'none'}, "
        f"torch {machine.get('torch')}, {machine.get('platform')}",
        f"- data: {first.get('dataset')}, training sentences per step {first.get('train_sizes')}",
        f"- protocol: {first.get('protocol')}, type order {first.get('type_order')}",
        f"- encoder: {first.get('encoder')}; epochs per step: {first.get('epochs')}; "
        f"seeds: {report['seeds']}" + ("; **quick mode**" if report.get("quick") else ""),
        "",
        "F1 in percent, strict entity level, on the test set of all types seen so far. "
        "Forgetting: F1 right after a type's step minus its final F1, averaged over old types.",
        "",
        *_joint_note(report),
        *comparison_table(report),
        "",
    ]
    joints = {
        r["seed"]: ResultMatrix.from_dict(r["matrix"])
        for r in report["runs"]
        if r["strategy"] == "joint"
    }
    for r in report["runs"]:
        matrix = ResultMatrix.from_dict(r["matrix"])
        out += [
            f"## {r['strategy']} (seed {r['seed']})",
            "",
            "Per step micro / macro F1: "
            + ", ".join(
                f"{100 * a:.1f} / {100 * b:.1f}"
                for a, b in zip(matrix.micro, matrix.macro, strict=True)
            ),
            "",
            *task_table(matrix),
            "",
            f"![{r['strategy']} heatmap]({r['heatmap']})",
            "",
        ]
        if r["strategy"] != "joint":
            out += [
                "Per type: learning (F1 right after its step) and forgetting (final), beside "
                "joint:",
                "",
                *type_table(matrix, joints.get(r["seed"])),
                "",
            ]
        out += audit_lines(r["meta"].get("supervision_audit") or [])
        for k, epochs in enumerate(r["meta"].get("dev_per_epoch") or []):
            if epochs:
                out += [
                    f"Dev F1 per epoch, step {k + 1}:",
                    "",
                    "| epoch | dev micro | dev macro | train seconds |",
                    "|---|---|---|---|",
                ]
                out += [
                    f"| {e['epoch']} | {_pct(e['dev_micro'])} | {_pct(e['dev_macro'])} | "
                    f"{e['train_seconds']} |"
                    for e in epochs
                ]
                out.append("")
    return "\n".join(out)


def refresh_readme(results: Path, readme: Path) -> None:
    """Rewrite the table between the markers in ``readme`` from every result JSON."""
    lines = [
        "| benchmark | strategy | final micro | final macro | avg micro | avg macro | "
        "forgetting | s/step | sentences/s | details |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text("utf-8"))
        if "runs" not in report or "benchmark" not in report:  # pages with tables of their own
            continue  # (encoder-speed.json, the few-shot page)
        for r in rows(report):
            sps = "–" if r["sec_per_step"] is None else f"{r['sec_per_step']:.1f}"
            lines.append(
                f"| {report['benchmark']} | {r['strategy']} (s{r['seed']}) | "
                f"{_pct(r['final_micro'])} | {_pct(r['final_macro'])} | {_pct(r['avg_micro'])} | "
                f"{_pct(r['avg_macro'])} | {_pct(r['forgetting'])} | {sps} | "
                f"{'–' if r['sent_per_sec'] is None else format(r['sent_per_sec'], '.1f')} | "
                f"[{path.stem}](results/{path.stem}.md) |"
            )
    lines += ["", "Heatmaps (step x type F1):", ""]
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text("utf-8"))
        for r in report.get("runs", []) if "benchmark" in report else []:
            name = f"{report['benchmark']} {r['strategy']} (s{r['seed']})"
            lines.append(f"- {name}: ![{name}](results/{r['heatmap']})")
    replace_block(readme, START, END, lines)


def replace_block(readme: Path, start: str, end: str, lines: list[str]) -> None:
    """Put ``lines`` between the ``start`` and ``end`` markers of ``readme`` (markers appended
    when missing, the file created when absent)."""
    text = readme.read_text("utf-8") if readme.is_file() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail, "utf-8")
