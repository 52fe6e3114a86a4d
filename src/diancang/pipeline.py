"""The main job: config -> data -> task stream -> learner -> results, model and report."""

from __future__ import annotations

import logging
import platform
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from diancang import __version__
from diancang.config import RunConfig, dump_config
from diancang.data.presets import DatasetSplits, load_files, load_preset
from diancang.data.record import Sentence
from diancang.data.tokenize import tokenize
from diancang.errors import ConfigError
from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.report import write_report
from diancang.learn.checkpoint import Progress, epoch_state_dir, step_dir
from diancang.learn.learner import Learner
from diancang.model.encoder import (
    build_vocab,
    load_pretrained_encoder,
    tiny_random_encoder,
    trim_embeddings,
    truncate_layers,
)
from diancang.model.features import TokenEncoder
from diancang.model.tagger import Tagger, TaggerSpec
from diancang.provenance import git_commit, matmul_gflops
from diancang.strategies.base import resolve, split_id
from diancang.stream import (
    TaskStream,
    build_stream,
    check_assignment,
    save_stream,
    step_mentions,
    type_counts,
)

logger = logging.getLogger("diancang")


def load_data(config: RunConfig) -> DatasetSplits:
    """The dataset the config names (a preset, or explicit train/dev/test files)."""
    dc = config.data
    if dc.preset is not None:
        splits = load_preset(dc.preset, dc.dir, strict=dc.strict, seed=config.seed)
    else:
        if dc.train is None or dc.test is None:
            raise ConfigError(
                "data.preset is null but data.train or data.test is missing",
                fix="set data.preset, or give data.train, data.dev and data.test",
            )
        splits = load_files(
            dc.train,
            dc.dev,
            dc.test,
            format=dc.format,
            scheme=dc.scheme,
            lang=dc.lang,
            strict=dc.strict,
            seed=config.seed,
            name=dc.name,
        )
    if dc.name:
        splits.name = dc.name
    splits.defects.emit()
    return as_model_reads(subsample(splits, config), config.model.latin_words)


def as_model_reads(splits: DatasetSplits, latin_words: bool) -> DatasetSplits:
    """``splits`` tokenised as a model with ``latin_words`` reads Chinese text (a run of Latin
    letters and digits as one token, :mod:`diancang.data.latin`); unchanged otherwise."""
    if not latin_words or splits.lang != "zh":
        return splits
    from dataclasses import replace

    from diancang.data.latin import join_all

    return replace(
        splits, train=join_all(splits.train), dev=join_all(splits.dev), test=join_all(splits.test)
    )


def subsample(splits: DatasetSplits, config: RunConfig) -> DatasetSplits:
    """Apply ``data.max_train/max_dev/max_test`` (a seeded, order-keeping subsample; the
    training one keeps a mention of every type the full training set has)."""

    def cut(data: list[Sentence], n: int | None, salt: int, cover: bool = False) -> list[Sentence]:
        if n is None or n >= len(data):
            return data
        rng = random.Random(config.seed * 1000 + salt)
        keep = set(rng.sample(range(len(data)), n))
        if cover:
            keep = cover_types(data, keep, rng)
        return [data[i] for i in sorted(keep)]

    dc = config.data
    splits.train = cut(splits.train, dc.max_train, 1, cover=True)
    splits.dev = cut(splits.dev, dc.max_dev, 2)
    splits.test = cut(splits.test, dc.max_test, 3)
    return splits


def cover_types(data: list[Sentence], keep: set[int], rng: random.Random) -> set[int]:
    """Swap into a subsample ``keep`` (indices of ``data``) a random sentence of every type it
    lacks, each in place of a kept sentence whose types all have other mentions kept (so the
    subsample's size stays, and a stream over the full data's types still fits)."""

    def labels(i: int) -> Counter[str]:
        return type_counts([data[i]])

    counts = type_counts([data[i] for i in keep])
    missing = sorted(set(type_counts(data)) - set(counts))
    for label in missing:
        holders = [i for i, s in enumerate(data) if any(sp.label == label for sp in s.spans)]
        add = rng.choice(holders)
        spare = [i for i in sorted(keep) if all(counts[t] > c for t, c in labels(i).items())]
        if spare:
            drop = rng.choice(spare)
            keep.discard(drop)
            counts -= labels(drop)
        keep.add(add)
        counts += labels(add)
    if missing:
        logger.info("max_train: swapped in sentences of %s, absent from the subsample", missing)
    return keep


def make_stream(config: RunConfig, splits: DatasetSplits) -> TaskStream:
    """The config's task stream over ``splits`` (steps scored on ``data.score_on``)."""
    sc = config.stream
    scored = splits.dev if config.data.score_on == "dev" else splits.test
    return build_stream(
        splits.train,
        splits.dev,
        scored,
        order=sc.order,
        fg=sc.fg,
        pg=sc.pg,
        seed=sc.seed,
        shots=sc.shots,
        shot_seed=sc.shot_seed,
    )


def model_factory(
    config: RunConfig, lang: str, train: list[Sentence], texts: list[Sentence] | None = None
) -> Callable[[list[str]], Tagger]:
    """A function building the first step's tagger for its types. ``train`` builds the
    tiny-random vocabulary; ``texts`` (default: ``train``) decide what ``trim_vocab`` keeps."""
    texts = train if texts is None else texts
    mc = config.model

    def make(types: list[str]) -> Tagger:
        if mc.encoder == "tiny-random":
            vocab = build_vocab(s.tokens for s in train)
            encoder, tokenizer = tiny_random_encoder(
                vocab,
                hidden=mc.tiny_hidden,
                layers=mc.tiny_layers,
                heads=mc.tiny_heads,
                max_length=mc.max_length,
                seed=config.seed,
            )
        else:
            encoder, tokenizer = load_pretrained_encoder(mc.encoder)
        kept = None
        if mc.trim_vocab:
            probe = TokenEncoder(tokenizer, lang=lang, max_length=mc.max_length)
            names = {sp.label for s in texts for sp in s.spans} | set(types)
            type_texts = [
                tokenize(t, lang, mc.latin_words)[0] for t in [*config.types.values(), *names]
            ]
            kept = probe.used_ids([*(s.tokens for s in texts), *type_texts])
            trim_embeddings(encoder, kept)
        if mc.keep_layers is not None:
            truncate_layers(encoder, mc.keep_layers)
        spec = TaggerSpec(
            labels=["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")],
            lang=lang,
            max_length=mc.max_length,
            window_overlap=mc.window_overlap,
            latin_words=mc.latin_words,
            crf=mc.crf,
            bilstm=mc.bilstm,
            lstm_hidden=mc.lstm_hidden,
            dropout=mc.dropout,
            encoder_name=mc.encoder,
            freeze_embeddings=mc.freeze_embeddings,
            kept_ids=kept,
            head=mc.head,
            type_texts=dict(config.types),
        )
        torch.manual_seed(config.seed)
        return Tagger(encoder, tokenizer, spec)

    return make


def machine() -> dict[str, Any]:
    """Facts about where a run ran."""
    import os

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def trained_at(progress: Progress | None) -> str:
    """The git commit(s) that trained the run's steps; the current one (marked) when the run
    was saved before commits were recorded."""
    commits = list(dict.fromkeys(progress.commits)) if progress else []
    return ", ".join(commits) if commits else f"{git_commit()} (reported; trained earlier)"


def throughput(progress: Progress | None) -> dict[str, Any]:
    """Training seconds and sentences per step, sentences/s, and this process's peak memory."""
    seconds = progress.seconds if progress else []
    sentences = progress.sentences if progress else []
    peaks = progress.peak_mb if progress else []
    return {
        "train_seconds_per_step": [round(x, 2) for x in seconds],
        "train_sentences_per_step": sentences,
        "sentences_per_second": round(sum(sentences) / sum(seconds), 2) if sum(seconds) else None,
        # Measured while training; None for runs saved before peaks were recorded (a finished
        # run that is only reloaded would otherwise report its reload, not its training).
        "peak_memory_mb": max(peaks) if peaks else None,
        "dev_per_epoch": progress.epochs if progress else [],
        # Hidden-gold audit of what each step trained its unlabelled words as (learn.audit).
        "supervision_audit": progress.audits if progress else [],
        # Per step: gold entities found with their exact boundaries under another type.
        "confusion": [r.get("confusion", {}) for r in progress.results] if progress else [],
        # Per step and type: where its false positives land (types not yet learnt, ...).
        "false_positives": [r.get("false_positives", {}) for r in progress.results]
        if progress
        else [],
        # Per step: precision and recall of every type seen so far.
        "precision_recall": [
            {t: [round(s["precision"], 4), round(s["recall"], 4)] for t, s in r["per_type"].items()}
            for r in progress.results
        ]
        if progress
        else [],
    }


@dataclass
class RunResult:
    """What :func:`run` produced."""

    matrix: ResultMatrix
    output_dir: Path
    files: dict[str, Path]


def check_strategy_versions(saved: Path, strategies: list[str]) -> None:
    """Raise a :class:`ConfigError` if a run folder's checkpoints (its ``config.yaml``, as
    ``name@version``) were trained by another version of a strategy than ``strategies`` name:
    resuming would mix the two in one run."""
    if not saved.is_file():
        return
    import yaml

    recorded = (yaml.safe_load(saved.read_text("utf-8")) or {}).get("strategies") or []
    before = dict(split_id(s) for s in recorded)
    changed = [
        f"{name}@{before[name]} -> {name}@{version}"
        for name, version in map(split_id, strategies)
        if before.get(name) is not None and version is not None and before[name] != version
    ]
    if changed:
        raise ConfigError(
            f"this run's checkpoints were trained by other versions ({', '.join(changed)})",
            path=saved,
            fix="run it again with --restart, or with the code that trained them",
        )


def run(config: RunConfig, restart: bool = False, command: str | None = None) -> RunResult:
    """Run the whole continual job the config describes; writes everything to ``output_dir``."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    config, strategies = resolve(config)  # config.yaml records name@version and every parameter
    splits = load_data(config)
    sc = config.stream
    stream = make_stream(config, splits)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resuming = (out / "progress.json").is_file() or epoch_state_dir(out).is_dir()
    if not restart and resuming:
        check_strategy_versions(out / "config.yaml", config.strategies)
    dump_config(config, out / "config.yaml")
    if not restart and resuming and (out / "stream.json").is_file():
        check_assignment(stream, out / "stream.json")  # resuming: the split must not change
    save_stream(stream, out / "stream.json")
    texts = splits.train + splits.dev + splits.test  # trim_vocab keeps what these texts use
    texts += [
        Sentence(t)
        for s in strategies
        for t in s.texts(config.seed, splits.lang, config.model.latin_words)
    ]  # auxiliary data
    learner = Learner(
        config,
        stream,
        strategies,
        model_factory(config, splits.lang, splits.train, texts),
        splits.train,
    )
    matrix = learner.run(restart=restart)
    files: dict[str, Path] = {}
    if learner.accelerator.is_main_process and learner.model is not None:
        learner.model.save_pretrained(out / "model", run_config=config.model_dump(mode="json"))
        meta = {
            "command": command,
            "git_commit": trained_at(learner.progress),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "diancang_version": __version__,
            "machine": machine(),
            # the host's speed as training ended: seconds from different hosts compare by it
            "matmul_gflops": matmul_gflops(torch.get_num_threads(), seconds=1.0),
            "dataset": splits.name,
            "scored_on": config.data.score_on,
            "encoder": config.model.encoder,
            "strategies": config.strategies,
            "protocol": f"FG-{sc.fg}-PG-{sc.pg}",
            "type_order": stream.order,
            "seed": config.seed,
            "epochs": config.train.epochs,
            "patience": config.train.patience,
            "train_sizes": [len(s.train) for s in stream.steps],
            "step_mentions": step_mentions(splits.train, stream),
            "unknown_tokens": sum(learner.model.token_encoder.unknown.values()),
            **throughput(learner.progress),
        }
        files = write_report(
            matrix, out, title=f"{config.name}: {', '.join(config.strategies)}", meta=meta
        )
    return RunResult(matrix=matrix, output_dir=out, files=files)


def compare(
    config: RunConfig, arms: list[list[str]], restart: bool = False, command: str | None = None
) -> dict[str, RunResult]:
    """Run ``config`` and, on the same stream, each strategy list of ``arms``; each run writes
    to ``output_dir/<strategies joined by +>``. The first step has no teacher, so the arms
    start from the first run's first step (``train.first_step_from``) instead of retraining
    it. Returns the results by run name, the config's own run first."""
    root = Path(config.output_dir)
    first = "+".join(split_id(s)[0] for s in config.strategies)
    results = {first: run(config.model_copy(update={"output_dir": root / first}), restart, command)}
    shared = step_dir(results[first].output_dir, 0)
    for arm in arms:
        name = "+".join(arm)
        if name in results:
            continue
        arm_config = config.model_copy(
            update={
                "strategies": arm,
                "strategy_params": {k: v for k, v in config.strategy_params.items() if k in arm},
                "output_dir": root / name,
                "train": config.train.model_copy(update={"first_step_from": shared}),
            }
        )
        results[name] = run(arm_config, restart, command)
    return results
