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

import statistics
from collections import Counter
from typing import Any

from diancang.data import defects as D
from diancang.data.presets import DatasetSplits
from diancang.data.record import Sentence

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


def dataset_stats(splits: DatasetSplits) -> dict[str, Any]:
    """Counts per split and per file, defects per file, and dataset-level defects (a JSON-able
    dict; see the module docstring for the keys)."""
    parts = {name: getattr(splits, name) for name in SPLITS}
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
    for name in SPLITS:
        n = out["splits"][name]["duplicate_sentences"]
        if n:
            dataset[f"duplicate sentences in {name}"] = n
    for a, b in (("train", "test"), ("train", "dev"), ("dev", "test")):
        n = len(keys[a] & keys[b])
        if n:
            dataset[f"sentences shared by {a} and {b}"] = n
    out["dataset_defects"] = dataset
    out["defects"] = splits.defects.summary()
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def fmt(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


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
