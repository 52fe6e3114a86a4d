"""``diancang pretrain``'s typed configuration (YAML plus dotted overrides, like a run's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diancang.pretrain.corpus import TextSource
from diancang.pretrain.masking import Masking


class PretrainConfig(BaseModel):
    """Continued masked-language-model training of an encoder on raw text."""

    model_config = ConfigDict(extra="forbid")
    encoder: str = Field("e5-small", description="Short name, local directory or Hub name.")
    keep_layers: int | None = Field(
        None, ge=1, description="Keep the first N transformer layers (as model.keep_layers)."
    )
    lang: Literal["zh", "en"] = Field("zh", description="Language of the texts.")
    latin_words: bool = Field(True, description="Chinese: a Latin run is one token (as models).")
    texts: list[TextSource] = Field(description="The raw text files.")
    output_dir: Path = Field(
        Path("runs/pretrain"), description="Where the new encoder (usable as model.encoder) goes."
    )
    masking: Masking = Field(default_factory=Masking, description="How pieces are masked.")  # type: ignore[arg-type]
    max_length: int = Field(128, ge=8, description="Pieces a text keeps (the rest is cut).")
    trim_vocab: bool = Field(
        True,
        description="Train only the embedding rows the texts use (faster softmax); the "
        "written encoder has the full vocabulary, other rows unchanged.",
    )
    max_vocab: int | None = Field(
        None,
        ge=16,
        description="Keep at most this many rows (the most frequent pieces); "
        "pieces outside them read as [UNK] and are counted. null: all the texts use.",
    )
    heldout: int = Field(200, ge=0, description="Texts held out to measure the MLM loss.")
    epochs: int = Field(1, ge=1, description="Passes over the texts.")
    max_updates: int | None = Field(None, ge=1, description="Stop after this many updates.")
    batch_size: int = Field(32, ge=1, description="Texts per update.")
    lr: float = Field(5e-5, gt=0, description="Encoder learning rate.")
    head_lr: float = Field(1e-3, gt=0, description="MLM head learning rate.")
    head_warmup: int = Field(
        50, ge=0, description="Updates that train the new head alone (encoder rate 0)."
    )
    warmup: float = Field(0.06, ge=0, le=1, description="Share of updates warming the rate up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    average: Literal["none", "ema", "swa"] = Field(
        "none",
        description="Write averaged weights: ema (exponential) or swa (mean of the "
        "weights after swa_start of the updates).",
    )
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per update.")
    swa_start: float = Field(0.5, ge=0, lt=1, description="SWA: share of updates before averaging.")
    save_every: int = Field(200, ge=1, description="Updates between resumable checkpoints.")
    seed: int = Field(1, description="Seed of order, masking and the held-out texts.")
    progress: bool = Field(True, description="A progress bar on a terminal.")
