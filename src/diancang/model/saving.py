"""A tagger's folder: ``config.json`` (the spec, ``id2label``, the run config), the weights as
``model.safetensors`` and ``encoder/`` (the encoder's config and tokenizer). No pickle."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from diancang import __version__
from diancang.errors import DiancangError
from diancang.model.tagger import Tagger, TaggerSpec


def save(tagger: Tagger, directory: str | Path, run_config: dict[str, Any] | None = None) -> None:
    """Write ``config.json``, ``model.safetensors`` and ``encoder/`` (config + tokenizer)."""
    d = Path(directory)
    (d / "encoder").mkdir(parents=True, exist_ok=True)
    tagger.encoder.config.save_pretrained(d / "encoder")  # type: ignore[union-attr,operator]
    tagger.tokenizer.save_pretrained(str(d / "encoder"))
    save_model(tagger, str(d / "model.safetensors"))
    config = {
        "diancang_version": __version__,
        "architecture": "Tagger",
        **asdict(tagger.spec),
        "id2label": dict(enumerate(tagger.spec.labels)),
        "types": tagger.types,
        "vocab_size": int(tagger.encoder.get_input_embeddings().weight.shape[0]),  # type: ignore[operator]
        "run_config": run_config,
    }
    (d / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), "utf-8")


def load(directory: str | Path) -> Tagger:
    """Rebuild a tagger saved by :func:`save` (no network, no pickle)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise DiancangError(
            "not a diancang model folder (no config.json)",
            path=d,
            fix="give the folder written by a run (runs/<name>/model) or save_pretrained",
        )
    raw = json.loads(cfg_path.read_text("utf-8"))
    keys = TaggerSpec.__dataclass_fields__.keys()
    spec = TaggerSpec(**{k: v for k, v in raw.items() if k in keys})
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(d / "encoder")))
    tokenizer = AutoTokenizer.from_pretrained(str(d / "encoder"))
    model = Tagger(encoder, tokenizer, spec)
    try:
        load_model(model, str(d / "model.safetensors"))
    except RuntimeError as e:  # shapes or names that this version's model does not have
        raise DiancangError(
            f"the saved weights do not fit this version's {spec.head} model (saved by "
            f"diancang {raw.get('diancang_version', '?')}, this is {__version__}): "
            f"{str(e).splitlines()[0]}",
            path=d / "model.safetensors",
            fix="retrain the model with this version, or load it with the version that saved it",
        ) from e
    model.eval()
    return model
