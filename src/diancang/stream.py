"""The class-incremental task stream: type order, FG-a-PG-b steps and greedy sentence assignment.

Protocol (CFNER / CPFD): entity types are learned in ``order``; the first step introduces ``fg``
types and every later step ``pg`` types. Training (and dev) sentences are split over the steps by
:func:`greedy_assign`; in a step's train and dev only that step's *new* types are annotated (all
other types are masked to ``O``). A step's test set is the whole test set annotated with every type
learned so far (``seen_types``), future types masked.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diancang.data.record import Sentence
from diancang.errors import DataError, DiancangError

logger = logging.getLogger("diancang.stream")

ASSIGNMENT_VERSION = 1


@dataclass
class Step:
    """One step of the stream: its new types, all types seen so far, and its data."""

    index: int
    new_types: list[str]
    seen_types: list[str]
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]


@dataclass
class TaskStream:
    """The whole stream: the type order, the steps, and the JSON-able split record."""

    order: list[str]
    steps: list[Step]
    assignment: dict[str, Any]


def type_counts(sentences: Sequence[Sentence]) -> Counter[str]:
    """Mention count of each entity type in ``sentences``."""
    return Counter(span.label for s in sentences for span in s.spans)


def type_order(sentences: Sequence[Sentence], order: list[str] | None) -> list[str]:
    """The type order: ``order`` validated against the training ``sentences``, or alphabetical.

    ``order`` may name a subset of the training types (the others are then never learned and are
    masked to ``O`` everywhere), but every name must occur in the data and appear once.
    """
    known = sorted(type_counts(sentences))
    if order is None:
        if not known:
            raise DataError(
                "the training set has no entity mention, so there is no type to learn",
                fix="check the training file and its format/scheme settings",
            )
        return known
    if not order:
        raise DiancangError(
            "stream.order is empty", fix=f"give some of the training types: {', '.join(known)}"
        )
    dup = sorted(t for t, n in Counter(order).items() if n > 1)
    if dup:
        raise DiancangError(
            f"stream.order names {', '.join(dup)} more than once",
            fix="list every type once",
        )
    unknown = [t for t in order if t not in set(known)]
    if unknown:
        raise DiancangError(
            f"stream.order names type(s) not in the training data: {', '.join(unknown)}; "
            f"the training types are: {', '.join(known) or '(none)'}",
            fix="spell the types exactly as in the data, or leave stream.order null "
            "for alphabetical order",
        )
    left_out = [t for t in known if t not in set(order)]
    if left_out:
        counts = type_counts(sentences)
        logger.warning(
            "stream.order leaves out %d of the data's %d types, which are never learned and read "
            "as O everywhere: %s; add them to stream.order to learn them",
            len(left_out),
            len(known),
            ", ".join(f"{t} ({counts[t]:,} mentions)" for t in left_out),
        )
    return list(order)


def step_types(order: Sequence[str], fg: int, pg: int) -> list[list[str]]:
    """Split ``order`` into FG-``fg``-PG-``pg`` steps: ``fg`` types first, then ``pg`` per step.

    The split must fit exactly: ``len(order) == fg + k * pg`` for some ``k >= 0``.
    """
    n = len(order)
    if fg < 1 or pg < 1:
        raise DiancangError(
            f"FG-{fg}-PG-{pg}: fg and pg must be at least 1", fix="set stream.fg and stream.pg >= 1"
        )
    if n == 0:
        raise DiancangError("there is no entity type to split into steps")
    if fg > n or (n - fg) % pg != 0:
        b = pg if pg <= n else 1
        near = sorted((a for a in range(1, n + 1) if (n - a) % b == 0), key=lambda a: abs(a - fg))
        fits = [f"FG-{a}-PG-{b}" for a in near]
        raise DiancangError(
            f"FG-{fg}-PG-{pg} does not fit the {n} types ({', '.join(order)}): the first step "
            f"takes {fg} and every later step exactly {pg}, so {n} - {fg} must be a non-negative "
            f"multiple of {pg} (a smaller last step is not allowed)",
            fix=f"choose stream.fg/stream.pg that fit, e.g. {', '.join(fits[:4])}, "
            "or change stream.order",
        )
    steps = [list(order[:fg])]
    steps += [list(order[i : i + pg]) for i in range(fg, n, pg)]
    return steps


def step_capacities(n_sentences: int, steps_types: Sequence[Sequence[str]]) -> list[int]:
    """Capacity of each step, proportional to its type count and summing to ``n_sentences``.

    ``N * n_t / n_total`` rounded down; the remainder goes one by one to the steps with the
    largest fractional parts (ties: earlier step first).
    """
    sizes = [len(t) for t in steps_types]
    total = sum(sizes)
    if total == 0:
        raise DiancangError("the stream has no entity type")
    caps = [n_sentences * n // total for n in sizes]
    rems = [n_sentences * n % total for n in sizes]
    left = n_sentences - sum(caps)
    for t in sorted(range(len(sizes)), key=lambda t: (-rems[t], t))[:left]:
        caps[t] += 1
    return caps


def greedy_assign(
    sentences: Sequence[Sentence], steps_types: Sequence[Sequence[str]], seed: int
) -> list[int]:
    """The step index of each sentence (greedy sampling of CFNER/CPFD); every sentence gets one.

    Capacities come from :func:`step_capacities`. Sentences are visited in a seeded shuffled
    order; each goes to the step of its rarest type (mention frequency in ``sentences``,
    ascending; ties by position in the order) whose step still has room, trying the next-rarest
    if full. A sentence with no (ordered) type, or whose types' steps are all full, goes to a
    seeded random step that still has room.
    """
    step_of = {t: k for k, types in enumerate(steps_types) for t in types}
    rank = {t: i for i, t in enumerate(t for types in steps_types for t in types)}
    freq = type_counts(sentences)
    room = step_capacities(len(sentences), steps_types)
    rng = random.Random(seed)
    visit = list(range(len(sentences)))
    rng.shuffle(visit)
    out = [-1] * len(sentences)
    for i in visit:
        types = sorted(
            (t for t in sentences[i].types() if t in step_of), key=lambda t: (freq[t], rank[t])
        )
        target = next((step_of[t] for t in types if room[step_of[t]] > 0), None)
        if target is None:
            target = rng.choice([k for k, r in enumerate(room) if r > 0])
        room[target] -= 1
        out[i] = target
    return out


def kshot(
    sentences: Sequence[Sentence],
    candidates: Sequence[int],
    types: Sequence[str],
    k: int,
    seed: int,
) -> list[int]:
    """A K-shot subset of ``candidates`` (indices into ``sentences``), in their order: visited in
    a seeded shuffled order, a sentence is taken when it mentions a type of ``types`` that has
    fewer than ``k`` mentions so far, until every type has ``k`` (or the candidates run out).
    A type can end with more than ``k`` mentions when a taken sentence holds several."""
    wanted = set(types)
    need = dict.fromkeys(types, k)
    visit = list(candidates)
    random.Random(seed).shuffle(visit)
    taken: list[int] = []
    for i in visit:
        if not any(n > 0 for n in need.values()):
            break
        mentions = [sp.label for sp in sentences[i].spans if sp.label in wanted]
        if any(need[t] > 0 for t in mentions):
            taken.append(i)
            for t in mentions:
                need[t] -= 1
    return sorted(taken)


def _split(assign: Sequence[int], n_steps: int) -> list[list[int]]:
    groups: list[list[int]] = [[] for _ in range(n_steps)]
    for i, k in enumerate(assign):
        groups[k].append(i)
    return groups


def build_stream(
    train: Sequence[Sentence],
    dev: Sequence[Sentence],
    test: Sequence[Sentence],
    *,
    order: list[str] | None,
    fg: int,
    pg: int,
    seed: int,
    shots: int | None = None,
    shot_seed: int | None = None,
) -> TaskStream:
    """Build the FG-``fg``-PG-``pg`` stream; deterministic for a ``seed``.

    Train and dev are each split by :func:`greedy_assign` (dev with its own frequencies); a step's
    train/dev keep only the step's new types; its test keeps all types seen so far. With
    ``shots`` = K, every step after the first keeps only a K-shot subset of its train and of its
    dev sentences (:func:`kshot`, seeded by ``shot_seed``, default ``seed``); the others
    belong to no step.
    """
    full_order = type_order(train, order)
    plan = step_types(full_order, fg, pg)
    train_idx = _split(greedy_assign(train, plan, seed), len(plan))
    dev_idx = _split(greedy_assign(dev, plan, seed), len(plan))
    shot_seed = seed if shot_seed is None else shot_seed
    if shots is not None:
        for k in range(1, len(plan)):
            train_idx[k] = kshot(train, train_idx[k], plan[k], shots, shot_seed * 1009 + k)
            dev_idx[k] = kshot(dev, dev_idx[k], plan[k], shots, shot_seed * 1013 + k)
    steps: list[Step] = []
    seen: list[str] = []
    for k, new in enumerate(plan):
        seen = seen + new
        steps.append(
            Step(
                index=k,
                new_types=list(new),
                seen_types=list(seen),
                train=[train[i].keep_types(new) for i in train_idx[k]],
                dev=[dev[i].keep_types(new) for i in dev_idx[k]],
                test=[s.keep_types(seen) for s in test],
            )
        )
    assignment: dict[str, Any] = {
        "version": ASSIGNMENT_VERSION,
        "order": full_order,
        "fg": fg,
        "pg": pg,
        "seed": seed,
        "shots": shots,
        "shot_seed": shot_seed,
        "step_types": plan,
        "n_train": len(train),
        "n_dev": len(dev),
        "train": train_idx,
        "dev": dev_idx,
    }
    return TaskStream(order=full_order, steps=steps, assignment=assignment)


def step_mentions(train: Sequence[Sentence], stream: TaskStream) -> list[dict[str, Any]]:
    """Per step, what its training sentences hold under the hidden (full) annotation of
    ``train`` (the unmasked pool ``stream`` was split from): ``own`` mentions of each new type
    and their ``share`` of all its mentions in ``train`` (the rest sit in other steps'
    sentences, unlabelled), and the mentions of ``old`` (earlier) and ``future`` types there,
    which the step sees as ``O``. A diagnostic of the protocol, for measurement only."""
    total = type_counts(train)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for step, idx in zip(stream.steps, stream.assignment["train"], strict=True):
        counts = type_counts([train[i] for i in idx])
        new = set(step.new_types)
        out.append(
            {
                "own": {t: counts[t] for t in step.new_types},
                "share": {t: counts[t] / total[t] if total[t] else 0.0 for t in step.new_types},
                "old": {t: counts[t] for t in stream.order if t in seen},
                "future": sum(counts[t] for t in stream.order if t not in seen | new),
            }
        )
        seen |= new
    return out


def save_stream(stream: TaskStream, path: str | Path) -> Path:
    """Write the stream's split record (order, step types, per-step train/dev indices) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stream.assignment, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


_KEYS = ("order", "step_types", "train", "dev")


def load_assignment(path: str | Path) -> dict[str, Any]:
    """Read a split record written by :func:`save_stream` (checked for the expected keys)."""
    path = Path(path)
    fix = "delete it so the run writes a fresh one, or point to the right run folder"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("stream assignment file not found", path=path, fix=fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read the stream assignment: {err}", path=path, fix=fix) from None
    if not isinstance(data, dict):
        raise DataError("the stream assignment is not a JSON object", path=path, fix=fix)
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise DataError(
            f"the stream assignment lacks key(s) {', '.join(missing)}", path=path, fix=fix
        )
    n = len(data["step_types"])
    if not all(isinstance(data[k], list) and len(data[k]) == n for k in ("train", "dev")):
        raise DataError(
            "the stream assignment's train/dev lists do not have one entry per step",
            path=path,
            fix=fix,
        )
    return data


def check_assignment(stream: TaskStream, path: str | Path) -> None:
    """Raise a :class:`DiancangError` if the split saved at ``path`` differs from ``stream``'s.

    Used when resuming a run: the data, order, FG/PG and seed must give the same split.
    """
    saved = load_assignment(path)
    now = stream.assignment
    keys = (*_KEYS, "fg", "pg", "seed", "shots", "n_train", "n_dev")
    diff = [k for k in keys if saved.get(k) != now[k]]
    if saved.get("shot_seed", saved.get("seed")) != now["shot_seed"]:  # older records: the seed
        diff.append("shot_seed")
    if diff:
        raise DiancangError(
            f"the saved task stream differs from the one built now (in {', '.join(diff)})",
            path=path,
            fix="resume with the same data, stream.order, stream.fg/pg, stream.seed and "
            "stream.shot_seed, "
            "or start a new run in another output folder",
        )
