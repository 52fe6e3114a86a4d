"""Per-step checkpoints: a killed run resumes from its last finished step (and, within a
step, from its last whole epoch: :mod:`diancang.learn.resume`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diancang.errors import ConfigError


@dataclass
class Progress:
    """What is finished: results, training seconds and sentences, dev scores, memory and
    commit per step (the model and the strategies' states are in the step's version folder)."""

    finished: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    sentences: list[int] = field(default_factory=list)
    epochs: list[list[dict[str, Any]]] = field(default_factory=list)
    #: Per step: the process's peak memory (MB) and the git commit of the code, when trained.
    peak_mb: list[float] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    #: Per step: the supervision audit of its unlabelled words (None: first step, or none).
    audits: list[dict[str, Any] | None] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def step_dir(output_dir: Path, step: int) -> Path:
    """The version folder of the model after ``step`` (see :mod:`diancang.learn.version`)."""
    return output_dir / "checkpoints" / f"step-{step}"


def epoch_state_dir(output_dir: Path) -> Path:
    """Where an unfinished step's training state is saved after every epoch (see
    :mod:`diancang.learn.resume`); removed once the step's version folder is saved."""
    return output_dir / "work" / "epoch-state"


def save_progress(output_dir: Path, progress: Progress) -> None:
    """Atomically write ``progress.json`` (write to a temp file, then rename)."""
    path = output_dir / "progress.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(progress.__dict__, ensure_ascii=False, indent=1), "utf-8")
    os.replace(tmp, path)


def load_progress(output_dir: Path, config: dict[str, Any]) -> Progress:
    """The saved progress of a run in ``output_dir`` (empty if none). A run whose config differs
    from ``config`` (other than presentation keys) is refused with a clear error."""
    path = output_dir / "progress.json"
    if not path.is_file():
        return Progress(config=config)
    raw = json.loads(path.read_text("utf-8"))
    raw.pop("states", None)  # kept there by runs saved before version folders held them
    progress = Progress(**raw)
    ignore = {"output_dir", "name"}
    saved = progress.config
    try:  # settings added since the run was saved take their defaults on both sides
        from diancang.config import RunConfig

        saved = RunConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        pass  # a setting that no longer exists: compared as saved, so it differs
    old = {k: v for k, v in saved.items() if k not in ignore}
    new = {k: v for k, v in config.items() if k not in ignore}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ConfigError(
            f"{output_dir} holds a run with a different config (differs in: {', '.join(diff)})",
            path=path,
            fix=f"write elsewhere with output_dir=NEW_FOLDER, or pass --restart to start "
            f"over in {output_dir} (its results and models are then lost)",
        )
    return progress
