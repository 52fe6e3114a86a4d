"""The few-shot benchmark ``cluener-fewshot``::

    python -m benchmarks.fewshot [--shots 5,10,20] [--arms finetune,distill,...] [--data-dir DIR]
                                 [--draws 1,2,3 --out cluener-fewshot-draws]

CLUENER with e5-small: a base step of 4 types with full data, then 3 steps of 2 types with K
sentences per new type (``stream.shots``; dev is K-shot too, test has every type).

Every arm of one head starts from one base model, trained once by plain fine-tuning on the base
step (run folder ``base-<head>``) and loaded with ``train.first_step_from``: the base step is
scored and the strategies' end-of-step hooks run on it (a language model is trained, a memory
filled), but it is not retrained per arm. The few-shot steps train ``FEWSHOT_TRAIN``.

Writes ``benchmarks/results/cluener-fewshot.json`` and ``.md``: per K, final macro-F1 on all
types, on the base and on the new types, step-averaged macro-F1, the ratio to the joint
full-data ceiling (the model of ``benchmarks.run``'s CLUENER ceiling, scored on this stream),
and the seconds spent making synthetic data against the step's training seconds; the zero-shot
F1 of the label-semantic and prompt-span heads on the new types before any example of them.

``--draws`` repeats each arm on other K-shot sentences (``stream.shot_seed``), drawn from the
same step pools; everything else (the run seed: initialisation, data order, CLUENER's dev cut;
the step assignment; the base model) stays that of draw 1. A row is then the mean over draws,
with the final macro-F1's standard deviation.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.run import ROOT, command_line, run_ceiling, run_commits, run_one, save_result
from benchmarks.specs import FEWSHOT, FEWSHOT_ARMS, FEWSHOT_TRAIN, merge
from diancang.data.presets import default_data_dir
from diancang.evaluation.report import markdown_table
from diancang.learn.version import run_states

LABEL = "cluener-fewshot"


def config_for(data_dir: Path | None, head: str, shots: int | None) -> dict[str, Any]:
    """The run config of one arm (``shots`` None: the base step's run)."""
    config = copy.deepcopy(FEWSHOT)
    if head != "linear":  # unset otherwise, so the joint ceiling is cluener-fg2pg2's
        config["model"] = {**config["model"], "head": head}
    if shots is not None:
        config["stream"] = {**config["stream"], "shots": shots}
    data_dir = data_dir or default_data_dir()
    if data_dir is not None:
        config = merge(config, {"data": {"dir": str(data_dir / "cluener2020")}})
    return config


def arm_config(
    data_dir: Path | None, arm: str, shots: int, draw: int, base: Path | None
) -> dict[str, Any]:
    """The run config of ``arm`` at K = ``shots`` on K-shot draw ``draw``
    (``stream.shot_seed``); the few-shot steps train ``FEWSHOT_TRAIN`` and the arm's overrides,
    starting from the ``base`` model."""
    _, head, train = FEWSHOT_ARMS[arm]
    config = config_for(data_dir, head, shots)
    first = {"first_step_from": str(base)} if base is not None else {}
    # shot_seed unset means the stream's seed: that config stays the one of runs made before
    # shot_seed existed, so they are reused.
    same = draw == config["stream"].get("seed", 1)
    return merge(
        config,
        {
            "stream": {} if same else {"shot_seed": draw},
            "train": {**FEWSHOT_TRAIN, **train, **first},
        },
    )


def base_model(data_dir: Path | None, head: str, work: Path, restart: bool) -> Path:
    """Train (once) the base step with plain fine-tuning; returns its step-0 model folder."""
    config = merge(config_for(data_dir, head, None), {"stream": {"max_steps": 1}})
    record = run_one(f"{LABEL}-base", config, "finetune", 1, work / f"base-{head}", restart)
    return Path(record["heatmap_src"]).parent / "checkpoints" / "step-0"


def zero_shot(model_dir: Path, config: dict[str, Any]) -> dict[str, float]:
    """F1 per later type of a base model told the types' texts and nothing else."""
    from diancang.config import build_config
    from diancang.learn.evaluate import evaluate
    from diancang.model.tagger import Tagger
    from diancang.pipeline import load_data, make_stream

    rc = build_config(config)
    stream = make_stream(rc, load_data(rc))
    model = Tagger.from_pretrained(model_dir)
    later = [t for t in stream.order if t not in model.types]
    model.add_labels(later, rc.types)
    test = stream.steps[-1].test
    scores = evaluate(model, test, later).per_type  # one pass: a type's F1 needs only its spans
    return {t: scores[t].f1 for t in later}


def cached_zero_shot(model_dir: Path, config: dict[str, Any], restart: bool) -> dict[str, float]:
    """``zero_shot``, kept beside the base model so a rerun does not recompute it."""
    path = model_dir.parent.parent / "zero-shot.json"
    if path.exists() and not restart:
        return dict(json.loads(path.read_text("utf-8")))
    scores = zero_shot(model_dir, config)
    path.write_text(json.dumps(scores, indent=1), "utf-8")
    return scores


def synthesis_cost(run_dir: Path) -> dict[str, float] | None:
    """Seconds making synthetic data for the few-shot steps against their training seconds.

    Step ``s`` pays for the language model trained at the end of step ``s - 1`` (the base
    step's included) and for its own generation or inversion; the latter runs in the data
    hook, so it is taken out of the step's training seconds. ``worst`` is the highest ratio of
    one step."""
    progress = json.loads((run_dir / "progress.json").read_text("utf-8"))
    seconds = progress["seconds"]
    made = [0.0] * len(seconds)
    inside = [0.0] * len(seconds)
    for state in run_states(run_dir).values():
        for h in state.get("history", []):
            step = h.get("step", 0)
            hook = h.get("generate_seconds", 0.0) + h.get("seconds", 0.0)
            inside[step] += hook
            made[step] += hook
            if step + 1 < len(seconds):
                made[step + 1] += h.get("lm_seconds", 0.0)
    steps = range(1, len(seconds))
    if not any(made[s] for s in steps):
        return None
    train = [max(seconds[s] - inside[s], 1e-9) for s in steps]
    total = sum(made[s] for s in steps)
    return {
        "synthetic_seconds": total,
        "train_seconds": sum(train),
        "ratio": total / sum(train),
        "worst": max(made[s] / t for s, t in zip(steps, train, strict=True)),
    }


def arm_row(record: dict[str, Any], base_types: list[str]) -> dict[str, Any]:
    """The headline numbers of one finished arm."""
    from diancang.evaluation.matrix import ResultMatrix

    m = ResultMatrix.from_dict(record["matrix"])
    final = m.per_type[-1]
    new = [t for t in final if t not in base_types]
    return {
        "arm": record["arm"],
        "final_macro": m.macro[-1],
        "base_macro": sum(final[t] for t in base_types) / len(base_types),
        "new_macro": sum(final[t] for t in new) / len(new) if new else None,
        "avg_macro": sum(m.macro) / len(m.macro),
        "cost": synthesis_cost(Path(record["heatmap_src"]).parent),
    }


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's rows over K-shot draws -> their means, ``draws`` and ``final_macro_sd`` (sample
    standard deviation, 0 for one draw); ``cost`` is the draw with the worst step."""
    n = len(rows)
    out: dict[str, Any] = {"arm": rows[0]["arm"], "draws": n}
    for key in ("final_macro", "base_macro", "new_macro", "avg_macro"):
        vals = [r[key] for r in rows]
        out[key] = None if None in vals else sum(vals) / n
    mean = out["final_macro"]
    var = sum((r["final_macro"] - mean) ** 2 for r in rows) / (n - 1) if n > 1 else 0.0
    out["final_macro_sd"] = var**0.5
    costs = [r["cost"] for r in rows if r["cost"]]
    out["cost"] = max(costs, key=lambda c: c.get("worst", c["ratio"])) if costs else None
    return out


def shot_name(run: dict[str, Any]) -> str:
    """``"K=10 finetune draw 2"``: a few-shot run's name on the page."""
    draw = f" draw {run['draw']}" if run.get("draw", 1) != 1 else ""
    return f"K={run.get('shots', '?')} {run.get('arm')}{draw}"


def final_cell(row: dict[str, Any]) -> str:
    """``"25.0"``, or ``"25.0 ± 3.1"`` over several draws."""
    cell = f"{100 * row['final_macro']:.1f}"
    return cell + (f" ± {100 * row['final_macro_sd']:.1f}" if row.get("draws", 1) > 1 else "")


def render(report: dict[str, Any]) -> str:
    """The page ``benchmarks/results/cluener-fewshot.md``."""
    joint = report["joint_final_macro"]
    meta = report["meta"]
    lines = [
        f"# {report.get('label', LABEL)}",
        "",
        "CLUENER, e5-small: a base step of 4 types with full data, then 3 steps of 2 types "
        "with K sentences per new type. Every arm of a head starts from one base model.",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit of each run (a finished run is reused, so the "
        f"rows may span commits): {run_commits(report.get('runs', []), shot_name)}",
        f"- encoder: {meta.get('encoder')}; machine: {meta.get('machine')}",
        f"- data: {meta.get('dataset')}, type order {meta.get('type_order')}",
        f"- few-shot steps: {json.dumps(FEWSHOT_TRAIN)}; joint full-data final macro-F1: "
        f"{100 * joint:.1f}",
    ]
    draws = max(
        (r.get("draws", 1) for rows in report["by_shots"].values() for r in rows), default=1
    )
    if draws > 1:
        lines.append(
            f"- {draws} K-shot draws an arm (`stream.shot_seed`; the run seed stays 1): final "
            "macro is mean ± sample standard deviation, the other columns means; the cost "
            "column is the draw with the worst step"
        )
    lines += [
        f"- arm `{a}` trains the few-shot steps with {json.dumps(t)} on top"
        for a, (_, _, t) in FEWSHOT_ARMS.items()
        if t and any(r["arm"] == a for rows in report["by_shots"].values() for r in rows)
    ]
    lines.append("")
    header = ["arm", "final macro", "/ joint", "base types", "new types", "new / finetune's"]
    header += ["avg macro", "synthetic s / train s (worst step)"]
    for k, rows in report["by_shots"].items():
        finetune_new = next((r["new_macro"] for r in rows if r["arm"] == "finetune"), None)
        table = []
        for r in rows:
            ratio = (
                f"{r['new_macro'] / finetune_new:.2f}"
                if finetune_new and r["new_macro"] is not None
                else "–"
            )
            cost = r["cost"]
            spent = (
                f"{cost['synthetic_seconds']:.0f} / {cost['train_seconds']:.0f} "
                f"({cost.get('worst', cost['ratio']):.2f})"
                if cost
                else "–"
            )
            table.append(
                [
                    r["arm"],
                    final_cell(r),
                    f"{r['final_macro'] / joint:.2f}",
                    f"{100 * r['base_macro']:.1f}",
                    f"{100 * (r['new_macro'] or 0):.1f}",
                    ratio,
                    f"{100 * r['avg_macro']:.1f}",
                    spent,
                ]
            )
        lines += [f"## K = {k}", "", *markdown_table(header, table), ""]
    lines += ["## Zero-shot F1 on the new types (base model, before any example)", ""]
    zero = report["zero_shot"]
    heads = sorted(zero)
    types = sorted({t for z in zero.values() for t in z})
    cells = [[t, *(f"{100 * zero[h].get(t, 0.0):.1f}" for h in heads)] for t in types]
    lines += markdown_table(["type", *heads], cells)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shots", default="5,10,20", help="comma list of K")
    p.add_argument("--arms", default=",".join(FEWSHOT_ARMS), help="comma list of arms")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets folder (../shared/data)")
    p.add_argument("--restart", action="store_true", help="ignore finished runs")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    p.add_argument("--draws", default="1", help="comma list of K-shot draws (stream.shot_seed)")
    p.add_argument("--out", default=LABEL, help="name of the result files in benchmarks/results")
    args = p.parse_args(argv)
    draws = [int(x) for x in args.draws.split(",")]
    work = args.work / LABEL
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(FEWSHOT_ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {sorted(FEWSHOT_ARMS)}")
    heads = sorted({FEWSHOT_ARMS[a][1] for a in arms})
    bases = {h: base_model(args.data_dir, h, work, args.restart) for h in heads}
    base_types = json.loads((bases[heads[0]] / "config.json").read_text("utf-8"))["types"]
    zero = {
        h: cached_zero_shot(bases[h], config_for(args.data_dir, h, 10), args.restart)
        for h in heads
        if h != "linear"
    }
    ceiling = run_ceiling(LABEL, config_for(args.data_dir, "linear", None), 1, work, args.restart)
    by_shots: dict[str, list[dict[str, Any]]] = {}
    records: list[dict[str, Any]] = []
    argv_used = argv if argv is not None else sys.argv[1:]
    for k in [int(x) for x in args.shots.split(",")]:
        for arm in arms:
            strategies, head, _ = FEWSHOT_ARMS[arm]
            rows = []
            for draw in draws:
                cfg = arm_config(args.data_dir, arm, k, draw, bases[head])
                folder = work / f"k{k}" / arm / (f"draw-{draw}" if draw != 1 else "")
                record = run_one(LABEL, cfg, strategies, 1, folder, args.restart)
                record["arm"], record["shots"], record["draw"] = arm, k, draw
                records.append(record)
                rows.append(arm_row(record, base_types))
            by_shots.setdefault(str(k), []).append(mean_row(rows))
        report = {  # saved after each K, so a long command leaves the finished Ks behind
            "label": args.out,
            "command": command_line("benchmarks.fewshot", argv_used),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "meta": records[0]["meta"],
            "joint_final_macro": ceiling["summary"]["final"]["macro"],
            "zero_shot": zero,
            "by_shots": by_shots,
            "runs": [{key: v for key, v in r.items() if key != "heatmap_src"} for r in records],
        }
        save_result(args.out, report, render(report))
    print(render(report))


if __name__ == "__main__":
    main()
