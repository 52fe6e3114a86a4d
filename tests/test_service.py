"""Incremental learning over the archive, and the HTTP service on top of it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from diancang.archive import Archive
from diancang.config import build_config
from diancang.data.writers import write_jsonl
from diancang.errors import DataError
from diancang.incremental import bootstrap, learn_step
from tests.toy import toy_sentences

TRAIN = {"epochs": 12, "batch_size": 8, "lr": 3e-3, "head_lr": 5e-3, "progress": False}


def base_config(tmp: Path):
    data = toy_sentences(70, seed=1)
    write_jsonl(tmp / "base.jsonl", [s.keep_types(["PER", "LOC"]) for s in data])
    return build_config(
        {
            "output_dir": str(tmp / "boot"),
            "data": {
                "preset": None,
                "train": str(tmp / "base.jsonl"),
                "test": str(tmp / "base.jsonl"),
                "format": "jsonl",
            },
            "model": {"tiny_layers": 1, "tiny_hidden": 32},
            "train": TRAIN,
            "strategies": ["distill"],
        }
    )


def upload(tmp: Path, types: list[str], n: int = 40) -> Path:
    path = tmp / f"new-{'-'.join(types)}.jsonl"
    write_jsonl(path, [s.keep_types(types) for s in toy_sentences(n, seed=5)])
    return path


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory) -> Path:
    """An archive with version 1 (PER, LOC) live, built once for this module."""
    tmp = tmp_path_factory.mktemp("svc")
    outcome = bootstrap(Archive(tmp / "archive"), base_config(tmp))
    assert outcome.version.id == 1
    return tmp


def fresh_copy(archive_dir: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(archive_dir / "archive", tmp_path / "archive")
    return tmp_path / "archive"


def test_bootstrap_then_learn_registers_a_scored_candidate(archive_dir, tmp_path):
    store = Archive(fresh_copy(archive_dir, tmp_path))
    first = store.live()
    assert first is not None and first.types == ["LOC", "PER"] and first.status == "live"
    assert set(first.metrics["per_type"]) == {"LOC", "PER"}
    notes: list[str] = []
    outcome = learn_step(store, upload(tmp_path, ["ORG"]), progress=lambda f, m: notes.append(m))
    v = outcome.version
    assert (v.id, v.parent, v.status) == (2, 1, "candidate")
    assert v.types == ["LOC", "PER", "ORG"] and v.strategies == ["distill@1"]
    assert set(v.metrics["per_type"]) == {"LOC", "PER", "ORG"}  # every retained dev set
    assert len(v.datasets) == 2 and set(outcome.decision["deltas"]) == {"LOC", "PER"}
    assert notes[0].startswith("loading version 1") and "gate" in notes[-1]
    assert store.live() is not None and store.live().id == 1  # registering is not promoting


def test_learning_data_without_a_new_type_is_refused(archive_dir, tmp_path):
    store = Archive(fresh_copy(archive_dir, tmp_path))
    with pytest.raises(DataError, match="names no type that version 1 lacks"):
        learn_step(store, upload(tmp_path, ["PER"]))


# ----------------------------------------------------------------------------- HTTP


def client(archive: Path, token: str | None = "s3cret"):
    from fastapi.testclient import TestClient

    from diancang.service.app import ServiceConfig, create_app

    config = ServiceConfig(archive=archive, token=token, max_body_bytes=20_000, max_texts=4)
    return TestClient(create_app(config))


AUTH = {"Authorization": "Bearer s3cret"}


def test_recognize_types_and_limits(archive_dir, tmp_path):
    with client(fresh_copy(archive_dir, tmp_path)) as c:
        assert c.get("/healthz").json() == {"status": "ok", "version": 1, "backend": "onnx"}
        assert c.get("/v1/types").json()["types"] == ["LOC", "PER"]
        r = c.post("/v1/recognize", json={"texts": ["张三在北京工作", "today"]})
        assert r.status_code == 200
        body = r.json()
        assert body["version"] == 1 and [x["text"] for x in body["results"]] == [
            "张三在北京工作",
            "today",
        ]
        for e in body["results"][0]["entities"]:
            assert "张三在北京工作"[e["start"] : e["end"]] == e["text"]
        assert c.post("/v1/recognize", json={"text": "李四"}).status_code == 200
        # task-incremental: only the types asked for
        r = c.post("/v1/recognize", json={"texts": ["张三在北京工作"], "types": ["LOC"]})
        assert {e["type"] for e in r.json()["results"][0]["entities"]} <= {"LOC"}
        r = c.post("/v1/recognize", json={"text": "张三", "types": ["ORG"]})
        assert r.status_code == 422 and "unknown types ['ORG']" in r.json()["detail"]
        r = c.post("/v1/recognize", json={"texts": ["好", "x" * 2001]})
        assert r.status_code == 422 and "text 1" in r.json()["detail"]
        assert c.post("/v1/recognize", json={"texts": ["a"] * 5}).status_code == 413
        big = json.dumps({"text": "字" * 8000})
        r = c.post("/v1/recognize", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/recognize", json={"texts": []}).status_code == 422
        assert c.post("/v1/recognize", content=b"{not json").status_code == 422


def test_mutations_need_the_token(archive_dir, tmp_path):
    archive = fresh_copy(archive_dir, tmp_path)
    with client(archive) as c:
        assert c.post("/v1/rollback").status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        assert c.post("/v1/jobs", content=b"{}", headers=bad).status_code == 401
    with client(archive, token=None) as c:
        assert c.post("/v1/rollback", headers=AUTH).status_code == 403


def test_bad_upload_names_its_line(archive_dir, tmp_path):
    with client(fresh_copy(archive_dir, tmp_path)) as c:
        good = upload(tmp_path, ["ORG"], n=3).read_text("utf-8").splitlines()
        text = "\n".join([good[0], "{broken", good[1]]) + "\n"
        r = c.post("/v1/jobs", content=text.encode(), headers=AUTH)
        assert r.status_code == 422 and "line 2:" in r.json()["detail"]


def say_lang(path, fmt, lang, *rest):
    """Stands in for the upload check (in the checking process): names the language."""
    return f"read as {lang}", 0


def test_uploads_are_read_in_the_language_of_the_versions_tagger(
    archive_dir, tmp_path, monkeypatch
):
    """A preset's language lives in the tagger, not in the run config's data.lang (which keeps
    its default): the service must read an upload as the tagger reads text."""
    import sqlite3

    root = fresh_copy(archive_dir, tmp_path)
    with sqlite3.connect(root / "archive.sqlite3") as con:  # a config that says en, a zh tagger
        (raw,) = con.execute("SELECT config FROM versions WHERE id = 1").fetchone()
        config = json.loads(raw)
        config["data"]["lang"] = "en"
        con.execute("UPDATE versions SET config = ? WHERE id = 1", (json.dumps(config),))
    monkeypatch.setattr("diancang.service.app.check_upload_file", say_lang)
    with client(root) as c:
        r = c.post("/v1/jobs", content=upload(tmp_path, ["ORG"]).read_bytes(), headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"] == "upload rejected: read as zh"
    assert not list((root / "scratch").iterdir())  # the rejected upload's folder is gone


def test_learn_over_http_promote_and_roll_back(archive_dir, tmp_path):
    with client(fresh_copy(archive_dir, tmp_path)) as c:
        data = upload(tmp_path, ["ORG"]).read_bytes()
        r = c.post("/v1/jobs", content=data, headers=AUTH)
        assert r.status_code == 202
        job_id = r.json()["job"]
        deadline = time.time() + 120
        while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.time() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "done", job
        version = job["result"]["version"]
        assert version == 2 and job["log"]
        versions = c.get("/v1/versions").json()
        assert versions["live"] == 1 and [v["id"] for v in versions["versions"]] == [1, 2]
        r = c.post(f"/v1/versions/{version}/promote", json={"force": True}, headers=AUTH)
        assert r.json() == {"live": 2}
        assert "ORG" in c.get("/v1/types").json()["types"]
        assert c.post("/v1/recognize", json={"text": "腾讯公司"}).json()["version"] == 2
        assert c.post("/v1/rollback", headers=AUTH).json() == {"live": 1}
        assert c.get("/v1/types").json()["types"] == ["LOC", "PER"]
        d = c.get("/v1/versions/1/diff/2").json()
        assert d  # the archive's diff of the two versions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(config) -> Iterator[str]:
    """The service on a loopback port in a thread of this process; yields its base URL."""
    import httpx
    import uvicorn

    from diancang.service.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def test_promotion_under_a_burst_of_requests_loses_none(archive_dir, tmp_path):
    """Real server on loopback: 8 threads x 25 requests while versions are swapped."""
    import httpx

    from diancang.incremental import learn_step as learn
    from diancang.service.app import ServiceConfig

    archive = fresh_copy(archive_dir, tmp_path)
    learn(Archive(archive), upload(tmp_path, ["ORG"]))

    def burst(base: str, i: int) -> list[int]:
        seen = []
        with httpx.Client(base_url=base, timeout=30) as h:
            for j in range(25):
                r = h.post("/v1/recognize", json={"texts": [f"张三在北京工作{i}{j}"]})
                assert r.status_code == 200, r.text
                seen.append(r.json()["version"])
        return seen

    config = ServiceConfig(archive=archive, token="s3cret")
    with live_server(config) as base, ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(burst, base, i) for i in range(8)]
        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as h:
            for k in range(6):
                if k % 2 == 0:
                    r = h.post("/v1/versions/2/promote", json={"force": True})
                else:
                    r = h.post("/v1/rollback")
                assert r.status_code == 200, r.text
        versions = [v for f in futures for v in f.result()]
    assert len(versions) == 200 and set(versions) <= {1, 2}


def test_archive_commands(archive_dir, tmp_path):
    from typer.testing import CliRunner

    from diancang.cli import app

    runner = CliRunner()
    archive = str(fresh_copy(archive_dir, tmp_path))
    data = str(upload(tmp_path, ["ORG"]))
    r = runner.invoke(app, ["learn", "--data", data, "--archive", archive, "--type-text", "ORG"])
    assert r.exit_code == 2 and "is not NAME=TEXT" in r.output
    r = runner.invoke(
        app,
        [
            "learn",
            "--data",
            data,
            "--archive",
            archive,
            "--epochs",
            "12",
            "--type-text",
            "ORG=机构",
        ],
    )
    assert r.exit_code == 0, r.output
    gate = json.loads(r.output[r.output.index("{") :])["gate"]
    assert Archive(archive).get(2).config["types"] == {"ORG": "机构"}
    r = runner.invoke(app, ["predict", archive, "--version", "2", "张三在北京工作"])
    assert r.exit_code == 0 and json.loads(r.output)["text"] == "张三在北京工作", r.output
    r = runner.invoke(app, ["versions", "--archive", archive])
    assert r.exit_code == 0 and "live" in r.output and "candidate" in r.output
    r = runner.invoke(app, ["promote", "2", "--archive", archive])
    if gate["accepted"]:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and "the gate rejected version 2" in r.output
        r = runner.invoke(app, ["promote", "2", "--archive", archive, "--force"])
        assert r.exit_code == 0, r.output
    assert Archive(archive).live().id == 2
    r = runner.invoke(app, ["diff", "1", "2", "--archive", archive])
    assert r.exit_code == 0 and json.loads(r.output)["types_added"] == ["ORG"]
    r = runner.invoke(app, ["rollback", "--archive", archive])
    assert r.exit_code == 0 and "version 1 is live" in r.output
    r = runner.invoke(app, ["rollback", "--archive", archive])
    assert r.exit_code == 2 and "error:" in r.output  # nothing before version 1
    r = runner.invoke(
        app, ["learn", "--data", str(tmp_path / "missing.jsonl"), "--archive", archive]
    )
    assert r.exit_code == 2 and "data file not found" in r.output
