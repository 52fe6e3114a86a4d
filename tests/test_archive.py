"""The archive keeps whole versions (even under SIGKILL), stores files once, rolls back, gates."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from diancang.archive import Archive, GateConfig, Version, decide
from diancang.errors import DataError, DiancangError

SRC = Path(__file__).resolve().parents[1] / "src"
METRICS = {"per_type": {"PER": 0.9, "LOC": 0.8}, "micro": 0.85, "macro": 0.85}


def fake_model(folder: Path, seed: int = 0, weights: int = 2000) -> Path:
    """A model-shaped folder: shared config and vocabulary, weights that differ by seed."""
    (folder / "encoder").mkdir(parents=True)
    (folder / "config.json").write_text('{"labels": ["O", "B-PER", "I-PER"]}', "utf-8")
    (folder / "encoder" / "vocab.txt").write_text("[PAD]\n[UNK]\n张\n三\n", "utf-8")
    (folder / "model.safetensors").write_bytes(random.Random(seed).randbytes(weights))
    return folder


def add(arch: Archive, folder: Path, parent: int | None = None, **kw) -> Version:
    args = {
        "types": ["PER", "LOC"],
        "strategies": ["finetune"],
        "config": {"train": {"lr": 1e-3}},
        "datasets": {},
        "metrics": METRICS,
    }
    return arch.add_version(folder, parent=parent, **{**args, **kw})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob_files(arch: Archive) -> list[Path]:
    """Stored blobs (not the temp files of writes in progress or killed)."""
    return [
        p for p in (arch.root / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")
    ]


def test_add_get_versions_live(tmp_path):
    arch = Archive(tmp_path / "a")
    assert arch.versions() == [] and arch.live() is None
    v1 = add(arch, fake_model(tmp_path / "m1"), datasets={"dev": "f" * 64})
    v2 = add(arch, fake_model(tmp_path / "m2", seed=1), parent=v1.id, types=["PER", "LOC", "ORG"])
    assert (v1.id, v1.parent, v2.id, v2.parent) == (1, None, 2, 1)
    assert v1.status == "candidate" and v1.gate is None and v1.datasets == {"dev": "f" * 64}
    assert datetime.fromisoformat(v1.created).utcoffset().total_seconds() == 0
    again = Archive(tmp_path / "a")  # reopening sees the same rows
    assert again.get(2) == v2 and [v.id for v in again.versions()] == [1, 2]
    assert json.loads(json.dumps(v2.to_dict()))["types"] == ["PER", "LOC", "ORG"]
    assert [f["path"] for f in arch.files(1)] == [
        "config.json",
        "encoder/vocab.txt",
        "model.safetensors",
    ]
    assert [e["kind"] for e in arch.events()] == ["add", "add"]
    assert arch.live() is None
    live = add(arch, fake_model(tmp_path / "m3", seed=2), parent=2, status="live")
    assert arch.live() == live and arch.get(3).status == "live"
    with pytest.raises(DiancangError, match="unknown status"):
        add(arch, tmp_path / "m1", status="published")
    with pytest.raises(DiancangError, match="not a model folder"):
        add(arch, tmp_path / "nowhere")


def test_identical_files_are_stored_once(tmp_path):
    arch = Archive(tmp_path / "a")
    add(arch, fake_model(tmp_path / "m1"))
    assert len(blob_files(arch)) == 3
    add(arch, fake_model(tmp_path / "m2", seed=1))  # only the weights differ
    assert len(blob_files(arch)) == 4
    add(arch, tmp_path / "m1")  # the same folder again: nothing new on disk
    assert len(blob_files(arch)) == 4
    hashes = {f["sha256"] for v in (1, 2, 3) for f in arch.files(v)}
    assert {p.name for p in blob_files(arch)} == hashes


def test_model_dir_round_trip_loads_and_predicts_the_same(tmp_path):
    from diancang.model.tagger import Tagger
    from tests.test_tagger import make_tagger
    from tests.toy import toy_sentences

    data = toy_sentences(10)
    model = make_tagger(data, ["PER", "LOC"]).eval()
    model.save_pretrained(tmp_path / "model")
    arch = Archive(tmp_path / "a")
    v = add(arch, tmp_path / "model")
    folder = arch.model_dir(v.id)
    assert folder == tmp_path / "a" / "checkouts" / "1" and arch.model_dir(v.id) == folder
    assert not list((tmp_path / "a" / "checkouts").glob(".tmp-*"))
    tokens = [s.tokens for s in data]
    assert Tagger.from_pretrained(folder).predict_tags(tokens) == model.predict_tags(tokens)


def test_model_dir_refuses_a_corrupt_or_missing_blob(tmp_path):
    arch = Archive(tmp_path / "a")
    add(arch, fake_model(tmp_path / "m1"))
    add(arch, fake_model(tmp_path / "m2", seed=1))
    weights = {f["path"]: f["sha256"] for f in arch.files(1)}["model.safetensors"]
    blob = arch.blob_path(weights)
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot")
    with pytest.raises(DiancangError, match="version 1 is corrupt"):
        arch.model_dir(1)
    arch.blob_path({f["path"]: f["sha256"] for f in arch.files(2)}["model.safetensors"]).unlink()
    with pytest.raises(DiancangError, match="missing blob"):
        arch.model_dir(2)
    assert not list(arch.checkouts.iterdir())  # no half-built checkout left behind


def test_promote_then_rollback_restores_the_previous_live(tmp_path):
    arch = Archive(tmp_path / "a")
    for i in range(3):
        add(arch, fake_model(tmp_path / f"m{i}", seed=i), parent=i or None)
    arch.promote(1)
    assert arch.promote(3).status == "live"
    assert [v.status for v in arch.versions()] == ["retired", "candidate", "live"]
    assert arch.rollback().id == 1
    assert [v.status for v in arch.versions()] == ["live", "candidate", "retired"]
    assert [e["kind"] for e in arch.events()][-3:] == ["promote", "promote", "rollback"]
    # Version 1 was the first live one and has no parent: nothing further back.
    with pytest.raises(DiancangError, match="no earlier live version") as err:
        arch.rollback()
    assert "promote" in (err.value.fix or "")
    # Each rollback follows the promote event of the version it retires.
    arch.promote(3)  # over 1
    arch.promote(2)  # over 3
    assert arch.rollback().id == 3
    assert arch.rollback().id == 1


def test_rollback_falls_back_to_the_parent_and_needs_a_live_version(tmp_path):
    arch = Archive(tmp_path / "a")
    with pytest.raises(DiancangError, match="no live version") as err:
        arch.rollback()
    assert err.value.fix
    add(arch, fake_model(tmp_path / "m1"))
    add(arch, fake_model(tmp_path / "m2", seed=1), parent=1)
    arch.promote(2)
    assert arch.rollback().id == 1 and arch.get(2).status == "retired"


def test_unknown_ids_and_parents(tmp_path):
    arch = Archive(tmp_path / "a")
    with pytest.raises(DiancangError, match="the archive is empty"):
        arch.get(1)
    for i in range(3):
        add(arch, fake_model(tmp_path / f"m{i}", seed=i))
    with pytest.raises(DiancangError, match=r"no version 7 in the archive \(versions: 1-3\)"):
        arch.get(7)
    for call in (arch.promote, arch.model_dir, arch.files, lambda i: arch.set_gate(i, {})):
        with pytest.raises(DiancangError, match="no version 9"):
            call(9)
    blobs = len(blob_files(arch))
    with pytest.raises(DiancangError, match="no parent version 42") as err:
        add(arch, fake_model(tmp_path / "m9", seed=9), parent=42)
    assert err.value.fix and len(arch.versions()) == 3 and len(blob_files(arch)) == blobs
    with pytest.raises(DiancangError, match="not a folder"):
        Archive(tmp_path / "m0" / "config.json")


def test_diff_on_hand_made_metrics_and_configs(tmp_path):
    arch = Archive(tmp_path / "a")
    add(
        arch,
        fake_model(tmp_path / "m1"),
        types=["PER", "LOC"],
        config={"train": {"lr": 1e-3, "epochs": 3}, "strategy": "finetune", "seed": 1},
        metrics={"per_type": {"PER": 0.9, "LOC": 0.8}, "micro": 0.85, "macro": 0.85},
    )
    add(
        arch,
        fake_model(tmp_path / "m2", seed=1),
        parent=1,
        types=["PER", "ORG"],
        config={"train": {"lr": 5e-4, "epochs": 3}, "strategy": "distill", "extra": True},
        metrics={"per_type": {"PER": 0.87, "ORG": 0.6}, "micro": 0.8, "macro": 0.735},
    )
    d = arch.diff(1, 2)
    assert d["types_added"] == ["ORG"] and d["types_removed"] == ["LOC"]
    assert d["per_type"] == {"PER": pytest.approx(-0.03)}
    assert d["micro"] == pytest.approx(-0.05) and d["macro"] == pytest.approx(-0.115)
    assert d["config"] == {
        "extra": {"b": True},
        "seed": {"a": 1},
        "strategy": {"a": "finetune", "b": "distill"},
        "train.lr": {"a": 1e-3, "b": 5e-4},
    }
    assert arch.diff(2, 2)["config"] == {} and json.dumps(d)


def test_set_gate_is_stored(tmp_path):
    arch = Archive(tmp_path / "a")
    add(arch, fake_model(tmp_path / "m1"))
    decision = decide(METRICS, None, ["PER", "LOC"], GateConfig())
    assert arch.set_gate(1, decision).gate == decision == arch.get(1).gate
    assert arch.events()[-1]["kind"] == "gate"


def test_gate_max_drop_and_new_type_floor():
    live = {"per_type": {"PER": 0.91, "LOC": 0.80}}
    cand = {"per_type": {"PER": 0.88, "LOC": 0.81, "ORG": 0.7}}  # PER drops 3 points
    strict = decide(cand, live, ["ORG"], GateConfig(max_drop=0.02))
    assert not strict["accepted"] and "PER drops from 91.0 to 88.0" in strict["reasons"][0]
    assert strict["deltas"] == {"PER": pytest.approx(-0.03), "LOC": pytest.approx(0.01)}
    assert strict["new_types"] == {"ORG": pytest.approx(0.7)}
    loose = decide(cand, live, ["ORG"], GateConfig(max_drop=0.05))
    assert loose["accepted"] and len(loose["reasons"]) == 2 and json.dumps(loose)
    # A drop of exactly max_drop passes despite float noise (0.91 - 0.89 > 0.02 in binary).
    edge = decide({"per_type": {"PER": 0.89, "LOC": 0.8}}, live, [], GateConfig())
    assert edge["accepted"]
    low_org = {"per_type": {**cand["per_type"], "ORG": 0.4}}
    low = decide(low_org, live, ["ORG"], GateConfig(max_drop=0.05))
    assert not low["accepted"] and any("ORG reaches dev F1 40.0" in r for r in low["reasons"])
    missing = decide({"per_type": {"PER": 0.95}}, live, ["ORG"], GateConfig())
    assert not missing["accepted"]
    assert sum("has no dev F1" in r for r in missing["reasons"]) == 2  # LOC (old) and ORG (new)


def test_gate_without_live_applies_only_the_floor():
    cand = {"per_type": {"PER": 0.55, "LOC": 0.45}}
    assert decide(cand, None, ["PER"], GateConfig())["accepted"]
    out = decide(cand, None, ["PER", "LOC"], GateConfig())
    assert not out["accepted"] and out["deltas"] == {}
    assert decide(cand, None, ["PER", "LOC"], GateConfig(new_type_floor=0.4))["accepted"]
    with pytest.raises(ValidationError):
        GateConfig(max_drop=0.02, floor=0.5)  # type: ignore[call-arg]
    assert all(f.description for f in GateConfig.model_fields.values())


def test_datasets_put_fingerprint_idempotent(tmp_path):
    arch = Archive(tmp_path / "a")
    data = tmp_path / "dev.jsonl"
    lines = [{"tokens": list("张三在北京"), "spans": []}, {"tokens": list("好"), "spans": []}]
    data.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n", "utf-8")
    fp = arch.put_dataset(data, name="dev", types=["PER", "LOC"])
    assert fp == sha(data)
    assert arch.put_dataset(data, name="dev again", types=["PER"]) == fp
    assert arch.datasets() == [
        {
            "fingerprint": fp,
            "name": "dev",
            "types": ["PER", "LOC"],
            "n_sentences": 2,
            "created": arch.datasets()[0]["created"],
        }
    ]
    assert arch.dataset_path(fp).read_bytes() == data.read_bytes()
    assert [e["kind"] for e in arch.events()] == ["dataset"]
    with pytest.raises(DiancangError, match=r"no dataset with fingerprint 'abc'.*dev"):
        arch.dataset_path("abc")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": []}\n{oops\n', "utf-8")
    with pytest.raises(DataError) as err:
        arch.put_dataset(bad, name="bad", types=[])
    assert err.value.line == 2
    with pytest.raises(DiancangError, match="no such dataset file"):
        arch.put_dataset(tmp_path / "missing.jsonl", name="x", types=[])


def test_gc_removes_orphans_only(tmp_path):
    arch = Archive(tmp_path / "a")
    add(arch, fake_model(tmp_path / "m1"))
    data = tmp_path / "dev.jsonl"
    data.write_text('{"tokens": ["a"]}\n', "utf-8")
    fp = arch.put_dataset(data, name="dev", types=[])
    kept = set(blob_files(arch))
    orphans = []
    for i in range(2):  # blobs of a version whose process died before its rows went in
        orphan = tmp_path / f"orphan{i}"
        orphan.write_bytes(b"orphan %d" % i)
        orphans.append(arch.blob_path(arch.blobs.store(orphan)[0]))
    assert all(p.is_file() for p in orphans)
    # Temp files of killed writers go once stale; a fresh one may belong to a running writer.
    old = time.time() - 2 * 3600
    stale_blob, fresh_blob = orphans[0].parent / ".tmp-old", orphans[0].parent / ".tmp-new"
    stale_checkout = arch.checkouts / ".tmp-5-old"
    for p in (stale_blob, fresh_blob, stale_checkout / "config.json"):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    for p in (stale_blob, stale_checkout):
        os.utime(p, (old, old))
    assert arch.gc() == 2
    assert set(blob_files(arch)) == kept and arch.dataset_path(fp).is_file()
    assert fresh_blob.exists() and not stale_blob.exists() and not stale_checkout.exists()
    assert arch.model_dir(1).is_dir() and arch.gc() == 0
    assert arch.events()[-1] == {
        **arch.events()[-1],
        "kind": "gc",
        "detail": {"removed": 0, "scratch": 0},
    }


def test_gc_removes_the_scratch_of_dead_processes_only(tmp_path):
    import subprocess

    arch = Archive(tmp_path / "a")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process that is gone: its pid names a folder nobody works in
    left = arch.root / "scratch" / f"upload-{dead.pid}-abc"
    (left / "blobs").mkdir(parents=True)
    with arch.scratch("step") as mine:  # this process's own: kept while in use
        arch.gc()
        assert mine.is_dir() and not left.exists()
    assert not mine.exists()


def test_threads_share_one_archive(tmp_path):
    arch = Archive(tmp_path / "a")
    folders = [fake_model(tmp_path / f"m{i}", seed=i) for i in range(4)]
    errors: list[BaseException] = []

    def work(folder: Path) -> None:
        try:
            for _ in range(3):
                arch.model_dir(add(arch, folder).id)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [v.id for v in arch.versions()] == list(range(1, 13))


WRITER = """
import os, random, sys
from pathlib import Path
from diancang.archive import Archive

arch, work = Archive(sys.argv[1]), Path(sys.argv[2])
rng = random.Random(os.getpid())
print("ready", flush=True)
while True:
    folder = work / f"m{os.getpid()}-{rng.random()}"
    (folder / "encoder").mkdir(parents=True)
    (folder / "config.json").write_text('{"labels": ["O"]}')
    (folder / "encoder" / "vocab.txt").write_text("[PAD]\\n" * 1000)
    (folder / "model.safetensors").write_bytes(rng.randbytes(200_000))
    versions = arch.versions()
    v = arch.add_version(
        folder, parent=versions[-1].id if versions else None, types=["PER"],
        strategies=["finetune"], config={}, datasets={}, metrics={"per_type": {"PER": 0.5}},
    )
    arch.model_dir(v.id)
"""


def check_whole(root: Path) -> int:
    """Every listed version is whole: consecutive ids, all files, hashes match, checkout builds."""
    arch = Archive(root)
    with sqlite3.connect(root / "archive.sqlite3") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = arch.versions()
    assert [v.id for v in versions] == list(range(1, len(versions) + 1))
    for v in versions:
        assert v.parent == (v.id - 1 or None)
        files = arch.files(v.id)
        assert [f["path"] for f in files] == [
            "config.json",
            "encoder/vocab.txt",
            "model.safetensors",
        ]
        for f in files:
            blob = arch.blob_path(f["sha256"])
            assert sha(blob) == f["sha256"] and blob.stat().st_size == f["size"]
            assert sha(arch.model_dir(v.id) / f["path"]) == f["sha256"]
    return len(versions)


def test_sigkill_never_leaves_a_half_written_version(tmp_path):
    root, work = tmp_path / "a", tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    rng = random.Random(1)
    counts = []
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(work)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip()
        assert ready == "ready", proc.communicate()[1]
        time.sleep(rng.uniform(0.05, 0.5))
        assert proc.poll() is None, proc.communicate()[1]  # still writing when killed
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        counts.append(check_whole(root))
    assert counts[-1] >= 1 and counts == sorted(counts)
    Archive(root).gc()  # orphans of the killed adds go; every version stays whole
    assert check_whole(root) == counts[-1]


def test_pick_gives_the_named_or_the_live_version(tmp_path):
    arch = Archive(tmp_path / "a")
    with pytest.raises(DiancangError, match="no live version") as err:
        arch.pick()
    assert err.value.fix
    add(arch, fake_model(tmp_path / "m1"))
    add(arch, fake_model(tmp_path / "m2", seed=1), parent=1)
    with pytest.raises(DiancangError, match="no version 7"):
        arch.pick(7)
    assert arch.pick(2).id == 2
    arch.promote(1)
    assert arch.pick().id == 1
