"""A version holds everything the next step needs: `learn` continues each strategy's state.

Each stateful strategy learns three times through an archive (v1 -> v2 -> v3, and v4 after a
rollback) and the test checks that every step started from exactly the state its base version
stored: the memory of earlier types, the language models, the held-out sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diancang.archive import Archive
from diancang.errors import DiancangError
from diancang.incremental import bootstrap, learn_step
from diancang.strategies.base import strategies
from diancang.strategies.synthetic_replay import TokenLM
from tests.test_service import base_config, upload

SMALL = {"synthetic_replay": {"per_step": 30, "lm_epochs": 1, "lm_hidden": 16, "min_score": 0.0}}


def stored_state(store: Archive, version: int, name: str) -> dict:
    record = json.loads((store.model_dir(version) / "strategies.json").read_text("utf-8"))
    (entry,) = [e for e in record["strategies"] if e["name"] == name]
    return entry["state"]


def state_types(name: str, state: dict) -> set[str]:
    """The entity types of the sentences a state keeps."""
    key = {"exemplars": "memory", "relabel_o": "memory", "bic": "held_out"}[name]
    return {label for s in state[key] for _, _, label in s["spans"]}


@pytest.mark.parametrize("name", ["exemplars", "relabel_o", "synthetic_replay", "bic"])
def test_learn_continues_the_state_of_its_base_version(tmp_path, monkeypatch, name):
    config = base_config(tmp_path)
    config = config.model_copy(
        update={
            "strategies": [name],
            "strategy_params": {k: v for k, v in SMALL.items() if k == name},
            "train": config.train.model_copy(update={"epochs": 4}),
        }
    )
    store = Archive(tmp_path / "archive")
    bootstrap(store, config)  # v1: LOC, PER
    started: list[dict] = []  # the state each learning step began with
    loaded: list[str] = []  # language models read back
    cls = strategies.get(name)
    begin = cls.begin_step
    monkeypatch.setattr(
        cls,
        "begin_step",
        lambda self, ctx: started.append(ctx.state.model_dump(mode="json")) or begin(self, ctx),
    )
    load = TokenLM.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        TokenLM, "load", classmethod(lambda c, path: loaded.append(path.name) or load(c, path))
    )

    v2 = learn_step(store, upload(tmp_path, ["ORG"])).version
    assert started[-1] == stored_state(store, 1, name)
    store.promote(v2.id)
    v3 = learn_step(store, upload(tmp_path, ["PRO"])).version  # from the live version: v2
    assert (v2.id, v3.id, v3.parent) == (2, 3, 2)
    v2_state = stored_state(store, 2, name)
    assert started[-1] == v2_state  # v3's step began with what v2 stored
    if name == "synthetic_replay":
        assert len(v2_state["lms"]) == 2  # v1's and v2's language models
        assert loaded[-2:] == v2_state["lms"]  # both loaded by v3's step, from v2's blobs
        folder = store.model_dir(3)
        assert {p.name for p in (folder / "blobs").iterdir()} == set(
            stored_state(store, 3, name)["lms"]
        )
    else:
        assert {"LOC", "PER", "ORG"} <= state_types(name, v2_state)  # v1's types and v2's

    store.rollback()  # v1 is live again: the next step starts from v1's state
    assert store.live().id == 1
    learn_step(store, upload(tmp_path, ["PRO"]))
    assert started[-1] == stored_state(store, 1, name)
    if name != "synthetic_replay":
        assert state_types(name, started[-1]) == {"LOC", "PER"}


def test_a_missing_state_is_an_error_not_an_empty_memory(tmp_path):
    store = Archive(tmp_path / "archive")
    bootstrap(store, base_config(tmp_path))  # trained with distill: no memory
    with pytest.raises(DiancangError, match=r"exemplars carries state.*holds none"):
        learn_step(store, upload(tmp_path, ["ORG"]), overrides={"strategies": ["exemplars"]})


def test_a_version_records_every_parameter_and_name_at_version(tmp_path):
    store = Archive(tmp_path / "archive")
    bootstrap(store, base_config(tmp_path))
    v2 = learn_step(
        store,
        upload(tmp_path, ["ORG"]),
        overrides={"strategies": ["cpfd"], "strategy_params": {"cpfd": {"min_factor": 0.4}}},
    ).version
    assert v2.strategies == ["cpfd@1"]
    params = v2.config["strategy_params"]["cpfd"]
    assert params["min_factor"] == 0.4 and params["base_threshold"] == 0.001  # default filled
    saved = json.loads((store.model_dir(2) / "config.json").read_text("utf-8"))["run_config"]
    assert (
        saved["strategies"] == ["cpfd@1"]
        and saved["strategy_params"] == v2.config["strategy_params"]
    )


def test_run_config_yaml_holds_every_parameter(tmp_path):
    import yaml

    from diancang.config import build_config
    from diancang.pipeline import run

    cfg = build_config(
        {
            "output_dir": str(tmp_path / "run"),
            "data": {"preset": "demo", "max_test": 10},
            "model": {"tiny_layers": 1, "tiny_hidden": 32},
            "stream": {"order": ["LOC", "PER"], "fg": 1, "pg": 1},
            "train": {"epochs": 1, "progress": False},
            "strategies": ["exemplars", "ema"],
        }
    )
    run(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text("utf-8"))
    assert saved["strategies"] == ["exemplars@3", "ema@1"]
    assert saved["strategy_params"]["exemplars"] == {
        "per_type": 5,
        "all_o": 5,
        "repeat": 1,
        "classifier": "head",
    }
    assert saved["strategy_params"]["ema"] == {"decay": 0.995, "warmup": True}
    record = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-1" / "strategies.json").read_text()
    )
    assert [e["id"] for e in record["strategies"]] == ["exemplars@3", "ema@1"]
    assert record["step"] == 1 and record["strategies"][0]["state"]["memory"]


def test_a_rerun_in_the_same_folder_resumes_with_the_resolved_config(tmp_path):
    from diancang.config import build_config
    from diancang.pipeline import run

    raw = {
        "output_dir": str(tmp_path / "run"),
        "data": {"preset": "demo", "max_test": 10},
        "model": {"tiny_layers": 1, "tiny_hidden": 32},
        "stream": {"order": ["LOC", "PER"], "fg": 1, "pg": 1},
        "train": {"epochs": 1, "progress": False},
        "strategies": ["exemplars"],
    }
    first = run(build_config(raw))
    again = run(build_config(raw))  # nothing left to train: the same results
    assert again.matrix.to_dict() == first.matrix.to_dict()
    assert Path(tmp_path / "run" / "checkpoints" / "step-1" / "strategies.json").is_file()
