"""Inference speed on CPU: ``python -m benchmarks.inference --model DIR``.

One e5-small tagger (6 layers) and the same CLUENER test texts through: a plain Hugging Face
``pipeline("token-classification")`` on e5-small cut to the same layers (what a user would run
otherwise), diancang's PyTorch path, and diancang on ONNX Runtime in fp32 and int8; each at
batch 1 and 32 (sentences/s, p50/p99 latency per call, the fraction of the forward-pass roof),
then the service on the default backend under 1 and 8 clients. With a trained model folder,
``--model`` also scores strict macro/micro F1 on the test set per backend (int8's cost).
Writes ``results/inference.json``/``.md``/``.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS, command_line
from diancang.evaluation.report import markdown_table
from diancang.pipeline import machine
from diancang.provenance import git_commit

#: Peak of the 2 AVX2 cores this project measures on (results/step-cost.md): 2 x 2.45 GHz x 32
#: fp32 FLOP per cycle (two FMA units of 8 lanes).
PEAK_GFLOPS = 157.0


def forward_gflop(hidden: int, layers: int, tokens: float) -> float:
    """FLOPs of one encoder forward pass on ``tokens`` tokens: 2 x (4 H^2 attention + 8 H^2
    feed-forward) per token and layer, plus 4 T^2 H for the attention scores and mixing."""
    per_layer = 2 * 12 * hidden * hidden * tokens + 4 * tokens * tokens * hidden
    return layers * per_layer / 1e9


def timed(call: Callable[[list[str]], Any], texts: list[str], batch: int) -> dict[str, float]:
    """Sentences/s and p50/p99 latency (ms) of ``call`` over ``texts`` in batches."""
    call(texts[:batch])  # warm-up
    latencies = []
    began = time.perf_counter()
    for lo in range(0, len(texts), batch):
        t0 = time.perf_counter()
        call(texts[lo : lo + batch])
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "sentences_per_second": round(len(texts) / wall, 1),
        "p50_ms": round(1000 * q[49], 1),
        "p99_ms": round(1000 * q[98], 1),
    }


def hf_pipeline(layers: int, labels: int) -> Callable[[list[str]], Any]:
    """The plain transformers pipeline on e5-small's first ``layers`` layers (random head)."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, pipeline

    from diancang.model.encoder import resolve_name

    path = resolve_name("e5-small")
    config = AutoConfig.from_pretrained(path, num_labels=labels, num_hidden_layers=layers)
    model = AutoModelForTokenClassification.from_pretrained(path, config=config)
    pipe = pipeline(
        "token-classification",
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(path),
        aggregation_strategy="simple",
        device=-1,
    )
    return lambda texts: pipe(texts, batch_size=len(texts))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a saved e5-small model folder")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    p.add_argument("--texts", type=int, default=1343, help="test texts for batch 32")
    p.add_argument("--single", type=int, default=200, help="texts sent one at a time")
    p.add_argument("--seconds", type=float, default=15, help="each service scenario")
    args = p.parse_args(argv)

    from benchmarks.service_load import drive, free_port, serve_archive
    from diancang.data.presets import default_data_dir, load_preset
    from diancang.learn.evaluate import evaluate
    from diancang.model import onnx_backend
    from diancang.model.tagger import Tagger
    from diancang.predict import recognize

    data_dir = args.data_dir or default_data_dir()
    splits = load_preset("cluener2020", data_dir / "cluener2020" if data_dir else None)
    test = splits.test[: args.texts]
    texts = ["".join(s.tokens) for s in test]
    tagger = Tagger.from_pretrained(args.model)
    enc: Any = getattr(tagger.encoder, "config")  # noqa: B009
    tokens = statistics.mean(len(s.tokens) + 2 for s in test)
    gflop = forward_gflop(enc.hidden_size, enc.num_hidden_layers, tokens)
    roof = PEAK_GFLOPS / gflop
    rows: list[dict[str, Any]] = []
    scores: dict[str, dict[str, float]] = {}

    def measure(name: str, call: Callable[[list[str]], Any]) -> None:
        for batch, sample in ((1, texts[: args.single]), (32, texts)):
            speed = timed(call, sample, batch)
            row: dict[str, Any] = {"path": name, "batch": batch, **speed}
            row["of_roof"] = round(speed["sentences_per_second"] / roof, 3)
            print(json.dumps(row), flush=True)
            rows.append(row)

    measure("transformers pipeline", hf_pipeline(enc.num_hidden_layers, len(tagger.labels)))
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("torch", "onnx", "onnx-int8"):
            tagger.runtime = None
            onnx_backend.pick_backend(tagger, backend, Path(tmp) / backend)
            measure(f"diancang {backend}", lambda batch: recognize(tagger, batch, 32))
            s = evaluate(tagger, test, tagger.types)
            scores[backend] = {"micro": round(s.f1, 4), "macro": round(s.macro_f1, 4)}
            print(backend, scores[backend], flush=True)
        service = []
        with serve_archive(args.model, Path(tmp) / "archive", free_port()) as (base, backend):
            drive(base, texts, 1, 2, 3)  # warm-up
            for clients in (1, 8):
                row = {"backend": backend, **drive(base, texts, 1, clients, args.seconds)}
                print(json.dumps(row), flush=True)
                service.append(row)

    argv_used = argv if argv is not None else sys.argv[1:]
    report = {
        "command": command_line("benchmarks.inference", argv_used),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "model": str(args.model),
        "encoder": f"e5-small, {enc.num_hidden_layers} layers, hidden {enc.hidden_size}",
        "texts": f"CLUENER test, {len(texts)} texts, mean {tokens:.1f} tokens with [CLS]/[SEP]",
        "forward_gflop": round(gflop, 3),
        "roof_sentences_per_second": round(roof, 1),
        "rows": rows,
        "f1": scores,
        "service": service,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    page = render(report)
    (RESULTS / "inference.md").write_text(page, "utf-8")
    plot(report, RESULTS / "inference.png")
    print(page)


def render(report: dict[str, Any]) -> str:
    """The Markdown page of a report."""
    rows = report["rows"]
    base = {r["batch"]: r["sentences_per_second"] for r in rows if r["path"].startswith("trans")}
    lines = [
        "# Inference speed on CPU",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- machine: {report['machine']['cpu_count']} CPU cores, torch threads "
        f"{report['machine']['torch_threads']}; model: `{report['model']}` ({report['encoder']})",
        f"- texts: {report['texts']}; one forward pass {report['forward_gflop']} GFLOP, so the "
        f"roof at {PEAK_GFLOPS:.0f} GFLOP/s is {report['roof_sentences_per_second']} sentences/s",
        "",
    ]
    speed = [
        [
            r["path"],
            str(r["batch"]),
            str(r["sentences_per_second"]),
            f"{r['sentences_per_second'] / base[r['batch']]:.2f}",
            f"{r['of_roof']:.2f}",
            str(r["p50_ms"]),
            str(r["p99_ms"]),
        ]
        for r in rows
    ]
    header = ["path", "batch", "sentences/s", "x pipeline", "of the roof", "p50 ms", "p99 ms"]
    lines += markdown_table(header, speed)
    lines += ["", "Strict F1 (%) on the same test texts, all types:", ""]
    scores = report["f1"]
    f1 = [[n, f"{100 * s['micro']:.2f}", f"{100 * s['macro']:.2f}"] for n, s in scores.items()]
    lines += markdown_table(["backend", "micro F1", "macro F1"], f1)
    lines += ["", "The service (`POST /v1/recognize`, one text a request, loopback):", ""]
    keys = ["backend", "clients", "texts_per_second", "p50_ms", "p99_ms", "errors"]
    service = [[str(r[k]) for k in keys] for r in report["service"]]
    header = ["backend", "clients", "texts/s", "p50 ms", "p99 ms", "errors"]
    lines += markdown_table(header, service)
    return "\n".join([*lines, "", "![sentences per second](inference.png)", ""])


def plot(report: dict[str, Any], path: Path) -> None:
    """Sentences/s per path at batch 1 and 32, with the roof."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = list(dict.fromkeys(r["path"] for r in report["rows"]))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for k, batch in enumerate((1, 32)):
        values = [
            next(
                r["sentences_per_second"]
                for r in report["rows"]
                if r["path"] == p and r["batch"] == batch
            )
            for p in paths
        ]
        ax.bar([i + 0.4 * k - 0.2 for i in range(len(paths))], values, 0.4, label=f"batch {batch}")
    ax.axhline(report["roof_sentences_per_second"], color="k", ls="--", lw=1, label="roof")
    ax.set_xticks(range(len(paths)), paths, fontsize=8)
    ax.set_ylabel("sentences/s")
    ax.legend()
    ax.set_title(f"{report['encoder']}, {report['machine']['cpu_count']} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
