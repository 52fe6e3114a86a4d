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
from tests.test_service import AUTH, archive_dir, client, fresh_copy, upload  # noqa: F401
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
