"""A version folder: everything the next step needs, and nothing that points outside it.

Layout (what a run writes as ``checkpoints/step-N/`` and the archive stores as a version)::

    config.json          labels, id2label, head options and the resolved run config
    model.safetensors    the weights
    encoder/             the encoder's config and tokenizer files
    strategies.json      the step it finished and, per strategy, name@version, every
                         parameter and its carried state (JSON)
    blobs/<sha256>       files the states refer to by hash (e.g. replay language models)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diancang.errors import DiancangError
from diancang.learn.blobs import Blobs
from diancang.model.tagger import Tagger
from diancang.strategies.base import Strategy, StrategyState

STATE_FILE = "strategies.json"
FORMAT = 1


@dataclass
class VersionRecord:
    """What ``strategies.json`` says: the step the version finished (its index in the
    stream), and per strategy name its id (``name@version``), parameters and raw state."""

    step: int = -1
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def states(self, built: list[Strategy], where: Path | str) -> dict[str, StrategyState | None]:
        """Each built strategy's carried state. A stateful strategy whose state this version
        lacks is an error (its memory or model would silently be empty)."""
        out: dict[str, StrategyState | None] = {}
        for s in built:
            if s.State is None:
                out[s.name] = None
                continue
            entry = self.strategies.get(s.name)
            if (entry is None or entry.get("state") is None) and not s.State.required:
                out[s.name] = s.State()
                continue
            if entry is None or entry.get("state") is None:
                trained = ", ".join(e["id"] for e in self.strategies.values()) or "none recorded"
                raise DiancangError(
                    f"{s.name} carries state from step to step (its memory or models), but "
                    f"this version holds none for it (trained with: {trained})",
                    path=where,
                    fix=f"continue with the strategies the version was trained with, or train "
                    f"a first version with {s.name} among its strategies",
                )
            out[s.name] = s.parse_state(entry["state"])
        return out


def save_version(
    folder: str | Path,
    model: Tagger,
    run_config: dict[str, Any],
    step: int,
    built: list[Strategy],
    states: dict[str, StrategyState | None],
    blobs: Blobs,
) -> None:
    """Write a complete version folder (see the module docstring)."""
    d = Path(folder)
    model.save_pretrained(d, run_config=run_config)
    record: dict[str, Any] = {"format": FORMAT, "step": step, "strategies": []}
    used: list[str] = []
    for s in built:
        state = states.get(s.name)
        if state is not None:
            used += state.blobs()
        record["strategies"].append(
            {
                "name": s.name,
                "id": s.id,
                "params": s.params.model_dump(mode="json"),
                "state": None if state is None else state.model_dump(mode="json"),
            }
        )
    blobs.export(used, d / "blobs")
    (d / STATE_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=1), "utf-8")


def continue_from(
    folder: str | Path, built: list[Strategy], where: Path | str
) -> tuple[dict[str, StrategyState | None], list[Path]]:
    """What a step starting from the version in ``folder`` continues: each built strategy's
    state (see :meth:`VersionRecord.states`) and the folders its blobs are read from."""
    return read_record(folder).states(built, where), [Path(folder) / "blobs"]


def run_states(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The strategies' raw states in a run's last finished step (``{}`` before any), by name:
    what a report reads (e.g. relabel counts, synthesis costs)."""
    progress = Path(run_dir) / "progress.json"
    finished = json.loads(progress.read_text("utf-8"))["finished"] if progress.is_file() else 0
    if not finished:
        return {}
    folder = Path(run_dir) / "checkpoints" / f"step-{finished - 1}"
    return {k: e["state"] for k, e in read_record(folder).strategies.items() if e.get("state")}


def read_record(folder: str | Path) -> VersionRecord:
    """The ``strategies.json`` of a version folder (an empty record for a bare model folder,
    e.g. one saved by ``Tagger.save_pretrained`` alone)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return VersionRecord()
    try:
        raw = json.loads(path.read_text("utf-8"))
        return VersionRecord(
            step=int(raw["step"]), strategies={e["name"]: e for e in raw["strategies"]}
        )
    except (ValueError, KeyError, TypeError) as err:
        raise DiancangError(
            f"unreadable strategy record ({err})",
            path=path,
            fix="restore the version folder from the archive, or retrain the step",
        ) from None
