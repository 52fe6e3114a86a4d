"""Learning outside a benchmark: a first version from a dataset, then one step per upload.

:func:`bootstrap` trains a first version on a dataset (all its types at once) and makes it live.
:func:`learn_step` takes an archived version, data annotated only for some new types, trains
one continual step with the configured strategies through the same step runner as
``diancang run`` (the archived model is the teacher, and each strategy continues from the state
the version holds: its memory, its language models), scores
the candidate on every dev set the archive retains plus the new one, and registers it with the
promotion gate's decision. Both only *register*; promotion is a separate, explicit act (unless
asked for when the gate accepts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diancang.archive import Archive, GateConfig, Version, decide
from diancang.config import RunConfig, build_config
from diancang.data.checks import check_upload
from diancang.data.presets import load_files, split_off
from diancang.data.record import Sentence
from diancang.data.writers import write_jsonl
from diancang.learn.blobs import Blobs
from diancang.learn.evaluate import evaluate
from diancang.learn.optim import seed_everything
from diancang.learn.runner import StepRunner
from diancang.learn.version import continue_from, read_record, save_version
from diancang.model.tagger import Tagger
from diancang.pipeline import as_model_reads, load_data, model_factory
from diancang.strategies.base import StrategyState, resolve, split_id
from diancang.stream import Step

logger = logging.getLogger("diancang.incremental")

#: ``progress(fraction, message)`` callbacks let a job report where it is; ``message`` is None
#: when only the fraction moved (every training batch).
Progress = Callable[[float, str | None], None]


@dataclass
class StepOutcome:
    """What one learning job produced: the registered version and the gate's decision."""

    version: Version
    decision: dict[str, Any]


def _train_and_register(
    archive: Archive,
    config: RunConfig,
    step: Step,
    model: Tagger,
    *,
    fresh: bool,
    base: Version | None,
    gate: GateConfig,
    datasets: dict[str, str],
    note: Progress,
) -> StepOutcome:
    """Run ``step`` through the step runner (the same one as ``diancang run``), score the
    candidate on every retained dev set, and register it as a complete version (weights,
    strategy states and their blobs, the resolved config) with the gate's decision."""
    config, built = resolve(config)
    states: dict[str, StrategyState | None] = {s.name: None for s in built}
    read: list[Path] = []
    if base is not None:
        states, read = continue_from(archive.model_dir(base.id), built, f"version {base.id}")
    runner = StepRunner(config, built)
    runner.on_batch = lambda done, total, desc: _per_batch(note, done, total, desc)
    with archive.scratch("step") as tmp:
        blobs = Blobs(tmp / "blobs", read)
        seed_everything(config.seed + step.index)
        result = runner.run_step(step, model, states, blobs, fresh=fresh)
        note(0.85, "scoring on every retained dev set")
        metrics = _score(archive, result.model, datasets, config.train.eval_batch_size)
        live = archive.live()
        decision = decide(metrics, live.metrics if live else None, step.new_types, gate)
        run_config = config.model_dump(mode="json")
        save_version(
            tmp / "version", result.model, run_config, step.index, built, result.states, blobs
        )
        version = archive.add_version(
            tmp / "version",
            parent=None if base is None else base.id,
            types=result.model.types,
            strategies=config.strategies,
            config=run_config,
            datasets=datasets,
            metrics=metrics,
            gate=decision,
        )
    return StepOutcome(version, decision)


def _per_batch(note: Progress, done: int, total: int, desc: str) -> None:
    """Move the progress with every batch (training is 0.1 to 0.8); a log line every tenth."""
    tenth = done == total or done % max(1, total // 10) == 0
    message = f"training ({desc}): {done} of {total} batches" if tenth else None
    note(0.1 + 0.7 * done / total, message)


def _score(
    archive: Archive, model: Tagger, datasets: dict[str, str], batch_size: int
) -> dict[str, Any]:
    """Per-type dev F1 of ``model``: each type scored on the retained dev set that holds it."""
    per_type: dict[str, float] = {}
    known = {d["fingerprint"]: d for d in archive.datasets()}
    for fingerprint in datasets.values():
        info = known[fingerprint]
        types = [t for t in info["types"] if t in model.types]
        sentences = _read_jsonl(archive.dataset_path(fingerprint), model)
        scores = evaluate(model, sentences, types, batch_size)
        per_type.update({t: scores.per_type[t].f1 for t in types})
    values = list(per_type.values())
    return {"per_type": per_type, "macro": sum(values) / len(values) if values else 0.0}


def _read_jsonl(path: Path, model: Tagger) -> list[Sentence]:
    """A retained dev set, tokenised as ``model`` reads text."""
    splits = load_files(None, None, path, format="jsonl", lang=model.spec.lang)
    return as_model_reads(splits, model.spec.latin_words).test


def _retain(archive: Archive, dev: list[Sentence], types: list[str], lang: str) -> str:
    """Store a dev set in the archive (JSONL blob); returns its fingerprint."""
    with archive.scratch("dev") as tmp:
        path = tmp / "dev.jsonl"
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
    seed_everything(config.seed)
    model = make(types)
    step = Step(0, types, types, splits.train, splits.dev, splits.dev)
    datasets = {"dev:" + ",".join(types): _retain(archive, splits.dev, types, splits.lang)}
    outcome = _train_and_register(
        archive,
        config,
        step,
        model,
        fresh=True,
        base=None,
        gate=GateConfig(),
        datasets=datasets,
        note=note,
    )
    archive.promote(outcome.version.id)
    note(1.0, f"version {outcome.version.id} is live")
    return StepOutcome(archive.get(outcome.version.id), outcome.decision)


def learn_step(
    archive: Archive,
    data: Path,
    *,
    from_version: int | None = None,
    overrides: dict[str, Any] | None = None,
    gate: GateConfig | None = None,
    data_format: str = "jsonl",
    progress: Progress | None = None,
    max_new_types: int = 20,
    max_sentences: int | None = None,
) -> StepOutcome:
    """Learn the new types annotated in ``data`` on top of ``from_version`` (default: the live
    version), carrying its strategies' state; register the candidate with the gate's decision.
    ``overrides`` are run-config values (e.g. ``{"strategies": ["distill"], "train":
    {"epochs": 3}}``) applied over the base version's resolved config; strategies named there
    without parameters take their defaults."""
    note = progress or (lambda f, m: None)
    base = archive.pick(from_version)
    note(0.0, f"loading version {base.id}")
    folder = archive.model_dir(base.id)
    teacher = Tagger.from_pretrained(folder)
    raw = dict(base.config)
    overrides = dict(overrides or {})
    if "strategies" in overrides:  # the base's parameters of strategies no longer listed go
        names = {split_id(str(n))[0] for n in overrides["strategies"]}
        raw["strategy_params"] = {
            k: v for k, v in raw.get("strategy_params", {}).items() if k in names
        }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    config = build_config(raw, source=f"version {base.id}'s config")
    sentences = as_model_reads(
        load_files(None, None, Path(data), format=data_format, lang=teacher.spec.lang),
        teacher.spec.latin_words,
    ).test
    new_types = check_upload(sentences, teacher.types, base.id, max_new_types=max_new_types)
    if max_sentences is not None and len(sentences) > max_sentences:
        note(0.05, f"training on a seeded {max_sentences:,} of {len(sentences):,} sentences")
        sentences = split_off(sentences, max_sentences / len(sentences), config.seed)[1]
    train, dev = split_off(sentences, 0.2, config.seed)
    note(0.1, f"learning {', '.join(new_types)} from {len(train)} sentences")
    index = read_record(folder).step + 1
    step = Step(index, new_types, teacher.types + new_types, train, dev, dev)
    fingerprint = _retain(archive, dev, new_types, teacher.spec.lang)
    outcome = _train_and_register(
        archive,
        config,
        step,
        teacher,
        fresh=False,
        base=base,
        gate=gate or GateConfig(),
        datasets={**base.datasets, "dev:" + ",".join(new_types): fingerprint},
        note=note,
    )
    verdict = "accepts" if outcome.decision["accepted"] else "rejects"
    note(1.0, f"candidate version {outcome.version.id}: gate {verdict}")
    return outcome
