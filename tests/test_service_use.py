"""The service under real use: long texts, uploads checked before a job, the archive's live
version followed, and one error shape (issue 18's list, loopback and in-process only)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from diancang.archive import Archive
from diancang.data.record import Span
from diancang.data.writers import write_jsonl
from diancang.incremental import learn_step
from tests.test_service import (  # noqa: F401
    AUTH,
    archive_dir,
    client,
    fresh_copy,
    live_server,
    upload,
)
from tests.toy import toy_sentences


def _named(tmp: Path, name: str, label: str, n: int = 20) -> bytes:
    """An upload whose ORG mentions are called ``label`` (its 3rd sentence the first with one)."""
    sentences = [
        replace(s, spans=[replace(sp, label=label) for sp in s.spans])
        for s in (s.keep_types(["ORG"]) for s in toy_sentences(n, seed=5))
    ]
    path = tmp / f"{name}.jsonl"
    write_jsonl(path, sentences)
    return path.read_bytes()


def test_a_long_text_is_tagged_whole(archive_dir, tmp_path):  # noqa: F811
    with client(fresh_copy(archive_dir, tmp_path)) as c:
        short = c.post("/v1/recognize", json={"text": "张三在北京工作"}).json()["results"][0]
        assert short["entities"], "the toy model should find 张三 / 北京"
        text = "的" * 130 + "张三在北京工作"  # past the model's 64-piece window
        long = c.post("/v1/recognize", json={"text": text}).json()["results"][0]
        moved = [{**e, "start": e["start"] - 130, "end": e["end"] - 130} for e in long["entities"]]
        assert [(e["start"], e["end"], e["type"]) for e in moved] == [
            (e["start"], e["end"], e["type"]) for e in short["entities"]
        ]


@pytest.mark.parametrize(
    ("label", "rule"),
    [("O", "'O'"), ("B-PER", "'B-PER'"), ("<b>x</b>", "'<b>x</b>'"), ("名" * 5000, "...")],
)
def test_bad_type_names_are_refused_before_a_job_naming_the_line(
    archive_dir,  # noqa: F811
    tmp_path,
    label,
    rule,
):
    root = fresh_copy(archive_dir, tmp_path)
    with client(root) as c:
        r = c.post("/v1/jobs", content=_named(tmp_path, "bad", label), headers=AUTH)
    detail = r.json()["detail"]
    assert r.status_code == 422 and "is not allowed" in detail and rule in detail
    assert detail.startswith("upload rejected: line 2:")  # toy sentence 2 is the first with ORG
    assert str(tmp_path) not in detail and "/tmp" not in detail
    assert not list((root / "scratch").iterdir())  # the rejected upload is not kept


def test_uploads_that_cannot_teach_are_refused_before_202(archive_dir, tmp_path):  # noqa: F811
    root = fresh_copy(archive_dir, tmp_path)
    with client(root) as c:
        known = upload(tmp_path, ["PER"]).read_bytes()
        r = c.post("/v1/jobs", content=known, headers=AUTH)
        assert r.status_code == 422 and "names no type that version 1 lacks" in r.json()["detail"]
        few = upload(tmp_path, ["ORG"], n=7).read_bytes().splitlines()[1:6:2]  # 3 lines, 2 ORG
        r = c.post("/v1/jobs", content=b"\n".join(few), headers=AUTH)
        assert r.status_code == 422 and "at least 5" in r.json()["detail"]
        many = [
            replace(s, spans=[Span(0, 1, f"T{i}")]) for i, s in enumerate(toy_sentences(30, seed=2))
        ]
        write_jsonl(tmp_path / "many.jsonl", many)
        r = c.post("/v1/jobs", content=(tmp_path / "many.jsonl").read_bytes(), headers=AUTH)
        assert r.status_code == 422 and "30 new types" in r.json()["detail"]
        for detail in (r.json()["detail"],):
            assert str(root) not in detail


def test_one_error_shape_404_for_unknown_versions_and_the_bearer_scheme(
    archive_dir,  # noqa: F811
    tmp_path,
):
    root = fresh_copy(archive_dir, tmp_path)
    with client(root) as c:
        r = c.post("/v1/versions/99/promote", json={"force": True}, headers=AUTH)
        assert r.status_code == 404 and "no version 99" in r.json()["detail"]
        assert str(root) not in r.json()["detail"]
        assert c.get("/v1/versions/1/diff/99").status_code == 404
        lower = {"Authorization": "bearer s3cret"}
        r = c.post("/v1/versions/1/promote", json={"force": "yes"}, headers=lower)
        assert r.status_code == 422, r.text  # strict: "yes" is not a boolean
        assert isinstance(r.json()["detail"], str) and "force" in r.json()["detail"]
        r = c.post("/v1/versions/1/promote", json={"force": True}, headers=lower)
        assert r.status_code == 200 and r.json() == {"live": 1}
        assert isinstance(c.get("/v1/jobs/abc").json()["detail"], str)


def test_a_promotion_from_the_command_line_reaches_the_running_service(
    archive_dir,  # noqa: F811
    tmp_path,
):
    from typer.testing import CliRunner

    from diancang.cli import app

    root = fresh_copy(archive_dir, tmp_path)
    learn_step(Archive(root), upload(tmp_path, ["ORG"]))
    with client(root) as c:
        assert c.post("/v1/recognize", json={"text": "腾讯"}).json()["version"] == 1
        r = CliRunner().invoke(app, ["promote", "2", "--force", "--archive", str(root)])
        assert r.exit_code == 0, r.output
        began = time.monotonic()
        while c.post("/v1/recognize", json={"text": "腾讯"}).json()["version"] != 2:
            assert time.monotonic() - began < 1.0, "the service still serves version 1"
            time.sleep(0.02)
        assert c.get("/v1/types").json()["types"] == ["LOC", "PER", "ORG"]
        versions = c.get("/v1/versions").json()
        assert versions["live"] == versions["serving"] == 2
        r = CliRunner().invoke(app, ["rollback", "--archive", str(root)])
        began = time.monotonic()
        while c.get("/healthz").json()["version"] != 1:
            assert time.monotonic() - began < 1.0, "the rollback did not reach the service"
            time.sleep(0.02)


def _wait(c, job_id: int, until, seconds: float = 120.0) -> dict:
    began = time.monotonic()
    while not until(job := c.get(f"/v1/jobs/{job_id}").json()):
        assert time.monotonic() - began < seconds, job
        time.sleep(0.05)
    return job


def test_jobs_are_listed_move_per_batch_and_can_be_cancelled(archive_dir, tmp_path):  # noqa: F811
    from fastapi.testclient import TestClient

    from diancang.service.app import ServiceConfig, create_app

    root = fresh_copy(archive_dir, tmp_path)
    config = ServiceConfig(archive=root, token="s3cret", learn={"train": {"epochs": 200}})
    with TestClient(create_app(config)) as c:
        data = upload(tmp_path, ["ORG"]).read_bytes()
        first = c.post("/v1/jobs", content=data, headers=AUTH).json()
        second = c.post("/v1/jobs", content=data, headers=AUTH).json()
        assert first["sentences"] == 40 and second["job"] == first["job"] + 1
        r = c.delete(f"/v1/jobs/{second['job']}", headers=AUTH)
        assert r.json()["status"] == "cancelled"  # queued: at once
        seen = set()
        job = _wait(c, first["job"], lambda j: j["status"] == "running" and j["progress"] > 0.1)
        for _ in range(40):
            seen.add(c.get(f"/v1/jobs/{first['job']}").json()["progress"])
            time.sleep(0.02)
        assert len(seen) >= 2, "the progress did not move between batches"
        assert c.delete(f"/v1/jobs/{first['job']}").status_code == 401
        c.delete(f"/v1/jobs/{first['job']}", headers=AUTH)
        job = _wait(c, first["job"], lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "cancelled" and job["error"] == "cancelled while running"
        listed = c.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [second["job"], first["job"]]
        assert c.get("/v1/jobs/999").status_code == 404
        assert [v["id"] for v in c.get("/v1/versions").json()["versions"]] == [1]
    assert not list((root / "scratch").iterdir())  # both uploads removed


def test_a_job_survives_kill_9_of_the_server_as_failed_and_its_scratch_goes(
    archive_dir,  # noqa: F811
    tmp_path,
):
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.test_service import free_port

    root = fresh_copy(archive_dir, tmp_path)

    def start() -> tuple[subprocess.Popen, str]:
        port = free_port()
        cmd = [sys.executable, "-m", "diancang.cli", "serve", "--archive", str(root)]
        cmd += ["--port", str(port), "--learn-epochs", "300"]
        env = {**os.environ, "DIANCANG_TOKEN": "s3cret"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    return proc, base
            except httpx.TransportError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError(proc.stderr.read().decode() if proc.stderr else "no server")

    proc, base = start()
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as h:
            job = h.post("/v1/jobs", content=upload(tmp_path, ["ORG"]).read_bytes()).json()
            began = time.monotonic()
            while h.get(f"/v1/jobs/{job['job']}").json()["status"] != "running":
                assert time.monotonic() - began < 60
                time.sleep(0.05)
            assert list((root / "scratch").iterdir())  # the upload and the step at work
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc, base = start()
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as h:
            after = h.get(f"/v1/jobs/{job['job']}").json()
            assert after["status"] == "failed" and after["error"].startswith("interrupted")
            assert not list((root / "scratch").iterdir())
            again = h.post("/v1/jobs", content=upload(tmp_path, ["ORG"]).read_bytes()).json()
            assert again["job"] == job["job"] + 1  # ids are never given twice
            h.delete(f"/v1/jobs/{again['job']}")
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_large_upload_neither_stalls_requests_nor_trains_unbounded(
    archive_dir,  # noqa: F811
    tmp_path,
):
    import threading

    import httpx

    from diancang.service.app import ServiceConfig

    root = fresh_copy(archive_dir, tmp_path)
    big = tmp_path / "big.jsonl"
    write_jsonl(big, [s.keep_types(["ORG"]) for s in toy_sentences(60_000, seed=5)])
    config = ServiceConfig(
        archive=root, token="s3cret", max_job_sentences=500, learn={"train": {"epochs": 1}}
    )
    answer: dict = {}

    def send(base: str) -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as h:
            answer.update(h.post("/v1/jobs", content=big.read_bytes()).json())

    with live_server(config) as base:
        sender = threading.Thread(target=send, args=(base,))
        sender.start()
        slowest = 0.0
        with httpx.Client(base_url=base, timeout=30) as h:
            while sender.is_alive():
                began = time.monotonic()
                assert h.post("/v1/recognize", json={"text": "张三在北京"}).status_code == 200
                slowest = max(slowest, time.monotonic() - began)
                time.sleep(0.05)
            sender.join()
            assert answer["sentences"] == 60_000, answer
            assert slowest < 1.0, f"a request waited {slowest:.1f}s while the upload was read"
            began = time.monotonic()
            while (job := h.get(f"/v1/jobs/{answer['job']}").json())["status"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() - began < 120, job
                time.sleep(0.2)
    assert any("seeded 500 of 60,000 sentences" in line for line in job["log"]), job


def test_a_large_request_does_not_hold_up_a_small_one(archive_dir, tmp_path):  # noqa: F811
    import threading

    import httpx

    from diancang.service.app import ServiceConfig

    config = ServiceConfig(
        archive=fresh_copy(archive_dir, tmp_path), max_texts=256, max_body_bytes=5_000_000
    )
    big = {"texts": ["张三在北京工作。" * 250] * 256}  # 256 x 2,000 characters
    took: dict[str, float] = {}

    def large(base: str) -> None:
        began = time.monotonic()
        with httpx.Client(base_url=base, timeout=300) as h:
            r = h.post("/v1/recognize", json=big)
        assert r.status_code == 200 and len(r.json()["results"]) == 256
        took["large"] = time.monotonic() - began

    with live_server(config) as base:
        sender = threading.Thread(target=large, args=(base,))
        sender.start()
        time.sleep(0.3)  # the large request is being tagged
        small = []
        with httpx.Client(base_url=base, timeout=300) as h:
            while sender.is_alive() and len(small) < 10:
                began = time.monotonic()
                assert h.post("/v1/recognize", json={"text": "李四"}).status_code == 200
                small.append(time.monotonic() - began)
        sender.join()
        assert small and took["large"] > 1.0, (took, small)
    assert max(small) < 0.25 * took["large"], (took, small)


def test_learn_can_add_an_auxiliary_task_to_a_step(archive_dir, tmp_path):  # noqa: F811
    import json

    from typer.testing import CliRunner

    from diancang.cli import app
    from tests.test_multitask import _segmented

    root = fresh_copy(archive_dir, tmp_path)
    _segmented(tmp_path / "seg.utf8")
    runner = CliRunner()
    data = str(upload(tmp_path, ["ORG"]))
    r = runner.invoke(app, ["learn", "--data", data, "--archive", str(root), "--aux", "seg=pos:x"])
    assert r.exit_code == 2 and "NAME=KIND:FORMAT:PATH" in r.output
    aux = f"seg=cws:segmented:{tmp_path / 'seg.utf8'}"
    args = ["learn", "--data", data, "--archive", str(root), "--epochs", "3", "--aux", aux]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    version = Archive(root).get(2)
    assert version.strategies == ["distill@1", "multitask@3"]
    record = json.loads((Archive(root).model_dir(2) / "strategies.json").read_text("utf-8"))
    state = next(e["state"] for e in record["strategies"] if e["name"] == "multitask")
    assert state["labels"] == {"seg": ["B", "M", "E", "S"]} and state["heads"]
