"""Load on ``POST /v1/recognize`` over loopback: ``python -m benchmarks.service_load``.

Builds an archive whose live version is an e5-small tagger (vocabulary trimmed to CLUENER's,
10 CLUENER types; the head is untrained: latency does not depend on the weights' values),
serves it with uvicorn in a separate process on the default backend (ONNX Runtime when
installed), and drives it from this process with
``--clients`` concurrent connections for ``--seconds`` per scenario: one text per request and
32 texts per request. Reports requests/s, texts/s, p50/p99 latency, and how many texts the
service's batcher put into each forward pass. Writes ``results/service-load.json``/``.md``,
a latency plot, and the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import RESULTS, ROOT, command_line
from benchmarks.summarize import replace_block
from diancang.evaluation.report import markdown_table
from diancang.pipeline import machine
from diancang.provenance import git_commit

START, END = "<!-- load:start -->", "<!-- load:end -->"


def untrained_model(folder: Path, data_dir: Path | None, keep_layers: int | None) -> list[str]:
    """Save an e5-small tagger for CLUENER's types in ``folder``; returns CLUENER test texts."""
    from diancang.config import build_config
    from diancang.data.presets import load_preset
    from diancang.pipeline import model_factory

    splits = load_preset("cluener2020", data_dir / "cluener2020" if data_dir else None)
    types = sorted({sp.label for s in splits.train for sp in s.spans})
    model_cfg: dict[str, Any] = {"encoder": "e5-small", "max_length": 64, "trim_vocab": True}
    if keep_layers:
        model_cfg["keep_layers"] = keep_layers
    config = build_config({"model": model_cfg})
    tagger = model_factory(config, "zh", splits.train, splits.train + splits.dev + splits.test)(
        types
    )
    tagger.save_pretrained(folder, run_config=config.model_dump(mode="json"))
    return ["".join(s.tokens) for s in splits.test]


@contextmanager
def serve_archive(model: Path, root: Path, port: int) -> Iterator[tuple[str, str]]:
    """Serve the model folder ``model`` as the live version of a new archive at ``root``, with
    uvicorn in a separate process on the default backend; yields its URL and the backend it
    chose."""
    from diancang.archive import Archive

    archive = Archive(root)
    config = json.loads((model / "config.json").read_text("utf-8"))
    version = archive.add_version(
        model,
        parent=None,
        types=config["types"],
        strategies=[],
        config=config.get("run_config") or {},
        datasets={},
        metrics={},
        gate={"accepted": True, "reasons": ["load test"], "deltas": {}, "new_types": {}},
    )
    archive.promote(version.id)
    code = (
        "import uvicorn; from diancang.service.app import ServiceConfig, create_app; "
        f"uvicorn.run(create_app(ServiceConfig(archive={str(root)!r})), "
        f"host='127.0.0.1', port={port}, log_level='warning')"
    )
    server = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        health: dict[str, Any] = {}
        for _ in range(600):
            try:
                health = httpx.get(f"{base}/healthz").json()
                if health.get("version"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield base, str(health.get("backend"))
    finally:
        server.terminate()
        server.wait(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(base: str, texts: list[str], batch: int, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads posting ``batch`` texts per request for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=120) as h:
            while time.perf_counter() < stop:
                body = {"texts": rng.sample(texts, batch)}
                t0 = time.perf_counter()
                r = h.post("/v1/recognize", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors += r.status_code != 200

    before = httpx.get(f"{base}/v1/stats").json()
    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    after = httpx.get(f"{base}/v1/stats").json()
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100) if n >= 2 else [latencies[0]] * 99
    passes = after["batches"] - before["batches"]
    return {
        "texts_per_request": batch,
        "clients": clients,
        "requests": n,
        "errors": errors,
        "requests_per_second": round(n / wall, 2),
        "texts_per_second": round(n * batch / wall, 1),
        "p50_ms": round(1000 * q[49], 1),
        "p99_ms": round(1000 * q[98], 1),
        "texts_per_forward_pass": round((after["texts"] - before["texts"]) / max(1, passes), 1),
        "requests_per_forward_pass": round(
            (after["requests"] - before["requests"]) / max(1, passes), 2
        ),
    }


def plot(rows: list[dict[str, Any]], path: Path, encoder: str) -> None:
    """Two panels per scenario: texts/s, and p50/p99 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['texts_per_request']} text(s)/req\n{r['clients']} client(s)" for r in rows]
    x = list(range(len(rows)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.bar(x, [r["texts_per_second"] for r in rows], color="#3b6fd4")
    a.set_title("throughput (texts/s)")
    b.bar([i - 0.2 for i in x], [r["p50_ms"] for r in rows], 0.4, label="p50", color="#3b6fd4")
    b.bar([i + 0.2 for i in x], [r["p99_ms"] for r in rows], 0.4, label="p99", color="#e07b39")
    b.set_title("latency per request (ms)")
    b.legend()
    for ax in (a, b):
        ax.set_xticks(x, names, fontsize=8)
    fig.suptitle(f"POST /v1/recognize on loopback, {encoder}, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="length of each scenario")
    p.add_argument("--clients", type=int, default=8, help="concurrent connections")
    p.add_argument("--keep-layers", type=int, default=None, help="serve the first N layers")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets (../shared/data)")
    args = p.parse_args(argv)
    from diancang.data.presets import default_data_dir

    data_dir = args.data_dir or default_data_dir()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        texts = untrained_model(Path(tmp) / "model", data_dir, args.keep_layers)
        with serve_archive(Path(tmp) / "model", Path(tmp) / "archive", free_port()) as (
            base,
            backend,
        ):
            drive(base, texts, 1, 2, 3)  # warm-up
            for batch, clients in ((1, 1), (1, args.clients), (32, 1), (32, args.clients)):
                row = {"backend": backend, **drive(base, texts, batch, clients, args.seconds)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    argv_used = argv if argv is not None else sys.argv[1:]
    mach = machine()
    report: dict[str, Any] = {
        "command": command_line("benchmarks.service_load", argv_used),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": mach,
        "encoder": "e5-small" + (f" (first {args.keep_layers} layers)" if args.keep_layers else ""),
        "rows": rows,
    }
    keys = ["texts_per_request", "clients", "requests_per_second", "texts_per_second"]
    keys += ["p50_ms", "p99_ms", "texts_per_forward_pass", "requests_per_forward_pass", "errors"]
    header = ["texts/request", "clients", "requests/s", "texts/s", "p50 ms", "p99 ms"]
    header += ["texts per forward pass", "requests per forward pass", "errors"]
    table = markdown_table(header, [[str(r[k]) for k in keys] for r in rows])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service-load.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    page = [
        "# Service load: POST /v1/recognize on loopback",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; git commit: {report['git_commit']}",
        f"- machine: {mach['cpu_count']} CPU cores, torch threads {mach['torch_threads']}; "
        f"encoder: {report['encoder']}; CLUENER test texts",
        "",
        *table,
        "",
    ]
    plot(rows, RESULTS / "service-load.png", report["encoder"])
    page += ["![latency and throughput](service-load.png)", ""]
    (RESULTS / "service-load.md").write_text("\n".join(page), "utf-8")
    replace_block(ROOT / "benchmarks" / "README.md", START, END, table)
    print("\n".join(page))


if __name__ == "__main__":
    main()
