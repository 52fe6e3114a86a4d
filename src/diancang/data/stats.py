"""Dataset statistics: counts per split and per file, every defect counted, as a dict or Markdown.

Two levels, because presets may re-split official files (CLUENER: dev is cut out of train.json):

- ``splits``: the sentences a run trains and evaluates on (train / dev / test);
- ``files``: each file as read, so the official counts stay visible. ``annotated_mentions`` =
  mentions loaded + mentions dropped by a counted defect (e.g. CLUENER's one overlapping pair:
  23,970 loaded + 1 dropped = the 23,971 annotated in ``train.json``).

Dataset-level defects (duplicate sentences, sentences shared between splits) are counted on token
sequences; reader defects come from each file's :class:`~diancang.data.record.DefectLog`.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diancang.data import defects as D
from diancang.data.presets import DatasetSplits
from diancang.data.record import Sentence
from diancang.errors import DataError
from diancang.evaluation.report import markdown_table

SPLITS: tuple[str, ...] = ("train", "dev", "test")


def _split_stats(sentences: list[Sentence]) -> dict[str, Any]:
    lengths = [len(s.tokens) for s in sentences]
    types = Counter(sp.label for s in sentences for sp in s.spans)
    median = statistics.median(lengths) if lengths else 0
    return {
        "sentences": len(sentences),
        "mentions": sum(types.values()),
        "types": dict(sorted(types.items())),
        "tokens": sum(lengths),
        "max_length": max(lengths, default=0),
        "median_length": int(median) if float(median).is_integer() else median,
        "duplicate_sentences": len(sentences) - len({tuple(s.tokens) for s in sentences}),
    }


#: Words in a file name that give its split (``weiboNER_2nd_conll.dev``, ``train.char``).
ROLE_WORDS = {
    "train": {"train", "training"},
    "dev": {"dev", "valid", "validation", "eval"},
    "test": {"test"},
}


def split_files(folder: Path) -> dict[str, Path]:
    """The train/dev/test files of a data folder, told by a word of their names. More than one
    candidate for a split, or none at all, is a :class:`DataError` naming them."""
    found: dict[str, list[Path]] = {role: [] for role in ROLE_WORDS}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            words = set(re.split(r"[^a-z]+", f.name.lower()))
            for role, keys in ROLE_WORDS.items():
                if words & keys:
                    found[role].append(f)
    many = {role: fs for role, fs in found.items() if len(fs) > 1}
    if many:
        role, fs = next(iter(many.items()))
        raise DataError(
            f"{len(fs)} files could be the {role} split: {', '.join(f.name for f in fs)}",
            path=folder,
            fix="give one file as PATH and the others with --dev and --test",
        )
    chosen = {role: fs[0] for role, fs in found.items() if fs}
    if not chosen:
        raise DataError(
            "no file here is named as a train, dev or test split",
            path=folder,
            fix="give a data file as PATH (and --dev/--test), or name the files train/dev/test",
        )
    return chosen


def long_sentences(
    splits: DatasetSplits, max_length: int, count: Callable[[str], int]
) -> dict[str, dict[str, int]]:
    """Per split: sentences longer than ``max_length`` (``count`` gives a token's sub-token
    pieces; two places go to the encoder's special tokens), the mentions in them, and those
    mentions that end past the first window (what plain truncation would lose; diancang
    splits such sentences into windows instead)."""
    budget = max_length - 2
    out = {}
    for name in SPLITS:
        n = mentions = past = 0
        for s in getattr(splits, name):
            ends = []
            total = 0
            for tok in s.tokens:
                total += count(tok)
                ends.append(total)
            if not ends or ends[-1] <= budget:
                continue
            n += 1
            mentions += len(s.spans)
            past += sum(1 for sp in s.spans if ends[sp.end - 1] > budget)
        out[name] = {"sentences": n, "mentions": mentions, "mentions_past_first_window": past}
    return out


def dataset_stats(splits: DatasetSplits) -> dict[str, Any]:
    """Counts per split and per file, defects per file, and dataset-level defects (a JSON-able
    dict; see the module docstring for the keys). Splits without sentences are left out."""
    parts = {name: getattr(splits, name) for name in SPLITS if getattr(splits, name)}
    out: dict[str, Any] = {"name": splits.name, "lang": splits.lang, "notes": list(splits.notes)}
    out["splits"] = {name: _split_stats(sents) for name, sents in parts.items()}
    for name, entry in out["splits"].items():
        entry["defects"] = [
            line for f in splits.files if name in f.role.split("+") for line in f.defects.summary()
        ]
    out["files"] = [
        {
            "path": f.path,
            "role": f.role,
            "sentences": f.sentences,
            "mentions": f.mentions,
            "dropped_mentions": f.dropped_mentions,
            "annotated_mentions": f.mentions + f.dropped_mentions,
            "tag_sequence_errors": sum(f.defects.counts[k] for k in D.TAG_SEQUENCE),
            "defects": f.defects.summary(),
        }
        for f in splits.files
    ]
    keys = {name: {tuple(s.tokens) for s in sents} for name, sents in parts.items()}
    dataset: dict[str, int] = {}
    for name in parts:
        n = out["splits"][name]["duplicate_sentences"]
        if n:
            dataset[f"duplicate sentences in {name}"] = n
    for a, b in (("train", "test"), ("train", "dev"), ("dev", "test")):
        n = len(keys.get(a, set()) & keys.get(b, set()))
        if n:
            dataset[f"sentences shared by {a} and {b}"] = n
    out["dataset_defects"] = dataset
    out["defects"] = splits.defects.summary()
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def fmt(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)

    return markdown_table(header, [[fmt(v) for v in row] for row in rows])


def render_stats_markdown(stats: dict[str, Any]) -> str:
    """The dict of :func:`dataset_stats` as a Markdown report."""
    out = [f"# Dataset {stats['name']} ({stats['lang']})", ""]
    out += [f"- {n}" for n in stats["notes"]] + ([""] if stats["notes"] else [])
    sp = stats["splits"]
    out += ["## Splits", ""]
    out += _table(
        ["split", "sentences", "mentions", "tokens", "max length", "median length", "duplicates"],
        [
            [
                name,
                s["sentences"],
                s["mentions"],
                s["tokens"],
                s["max_length"],
                s["median_length"],
                s["duplicate_sentences"],
            ]
            for name, s in sp.items()
        ],
    )
    types = sorted({t for s in sp.values() for t in s["types"]})
    out += ["", "## Mentions per type", ""]
    out += _table(["type", *sp], [[t, *(s["types"].get(t, 0) for s in sp.values())] for t in types])
    long = stats.get("long_sentences")
    if long:
        out += [
            "",
            f"## Sentences longer than max_length {long['max_length']} ({long['counted_in']})",
            "",
            "diancang splits them into windows (training: cut between entities; prediction: "
            "overlapping windows merged back), so nothing is dropped; plain truncation would "
            "lose the mentions past the first window.",
            "",
        ]
        out += _table(
            ["split", "sentences", "mentions in them", "mentions past the first window"],
            [
                [n, c["sentences"], c["mentions"], c["mentions_past_first_window"]]
                for n, c in long["splits"].items()
            ],
        )
    out += ["", "## Files as read", ""]
    out += _table(
        ["file", "role", "sentences", "mentions loaded", "dropped", "annotated", "tag-seq errors"],
        [
            [
                f["path"],
                f["role"],
                f["sentences"],
                f["mentions"],
                f["dropped_mentions"],
                f["annotated_mentions"],
                f["tag_sequence_errors"],
            ]
            for f in stats["files"]
        ],
    )
    out += ["", "## Defects", ""]
    any_defect = False
    for f in stats["files"]:
        for line in f["defects"]:
            out.append(f"- {f['path']}: {line}")
            any_defect = True
    for kind, n in stats["dataset_defects"].items():
        out.append(f"- {n:,} {kind}")
        any_defect = True
    if not any_defect:
        out.append("- none found")
    return "\n".join(out) + "\n"


def load_for_stats(
    path: str,
    *,
    dev: Path | None = None,
    test: Path | None = None,
    format: str = "conll",
    scheme: str = "auto",
    lang: str | None = None,
    strict: bool = False,
) -> DatasetSplits:
    """What ``diancang data stats PATH`` reads: a preset name or a preset's folder (as the
    preset defines it), a data folder (:func:`split_files`), or a data file read whole as
    ``train`` (with ``dev``/``test`` files beside it); never re-split. Without ``lang`` the
    language is guessed from the text (:func:`~diancang.data.tokenize.guess_lang`)."""
    from diancang.data.presets import PRESETS, load_files, load_preset

    p = Path(path)
    if p.is_dir() and p.name in PRESETS and dev is None and test is None:
        return load_preset(p.name, p, strict=strict)
    if not p.exists() and path in PRESETS:
        return load_preset(path, None, strict=strict)
    if p.is_dir():
        found = split_files(p)
        files = [found.get("train"), dev or found.get("dev"), test or found.get("test")]
    elif p.is_file():
        files = [p, dev, test]
    else:
        raise DataError(
            "neither a file, a folder, nor a preset name",
            path=path,
            fix=f"give a data file, a folder of train/dev/test files, or one of {sorted(PRESETS)}",
        )

    return load_files(
        *files, format=format, scheme=scheme, lang=lang, strict=strict, split_dev=False
    )
