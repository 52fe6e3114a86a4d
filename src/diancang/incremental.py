"""Learning outside a benchmark: a first version from a dataset, then one step per upload.

:func:`bootstrap` trains a first version on a dataset (all its types at once) and makes it live.
:func:`learn_step` takes an archived version, data annotated only for some new types, trains
one continual step with the configured strategies (the archived model is the teacher), scores
the candidate on every dev set the archive retains plus the new one, and registers it with the
promotion gate's decision. Both only *register*; promotion is a separate, explicit act (unless
asked for when the gate accepts).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diancang.archive import Archive, GateConfig, Version, decide
from diancang.config import RunConfig, build_config
from diancang.data.presets import load_files, split_off
from diancang.data.record import Sentence
from diancang.data.writers import write_jsonl
from diancang.errors import DataError
from diancang.learn.evaluate import evaluate
from diancang.learn.learner import Learner
from diancang.model.tagger import Tagger
from diancang.pipeline import load_data, model_factory
from diancang.strategies.base import build_strategies
from diancang.stream import Step, TaskStream

logger = logging.getLogger("diancang.incremental")

#: ``progress(fraction, message)`` callbacks let a job report where it is.
Progress = Callable[[float, str], None]


@dataclass
class StepOutcome:
    """What one learning job produced: the registered version and the gate's decision."""

    version: Version
    decision: dict[str, Any]


def _one_step(
    archive: Archive,
    config: RunConfig,
    train: list[Sentence],
    dev: list[Sentence],
    new_types: list[str],
    initial: Tagger | None,
    make_model: Callable[[list[str]], Tagger],
) -> Tagger:
    """Train one step (``initial`` is the teacher when given) and return the model. Checkpoints
    go to a temporary folder under the archive's ``work/``, removed afterwards."""
    # The stream covers this step alone: the initial model's types lie outside it (they are
    # scored afterwards on their own retained dev sets).
    step = Step(index=0, new_types=new_types, seen_types=new_types, train=train, dev=dev, test=dev)
    stream = TaskStream(
        order=new_types, steps=[step], assignment={"train": [list(range(len(train)))], "dev": []}
    )
    (archive.root / "work").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.root / "work") as tmp:
        learner = Learner(
            config.model_copy(update={"output_dir": tmp}),
            stream,
            build_strategies(config.strategies, config.strategy_params),
            make_model,
            train,
            initial=initial,
        )
        learner.run(restart=True)
    assert learner.model is not None
    return learner.model


def _score(
    archive: Archive, model: Tagger, datasets: dict[str, str], batch_size: int
) -> dict[str, Any]:
    """Per-type dev F1 of ``model``: each type scored on the retained dev set that holds it."""
    per_type: dict[str, float] = {}
    known = {d["fingerprint"]: d for d in archive.datasets()}
    for fingerprint in datasets.values():
        info = known[fingerprint]
        types = [t for t in info["types"] if t in model.types]
        sentences = _read_jsonl(archive.dataset_path(fingerprint), model.spec.lang)
        scores = evaluate(model, sentences, types, batch_size)
        per_type.update({t: scores.per_type[t].f1 for t in types})
    values = list(per_type.values())
    return {"per_type": per_type, "macro": sum(values) / len(values) if values else 0.0}


def _read_jsonl(path: Path, lang: str) -> list[Sentence]:
    return load_files(None, None, path, format="jsonl", lang=lang).test


def _retain(archive: Archive, dev: list[Sentence], types: list[str], lang: str) -> str:
    """Store a dev set in the archive (JSONL blob); returns its fingerprint."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dev.jsonl"
        write_jsonl(path, dev, lang=lang)
        return archive.put_dataset(path, name="dev:" + ",".join(types), types=types)


def bootstrap(
    archive: Archive, config: RunConfig, *, progress: Progress | None = None
) -> StepOutcome:
    """Train a first version on ``config``'s dataset, every type in one step, and make it live."""
    note = progress or (lambda f, m: None)
    note(0.0, "reading data")
    splits = load_data(config)
    types = sorted({sp.label for s in splits.train for sp in s.spans})
    note(0.1, f"training {len(types)} types on {len(splits.train)} sentences")
    make = model_factory(config, splits.lang, splits.train, splits.train + splits.dev)
    model = _one_step(archive, config, splits.train, splits.dev, types, None, make)
    note(0.9, "scoring and archiving")
    fingerprint = _retain(archive, splits.dev, types, splits.lang)
    datasets = {"dev:" + ",".join(types): fingerprint}
    metrics = _score(archive, model, datasets, config.train.eval_batch_size)
    decision = decide(metrics, None, types, GateConfig())
    version = _register(archive, model, config, None, datasets, metrics, decision)
    archive.promote(version.id)
    note(1.0, f"version {version.id} is live")
    return StepOutcome(archive.get(version.id), decision)


def learn_step(
    archive: Archive,
    data: Path,
    *,
    from_version: int | None = None,
    overrides: dict[str, Any] | None = None,
    gate: GateConfig | None = None,
    data_format: str = "jsonl",
    progress: Progress | None = None,
) -> StepOutcome:
    """Learn the new types annotated in ``data`` on top of ``from_version`` (default: the live
    version); register the candidate with the gate's decision. ``overrides`` are run-config
    values (e.g. ``{"strategies": ["distill"], "train": {"epochs": 3}}``) applied over the base
    version's resolved config."""
    note = progress or (lambda f, m: None)
    base = archive.pick(from_version)
    note(0.0, f"loading version {base.id}")
    teacher = Tagger.from_pretrained(archive.model_dir(base.id))
    raw = dict(base.config)
    for key, value in (overrides or {}).items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    config = build_config(raw, source=f"version {base.id}'s config")
    sentences = load_files(
        None, None, Path(data), format=data_format, lang=teacher.spec.lang, seed=config.seed
    ).test
    new_types = sorted({sp.label for s in sentences for sp in s.spans} - set(teacher.types))
    if not new_types:
        raise DataError(
            f"the data names no type that version {base.id} lacks "
            f"(it knows {', '.join(teacher.types)})",
            path=data,
            fix="annotate the new types' mentions in the uploaded sentences",
        )
    train, dev = split_off(sentences, 0.2, config.seed)
    if not dev or not train:
        raise DataError(
            f"{len(sentences)} sentences are too few to train and check a new type",
            path=data,
            fix="upload at least 5 annotated sentences",
        )
    note(0.1, f"learning {', '.join(new_types)} from {len(train)} sentences")
    model = _one_step(archive, config, train, dev, new_types, teacher, lambda types: teacher)
    note(0.85, "scoring on every retained dev set")
    fingerprint = _retain(archive, dev, new_types, teacher.spec.lang)
    datasets = {**base.datasets, "dev:" + ",".join(new_types): fingerprint}
    metrics = _score(archive, model, datasets, config.train.eval_batch_size)
    live = archive.live()
    decision = decide(metrics, live.metrics if live else None, new_types, gate or GateConfig())
    version = _register(archive, model, config, base.id, datasets, metrics, decision)
    note(
        1.0,
        f"candidate version {version.id}: gate {'accepts' if decision['accepted'] else 'rejects'}",
    )
    return StepOutcome(version, decision)


def _register(
    archive: Archive,
    model: Tagger,
    config: RunConfig,
    parent: int | None,
    datasets: dict[str, str],
    metrics: dict[str, Any],
    decision: dict[str, Any],
) -> Version:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, run_config=config.model_dump(mode="json"))
        return archive.add_version(
            Path(tmp),
            parent=parent,
            types=model.types,
            strategies=config.strategies,
            config=config.model_dump(mode="json"),
            datasets=datasets,
            metrics=metrics,
            gate=decision,
        )
