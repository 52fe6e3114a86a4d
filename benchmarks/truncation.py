"""The F1 cost of layer truncation: ``python -m benchmarks.truncation [--lr 2e-4] [--full]``.

Trains joint-cluener (e5-small, trimmed vocabulary, CRF, all 10 types in one step) with all 12
layers and with the first 6 and 3, at one learning rate, and tables the dev F1 after each epoch
next to the throughput measured by ``benchmarks.encoder_speed``. Quick mode (the default:
3,000 training sentences, 2 epochs) unless ``--full``. Vocabulary trimming needs no such run:
it drops only embedding rows no text of the run uses, so outputs are unchanged
(``tests/test_tagger.py::test_trimming_changes_no_output_on_the_texts_it_kept``).

Each variant is a ``joint-cluener`` run labelled like ``python -m benchmarks.run joint-cluener
--quick --set model.keep_layers=6 --set train.lr=2e-4 --tag keep6-lr2e-4`` would label it, so
finished runs of either command are reused. Writes ``results/truncation[-full].json``/``.md`` and
the truncation table of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS, ROOT, benchmark_config, command_line, run_one
from benchmarks.summarize import replace_block
from diancang.evaluation.report import markdown_table

START, END = "<!-- truncation:start -->", "<!-- truncation:end -->"
VARIANTS: list[tuple[str, int | None, str]] = [
    ("12 layers (all)", None, "trimmed vocabulary"),
    ("first 6 layers", 6, "trimmed, first 6 layers"),
    ("first 3 layers", 3, "trimmed, first 3 layers"),
]


def table(report: dict[str, Any], speeds: dict[str, float]) -> list[str]:
    """Markdown rows: dev micro/macro after every epoch, and the throughput of the variant."""
    n_epochs = max(len(r["epochs"]) for r in report["rows"])
    head = [f"dev macro, epoch {e + 1}" for e in range(n_epochs)]
    rows = []
    for r in report["rows"]:
        per_epoch = [f"{100 * e['dev_macro']:.1f}" for e in r["epochs"]]
        per_epoch += ["–"] * (n_epochs - len(per_epoch))
        speed = speeds.get(r["speed_variant"])
        cells = [
            r["variant"],
            *per_epoch,
            f"{100 * r['final']['micro']:.1f}",
            f"{100 * r['final']['macro']:.1f}",
            "–" if speed is None else f"{speed:.1f}",
        ]
        rows.append(cells)
    header = ["e5-small", *head, "test micro", "test macro", "train sentences/s"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lr", default="2e-4", help="encoder learning rate of every variant")
    p.add_argument("--full", action="store_true", help="all data and epochs (hours)")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench", help="run folders")
    args = p.parse_args(argv)
    rows = []
    for variant, layers, speed_variant in VARIANTS:
        sets = [f"model.keep_layers={'null' if layers is None else layers}", f"train.lr={args.lr}"]
        tag = f"lr{args.lr}" if layers is None else f"keep{layers}-lr{args.lr}"
        label = "joint-cluener" + ("" if args.full else "-quick") + f"-{tag}"
        config = benchmark_config("joint-cluener", not args.full, args.data_dir, sets)
        record = run_one(label, config, "joint", 1, args.work / label, restart=False)
        rows.append(
            {
                "variant": variant,
                "keep_layers": layers,
                "speed_variant": speed_variant,
                "epochs": record["meta"]["dev_per_epoch"][0],
                "final": record["summary"]["final"],
                "meta": record["meta"],
            }
        )
    argv_used = argv if argv is not None else sys.argv[1:]
    report = {
        "command": command_line("benchmarks.truncation", argv_used),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": not args.full,
        "lr": args.lr,
        "rows": rows,
    }
    speed_file = RESULTS / "encoder-speed.json"
    speeds = {}
    if speed_file.is_file():
        speed_rows = json.loads(speed_file.read_text("utf-8"))["rows"]
        speeds = {
            r["variant"]: r["sentences_per_second"]
            for r in speed_rows
            if r["encoder"] == "e5-small"
        }
    lines = table(report, speeds)
    name = "truncation" + ("-full" if args.full else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    first = rows[0]["meta"]
    page = [
        "# The F1 cost of layer truncation (e5-small, joint CLUENER)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {first.get('git_commit')}",
        f"- data: {first.get('dataset')}, {first.get('train_sizes')} training sentences, "
        "macro F1 on the dev split (a seeded 10% of train.json) after each epoch, and on the "
        "test split (the official dev.json) at the end"
        + ("; **quick mode**" if report["quick"] else ""),
        f"- encoder lr {args.lr}; throughput from `results/encoder-speed.md` (measured alone)",
        "",
        *lines,
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(page), "utf-8")
    replace_block(ROOT / "benchmarks" / "README.md", START, END, lines)
    print("\n".join(page))


if __name__ == "__main__":
    main()
