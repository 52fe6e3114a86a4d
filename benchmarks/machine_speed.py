"""How fast is this machine today: ``python -m benchmarks.machine_speed [--steps 6]``.

Timings in ``results/`` come from sessions on different hosts of the same kind (2 cores), and
hosts differ several-fold. Run this (about a minute) before a timed benchmark, alone on the
cores, so that a later reader can tell whether two runs' seconds are comparable. It measures
fp32 matrix-multiply GFLOP/s (2048 x 2048, 1 and all threads) and the training step of the
benchmarks' usual encoder (e5-small, trimmed vocabulary, first 6 layers, 32 CLUENER sentences
of at most 64 sub-tokens: :func:`benchmarks.encoder_speed.measure`, whose table holds the
reference). Each measurement is appended to ``benchmarks/results/machine-speed.json`` and the
history is written as ``machine-speed.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import torch

from benchmarks.encoder_speed import measure
from benchmarks.run import RESULTS, command_line, save_result
from diancang.data.presets import default_data_dir
from diancang.evaluation.report import markdown_table
from diancang.pipeline import machine
from diancang.provenance import git_commit, matmul_gflops

REFERENCE = {"trim_vocab": True, "keep_layers": 6}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=6, help="timed encoder batches")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    step = measure("e5-small", REFERENCE, args.steps, default_data_dir())
    row = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command_line("benchmarks.machine_speed", argv or sys.argv[1:]),
        "machine": machine(),
        "matmul_gflops_1_thread": matmul_gflops(1),
        f"matmul_gflops_{threads}_threads": matmul_gflops(threads),
        "e5_small_6_layers_seconds_per_batch": step["seconds_per_batch"],
    }
    print(json.dumps(row), flush=True)
    path = RESULTS / "machine-speed.json"
    rows = json.loads(path.read_text("utf-8")) if path.exists() else []
    rows.append(row)
    cells = [
        [
            r["date"],
            r["git_commit"],
            r["machine"]["platform"],
            str(r["matmul_gflops_1_thread"]),
            str(r[f"matmul_gflops_{r['machine']['torch_threads']}_threads"]),
            str(r["e5_small_6_layers_seconds_per_batch"]),
        ]
        for r in rows
    ]
    header = ["date", "commit", "platform", "GFLOP/s 1 thread", "GFLOP/s all threads"]
    header += ["e5-small 6 layers s/batch"]
    md = [
        "# Machine speed, one row a measurement",
        "",
        "`python -m benchmarks.machine_speed`: fp32 2048 x 2048 matrix products, and one "
        "training step (forward, backward, AdamW) of e5-small with trimmed vocabulary and 6 "
        "layers on 32 CLUENER sentences of at most 64 sub-tokens (the reference row of "
        "[encoder-speed.md](encoder-speed.md)).",
        "",
        *markdown_table(header, cells),
        "",
    ]
    save_result("machine-speed", rows, "\n".join(md))


if __name__ == "__main__":
    main()
