"""Resolve an encoder by short name, Hugging Face name or local directory (offline-friendly)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from diancang.errors import ConfigError
from diancang.registry import Registry

#: Short encoder names -> a function returning a local directory (or Hub name) to load from.
encoder_sources: Registry[Callable[[], str]] = Registry(
    "encoder", builtins=("diancang.model.sources",)
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_vocab(sentences_tokens: Iterable[list[str]], max_words: int = 20000) -> dict[str, int]:
    """A WordPiece vocabulary from training tokens: specials, every character (and its ``##``
    continuation form) and the ``max_words`` most frequent whole tokens (NFKC-normalised)."""
    chars: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for tokens in sentences_tokens:
        for tok in tokens:
            norm = unicodedata.normalize("NFKC", tok)
            words[norm] += 1
            chars.update(norm)
    vocab = list(SPECIALS)
    for c, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if not c.isspace():
            vocab += [c, "##" + c]
    seen = set(vocab)
    for w, _ in words.most_common(max_words):
        if w not in seen and len(w) > 1:
            vocab.append(w)
            seen.add(w)
    return {w: i for i, w in enumerate(vocab)}


def tiny_random_encoder(
    vocab: dict[str, int], *, hidden: int, layers: int, heads: int, max_length: int, seed: int
) -> tuple[Any, Any]:
    """A small randomly initialised BERT and its WordPiece tokenizer (for tests and demos)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(512, max_length + 2),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    return model, tokenizer


def resolve_name(name: str) -> str:
    """A short name (``e5-small``) -> its local directory; anything else is returned as is."""
    if name in encoder_sources.names():
        return encoder_sources.get(name)()
    return name


def load_pretrained_encoder(name: str) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a short name, local directory or Hub name.

    Raises a :class:`ConfigError` saying how to provide the encoder when it cannot be found.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target = resolve_name(name)
    local = Path(target).expanduser()
    # The pooler is never used (the tagger drops it): hide transformers' "pooler MISSING" report.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if local.exists():
            tokenizer = AutoTokenizer.from_pretrained(str(local))
            model = AutoModel.from_pretrained(str(local))
        else:
            tokenizer = AutoTokenizer.from_pretrained(target)
            model = AutoModel.from_pretrained(target)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load encoder {name!r} ({first})",
            fix="give a local Hugging Face model directory (model.encoder=/path/to/dir), a short "
            f"name among {encoder_sources.names()}, or 'tiny-random'; Hub downloads need network",
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, tokenizer


def trim_embeddings(encoder: Any, kept_ids: list[int]) -> None:
    """Keep only the rows ``kept_ids`` (sorted tokenizer ids) of the input embedding matrix.

    All ids up to the largest of the pad/unk/CLS/SEP ids must be kept (see
    ``TokenEncoder.special_ids``) so the padding id keeps its row number and nothing else in the
    model's config has to change.
    """
    import torch
    from torch import nn

    old = encoder.get_input_embeddings()
    rows = torch.tensor(kept_ids, dtype=torch.long)
    new = nn.Embedding(len(kept_ids), old.weight.shape[1], padding_idx=old.padding_idx)
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
    encoder.set_input_embeddings(new)
    encoder.config.vocab_size = len(kept_ids)


def strip_pooler(encoder: Any) -> None:
    """Drop the pooler (unused for tagging and MLM; keeps DDP free of unused parameters)."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def truncate_layers(encoder: Any, keep: int) -> None:
    """Keep the first ``keep`` transformer layers (BERT / XLM-R style ``encoder.layer`` lists)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(
            f"model.keep_layers is not supported for {type(encoder).__name__}",
            fix="use a BERT- or XLM-R-style encoder, or leave model.keep_layers null",
        )
    if keep > len(layers):
        raise ConfigError(
            f"model.keep_layers={keep} but the encoder has {len(layers)} layers",
            fix=f"use a value from 1 to {len(layers)}",
        )
    encoder.encoder.layer = layers[:keep]
    encoder.config.num_hidden_layers = keep
