"""The masked-language-model head and loss, shared by ``diancang pretrain`` and ``adapt``.

e5 (and most sentence encoders) ship no MLM head, so one is built: BERT's transform (dense,
GELU, LayerNorm) and a decoder **tied to the input embeddings** (logits = transformed states x
embedding rows + a bias). It is initialised with the dense layer as the identity, the LayerNorm
at (1, 0) and a zero bias, so the first logits are the states' similarity to each piece's
embedding; ``head_warmup`` updates then train the head alone (encoder learning rate 0) before
the encoder moves, so a random head's gradients do not wash out what the encoder knows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diancang.model.features import Encoded, TokenEncoder
from diancang.pretrain.masking import Masking, apply, choose, units


class MLMHead(nn.Module):
    """Transform + tied decoder: states (N, H), embedding weight (V, H) -> logits (N, V)."""

    def __init__(self, hidden: int, vocab: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.dense.weight.copy_(torch.eye(hidden))
            self.dense.bias.zero_()

    def forward(self, states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(states)))
        return h @ embedding.T + self.bias


def mask_id(encoder: TokenEncoder) -> int:
    """The ``[MASK]`` row: the tokenizer's mask piece, or ``[UNK]`` when vocabulary trimming
    dropped it (a stand-in the encoder learns to read)."""
    raw = encoder.tokenizer.mask_token_id
    if raw is None:
        return encoder.unk_id
    if encoder.id_map is None:
        return int(raw)
    return encoder.id_map.get(int(raw), encoder.unk_id)


def masked_batch(
    items: Sequence[tuple[Encoded, list[list[int]], int]],
    masking: Masking,
    encoder: TokenEncoder,
    vocab_size: int,
    rng: random.Random,
) -> dict[str, torch.Tensor]:
    """Mask and pad a batch: ``items`` are (encoded text, its masking units, leading units).
    Returns ``input_ids``, ``attention_mask``, ``original_ids`` and ``labels`` (B, T), labels
    -100 except at masked pieces."""
    avoid = frozenset({encoder.pad_id, encoder.cls_id, encoder.sep_id, encoder.unk_id})
    rows = []
    for enc, unit_list, lead in items:
        chosen = choose(unit_list, lead, masking.rate, rng)
        rows.append(
            (
                enc.input_ids,
                *apply(enc.input_ids, chosen, masking, mask_id(encoder), vocab_size, rng, avoid),
            )
        )
    t = max(len(r[0]) for r in rows)
    out = {
        "input_ids": torch.full((len(rows), t), encoder.pad_id, dtype=torch.long),
        "original_ids": torch.full((len(rows), t), encoder.pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), t), dtype=torch.long),
        "labels": torch.full((len(rows), t), -100, dtype=torch.long),
    }
    for i, (orig, ids, labels) in enumerate(rows):
        n = len(ids)
        out["input_ids"][i, :n] = torch.tensor(ids)
        out["original_ids"][i, :n] = torch.tensor(orig)
        out["attention_mask"][i, :n] = 1
        out["labels"][i, :n] = torch.tensor(labels)
    return out


def prepare(
    texts: Sequence[Any], encoder: TokenEncoder, masking: Masking
) -> list[tuple[Encoded, list[list[int]], int]]:
    """Encode :class:`~diancang.pretrain.corpus.RawText` s once, with their masking units."""
    out = []
    for t in texts:
        enc = encoder.encode(t.tokens)
        if enc.word_index:
            out.append((enc, *units(enc, masking.mode, t.words, t.entities)))
    return out


def mlm_loss(
    encoder: nn.Module, head: MLMHead, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy at the masked pieces, and the encoder's last states (B, T, H)."""
    states = encoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    picked = batch["labels"] != -100
    weight = encoder.get_input_embeddings().weight  # type: ignore[operator]
    logits = head(states[picked], weight)
    return F.cross_entropy(logits, batch["labels"][picked]), states


def feature_distillation(
    states: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared distance of the student's states to the teacher's (B, T, H) over real
    pieces: what keeps continued pre-training from washing out earlier steps."""
    keep = attention_mask.bool()
    return F.mse_loss(states[keep], teacher[keep])
