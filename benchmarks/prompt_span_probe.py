"""Why a ``prompt_span`` model finds few spans::

    python -m benchmarks.prompt_span_probe [--model DIR] [--thresholds 0.5,0.3,0.2,0.1] [--tag T]

Loads a trained prompt-span model (default: the base model of ``benchmarks.fewshot``) and its
run's test set, then reports (1) strict F1 on the model's types at each decoding threshold of
the start/end pointers and (2) how alike the start logits of different types are (Pearson
correlation over the test words). A head that reads its prompt gives types different logits;
correlations near 1 mean it mostly ignores which type it was asked for.

Writes ``benchmarks/results/cluener-fewshot-prompt_span-probe[-T].{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.run import ROOT, command_line, save_result
from diancang.evaluation.report import markdown_table

LABEL = "cluener-fewshot-prompt_span-probe"
DEFAULT = ROOT / "runs/bench/cluener-fewshot/base-prompt_span/finetune-s1"


def probe(run_dir: Path, thresholds: list[float], batch_size: int = 64) -> dict[str, Any]:
    """F1 per threshold and the start-logit correlation between types of ``run_dir``'s model
    (its ``checkpoints/step-0``) on its stream's test set."""
    import torch
    import yaml

    from diancang.config import build_config
    from diancang.evaluation.metrics import entity_scores
    from diancang.learn.evaluate import _gold
    from diancang.model.prompt_span import decode_pointers
    from diancang.model.tagger import Tagger
    from diancang.pipeline import load_data, make_stream

    rc = build_config(yaml.safe_load((run_dir / "config.yaml").read_text("utf-8")))
    model = Tagger.from_pretrained(run_dir / "checkpoints" / "step-0").eval()
    test = make_stream(rc, load_data(rc)).steps[-1].test
    outs = []
    with torch.no_grad():
        for lo in range(0, len(test), batch_size):
            batch = model.batch([s.tokens for s in test[lo : lo + batch_size]])
            outs.append((model(**batch).logits, batch["word_mask"]))
    gold = _gold(test, model.types)
    by_threshold = {}
    for th in thresholds:
        pred = []
        for logits, mask in outs:
            paths, _ = decode_pointers(logits, mask, th)
            pred += [[model.labels[i] for i in p] for p in paths]
        sc = entity_scores(gold, pred, model.types)
        by_threshold[str(th)] = {
            "micro": sc.f1,
            "per_type": {t: s.f1 for t, s in sc.per_type.items()},
        }
    starts = torch.cat([logits[..., 1::2][mask] for logits, mask in outs])  # (words, n)
    corr = torch.corrcoef(starts.T).tolist()
    return {"types": model.types, "by_threshold": by_threshold, "start_corr": corr}


def render(report: dict[str, Any]) -> str:
    """The Markdown page of a probe report."""
    types = report["types"]
    f1 = [
        [str(th), f"{100 * r['micro']:.1f}", *(f"{100 * r['per_type'][t]:.1f}" for t in types)]
        for th, r in report["by_threshold"].items()
    ]
    pairs = zip(types, report["start_corr"], strict=True)
    corr = [[t, *(f"{x:.3f}" for x in row)] for t, row in pairs]
    lines = [
        f"# {report['label']}",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- model: {report['model']}; test sentences of its run's stream",
        "",
        "## Strict F1 by pointer threshold",
        "",
        *markdown_table(["threshold", "micro", *types], f1),
        "",
        "## Correlation of start logits between types (over test words)",
        "",
        *markdown_table(["type", *types], corr),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    from diancang.provenance import git_commit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT, help="run folder of a prompt_span run")
    p.add_argument("--thresholds", default="0.5,0.4,0.3,0.2,0.1", help="comma list")
    p.add_argument("--tag", default="", help="suffix of the result's name")
    args = p.parse_args(argv)
    if not (args.model / "checkpoints" / "step-0").is_dir():
        raise SystemExit(f"{args.model}: no checkpoints/step-0; run `python -m benchmarks.fewshot`")
    report = probe(args.model, [float(x) for x in args.thresholds.split(",")])
    argv_used = argv if argv is not None else sys.argv[1:]
    label = f"{LABEL}-{args.tag}" if args.tag else LABEL
    report.update(
        label=label,
        command=command_line("benchmarks.prompt_span_probe", argv_used),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        git_commit=git_commit(),
        model=str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
    )
    save_result(label, report, render(report))
    print(render(report))


if __name__ == "__main__":
    main()
