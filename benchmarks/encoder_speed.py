"""Training throughput of encoder variants: ``python -m benchmarks.encoder_speed [--steps 6]``.

Times forward + backward + AdamW step on batches of 32 CLUENER sentences (max length 64) for
e5-small and minilm-l6, untrimmed and with vocabulary trimming, frozen embeddings and layer
truncation. Writes ``benchmarks/results/encoder-speed.json`` and ``.md`` and refreshes the speed
table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks.run import RESULTS, ROOT, command_line
from benchmarks.summarize import replace_block
from diancang.config import build_config
from diancang.data.presets import default_data_dir, load_preset
from diancang.evaluation.report import markdown_table
from diancang.model.features import collate
from diancang.pipeline import model_factory
from diancang.provenance import git_commit

VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("e5-small", "full vocabulary (250k), 12 layers", {}),
    ("e5-small", "frozen word embeddings", {"freeze_embeddings": True}),
    ("e5-small", "trimmed vocabulary", {"trim_vocab": True}),
    ("e5-small", "trimmed, first 6 layers", {"trim_vocab": True, "keep_layers": 6}),
    ("e5-small", "trimmed, first 3 layers", {"trim_vocab": True, "keep_layers": 3}),
    ("minilm-l6", "full vocabulary (30k), 6 layers", {}),
    ("minilm-l6", "trimmed vocabulary", {"trim_vocab": True}),
]
START, END = "<!-- speed:start -->", "<!-- speed:end -->"


def measure(encoder: str, options: dict[str, Any], steps: int, data_dir: Path | None) -> dict:
    """Sentences/s of training steps for one encoder variant."""
    preset = "cluener2020" if encoder == "e5-small" else "conll2003"
    splits = load_preset(preset, data_dir / preset if data_dir else None)
    rng = random.Random(1)
    train = rng.sample(splits.train, 32 * (steps + 2))
    cfg = build_config({"model": {"encoder": encoder, "max_length": 64, **options}})
    began = time.perf_counter()
    model = model_factory(cfg, splits.lang, splits.train, splits.train + splits.dev)(["A", "B"])
    load_s = time.perf_counter() - began
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for k in range(steps + 2):
        chunk = train[32 * k : 32 * (k + 1)]
        batch = collate(
            [model.encode(s.tokens) for s in chunk],
            [[0] * len(s.tokens) for s in chunk],
            model.token_encoder.pad_id,
        )
        t0 = time.perf_counter()
        out = model(**batch)
        loss = model.loss(out, batch["labels"], batch["word_mask"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if k >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    emb = model.encoder.get_input_embeddings().weight  # type: ignore[operator]
    return {
        "encoder": encoder,
        "options": options,
        "sentences_per_second": round(32 * len(times) / sum(times), 1),
        "seconds_per_batch": round(sum(times) / len(times), 3),
        "embedding_rows": int(emb.shape[0]),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "trainable_m": round(
            sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1
        ),
        "build_seconds": round(load_s, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=6, help="timed batches per variant")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    args = p.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    rows = []
    for encoder, label, options in VARIANTS:
        row = measure(encoder, options, args.steps, data_dir)
        row["variant"] = label
        print(json.dumps(row), flush=True)
        rows.append(row)
    argv_used = argv if argv is not None else sys.argv[1:]
    report = {
        "command": command_line("benchmarks.encoder_speed", argv_used),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "batch": "32 sentences, max 64 sub-tokens, forward + backward + AdamW step",
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoder-speed.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    cells = [
        [str(r[k]) for k in ("encoder", "variant", "sentences_per_second", "seconds_per_batch")]
        + [f"{r['embedding_rows']:,}", str(r["parameters_m"]), str(r["trainable_m"])]
        for r in rows
    ]
    header = ["encoder", "variant", "sentences/s", "s/batch", "embedding rows", "params (M)"]
    header += ["trainable (M)"]
    table = markdown_table(header, cells)
    md = [
        f"# Encoder training throughput\n\n- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- machine: {report['machine']}; batch: {report['batch']}",
        "",
        *table,
        "",
    ]
    (RESULTS / "encoder-speed.md").write_text("\n".join(md), "utf-8")
    replace_block(ROOT / "benchmarks" / "README.md", START, END, table)


if __name__ == "__main__":
    main()
