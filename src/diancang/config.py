"""Typed run configuration: pydantic models, loadable from YAML, unknown keys rejected.

Every hyperparameter has a default and a description (``diancang config --help`` style docs come
from the ``Field`` descriptions). Strategy hyperparameters live under ``strategy_params.<name>`` and
are validated by that strategy's own ``Params`` model when the run starts.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diancang.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which data to read and how."""

    preset: str | None = Field(
        "msra-demo",
        description="Dataset preset (cluener2020, weibo_ner, conll2003, wnut17, msra, msra-demo, "
        "demo); null to give train/dev/test paths yourself.",
    )
    dir: Path | None = Field(
        None, description="Folder holding the preset's files (default: ../shared/data/<preset>)."
    )
    name: str | None = Field(
        None,
        description="Dataset name in results and reports (default: the preset, or the data "
        "files' folder when their names only say train/dev/test).",
    )
    train: Path | None = Field(None, description="Training file (when preset is null).")
    dev: Path | None = Field(None, description="Development file (when preset is null).")
    test: Path | None = Field(None, description="Test file (when preset is null).")
    format: Literal["conll", "cluener", "jsonl"] = Field(
        "conll", description="File format when preset is null."
    )
    scheme: Literal["auto", "bio", "iob1", "bioes", "bmes"] = Field(
        "auto", description="Tag scheme of column files (auto: detected from the tags)."
    )
    lang: Literal["zh", "en"] = Field("zh", description="Language when preset is null.")
    strict: bool = Field(False, description="Raise on the first data defect instead of warning.")
    max_train: int | None = Field(
        None,
        ge=1,
        description="Keep at most this many training sentences (a seeded subsample that keeps "
        "a mention of every type).",
    )
    max_dev: int | None = Field(None, ge=1, description="Keep at most this many dev sentences.")
    max_test: int | None = Field(None, ge=1, description="Keep at most this many test sentences.")
    score_on: Literal["test", "dev"] = Field(
        "test",
        description="The split every step is scored on: test to report, dev to tune (sweeps).",
    )


class StreamConfig(_Section):
    """The class-incremental protocol: type order and the FG-a-PG-b split."""

    order: list[str] | None = Field(
        None, description="Type order; default alphabetical over the training types."
    )
    fg: int = Field(1, ge=1, description="Number of types in the first step (FG-a).")
    pg: int = Field(1, ge=1, description="Number of types in each later step (PG-b).")
    seed: int = Field(1, description="Seed of the greedy sentence-to-step assignment.")
    shots: int | None = Field(
        None,
        ge=1,
        description="K-shot: every step after the first keeps K mentions per new type (a greedy "
        "seeded subset of its train and dev sentences); null keeps all.",
    )
    shot_seed: int | None = Field(
        None,
        description="Seed of the K-shot subsets (null: `seed`). Another value draws other K "
        "sentences while every step keeps the same pool, so a base model trained on step 1 "
        "serves every shot seed.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Run only the first N steps of the stream (null: all)."
    )


class ModelConfig(_Section):
    """Encoder and head."""

    encoder: str = Field(
        "tiny-random",
        description="Hugging Face name or local directory, or 'tiny-random' (a small random BERT "
        "whose vocabulary is built from the training data).",
    )
    max_length: int = Field(
        128,
        ge=8,
        description="Sub-tokens the encoder reads at once. A longer sentence is split into "
        "windows of this size: cut between entities for training, overlapping and merged back "
        "for evaluation and prediction; nothing is dropped.",
    )
    latin_words: bool = Field(
        True,
        description="Chinese text: read each run of Latin letters and digits ('iPhone', "
        "'NBA2K') as one token, in training, evaluation and prediction alike (false: one "
        "character each, as the corpora are annotated; models saved before this setting "
        "existed read that way).",
    )
    window_overlap: int = Field(
        16,
        ge=0,
        description="Tokens of context neighbouring windows share when a long sentence is "
        "tagged in windows (each token is read from the window where it is most central).",
    )
    trim_vocab: bool = Field(
        False,
        description="Keep only the embedding rows of sub-tokens the run's texts use (ids up to "
        "the largest special id are always kept); other pieces become [UNK]. Saves memory and "
        "optimizer time with large multilingual vocabularies.",
    )
    keep_layers: int | None = Field(
        None, ge=1, description="Keep only the first N encoder layers (null: all)."
    )
    freeze_embeddings: bool = Field(False, description="Do not train the word embeddings.")
    crf: bool = Field(False, description="Add a CRF layer (growable transitions).")
    head: Literal["linear", "label_semantic", "prompt_span"] = Field(
        "linear",
        description="linear: a learned row per label; label_semantic: labels scored by the "
        "encoded text of their type (see `types`); prompt_span: start/end pointers read behind "
        "each type's text as a prompt (UIE-style). The last two add no parameter per new type.",
    )
    bilstm: bool = Field(False, description="Add a BiLSTM layer between encoder and head.")
    lstm_hidden: int = Field(128, ge=8, description="BiLSTM hidden size per direction.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout before the head.")
    tiny_hidden: int = Field(128, ge=8, description="tiny-random: hidden size.")
    tiny_layers: int = Field(2, ge=1, description="tiny-random: number of layers.")
    tiny_heads: int = Field(2, ge=1, description="tiny-random: attention heads.")


class TrainConfig(_Section):
    """Optimisation, the same for every step."""

    epochs: int = Field(3, ge=1, description="Epochs per step (the most, with `patience`).")
    patience: int | None = Field(
        None,
        ge=1,
        description="Converged steps: stop a step once its dev F1 (macro over its own types) "
        "has not improved for this many epochs (epochs before it first rises above 0 do not "
        "count), and keep the best epoch's weights; `epochs` is then the maximum. Null: train "
        "exactly `epochs`. Needs dev data in every step.",
    )
    min_updates: int | None = Field(
        None,
        ge=1,
        description="A step trains for at least this many optimizer updates: a step whose "
        "data is small gets more than `epochs` epochs (still stopped by `patience`). Null: "
        "`epochs` alone.",
    )
    batch_size: int = Field(16, ge=1, description="Training batch size (sentences).")
    eval_batch_size: int = Field(64, ge=1, description="Evaluation batch size.")
    lr: float = Field(5e-5, gt=0, description="Learning rate of the encoder.")
    head_lr: float = Field(1e-3, gt=0, description="Learning rate of the head, CRF and BiLSTM.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup: float = Field(0.1, ge=0, le=1, description="Linear warm-up fraction of each step.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's).")
    progress: bool = Field(True, description="Show progress bars.")
    first_step_from: Path | None = Field(
        None,
        description="A model folder already trained on the first step's types: the first step "
        "is scored and its strategies' end-of-step hooks run, but it is not retrained (several "
        "runs can share one base step).",
    )
    teacher_cache_mb: int = Field(
        4096,
        ge=0,
        description="Keep the previous model's outputs on the step's sentences (up to this "
        "many MB) so a teacher costs one forward pass per step, not one per epoch; 0: none.",
    )
    eval_each_epoch: bool = Field(
        False, description="Also score the step's dev set (its own types) after every epoch."
    )
    epoch_checkpoints: bool = Field(
        True,
        description="`diancang run` saves an unfinished step's training state after every epoch "
        "(output_dir/work/epoch-state/, removed once the step is saved), so a killed run "
        "started again goes on from its last whole epoch, to the same weights, instead of "
        "from the step's start. Costs one write of the weights and optimizer state an epoch; "
        "only on one process and when every strategy can resume mid-step.",
    )

    def epochs_for(self, batches: int) -> int:
        """The epochs a step of ``batches`` updates an epoch trains at most: ``epochs``, or
        more where ``min_updates`` asks for them."""
        if self.min_updates:
            return max(self.epochs, -(-self.min_updates // max(1, batches)))
        return self.epochs


class RunConfig(_Section):
    """A whole continual run."""

    name: str = Field("run", description="Run name (used in reports).")
    output_dir: Path = Field(Path("runs/run"), description="Where the run writes everything.")
    seed: int = Field(1, description="Seed of model initialisation and data order.")
    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    stream: StreamConfig = Field(default_factory=StreamConfig)  # type: ignore[arg-type]
    model: ModelConfig = Field(default_factory=ModelConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]
    strategies: list[str] = Field(
        default_factory=lambda: ["finetune"],
        min_length=1,
        description="Strategies, composed in order (e.g. [distill, ema]).",
    )
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-strategy hyperparameters, by strategy name."
    )
    types: dict[str, str] = Field(
        default_factory=dict,
        description="Optional one-line description per entity type, e.g. {PER: 人名}; the "
        "label-semantic head encodes it (default: the type's name).",
    )


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {dotted!r}: {k!r} is not a section", fix="override a leaf key"
            )
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.epochs=2", "strategies=[finetune]"]`` -> ``[("train.epochs", 2), ...]``."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} has no '='", fix="write overrides as key.sub=value"
            )
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and any(c.isdigit() for c in value):  # YAML 1.1: 2e-4 is a str
            with contextlib.suppress(ValueError):
                value = float(value)
        out.append((key.strip(), value))
    return out


def format_validation_error(err: ValidationError, source: str) -> str:
    """One paragraph naming each bad key, what is wrong, and the expected form."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return f"{source}: invalid configuration: " + "; ".join(parts)


def build_config(
    data: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()
) -> RunConfig:
    """Validate a raw mapping (plus dotted overrides) into a :class:`RunConfig`."""
    return validate_as(RunConfig, data, source, overrides)


def validate_as(
    schema: type[C], data: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()
) -> C:
    """Validate a raw mapping (plus dotted overrides) into ``schema`` (any config model)."""
    tree = copy.deepcopy(dict(data))  # overrides never reach the caller's sections
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, source),
            fix="correct or remove the keys named; see configs/ for examples",
        ) from None


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML file (or the defaults when ``path`` is None) and apply dotted overrides."""
    return load_as(RunConfig, path, overrides)


def load_as(schema: type[C], path: str | Path | None, overrides: Sequence[str] = ()) -> C:
    """:func:`load_config` for any config model (``diancang pretrain``'s too)."""
    raw: Any = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError("config file not found", path=p, fix="give the path of a YAML file")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise ConfigError(
                f"YAML syntax error: {problem}", path=p, line=line, fix="fix the YAML syntax"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                "the top level must be a mapping", path=p, fix="write key: value pairs"
            )
    return validate_as(schema, raw, source, overrides)


def dump_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (the form :func:`load_config` reads back)."""
    Path(path).write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
