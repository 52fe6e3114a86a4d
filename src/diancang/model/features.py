"""Turn tokens into sub-token ids with first-sub-token alignment, and batch them.

Word-piece languages: each token is split by the tokenizer and the token's label sits on its first
piece. Chinese: one piece per character, looked up directly after NFKC normalisation (also
``▁c`` for SentencePiece vocabularies); unknown characters are counted.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class Encoded:
    """One sentence as model input: ``input_ids`` (T,) and ``word_index`` (W,), the position in
    ``input_ids`` of each kept token's first piece (tokens past ``max_length`` are dropped)."""

    input_ids: list[int]
    word_index: list[int]


class TokenEncoder:
    """Maps token lists to :class:`Encoded` with a per-token cache; counts unknown tokens."""

    def __init__(
        self, tokenizer: Any, *, lang: str, max_length: int, kept_ids: list[int] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.lang = lang
        self.max_length = max_length
        self.unknown: Counter[str] = Counter()
        self._cache: dict[str, list[int]] = {}
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self.unk_id: int = tokenizer.unk_token_id
        self.cls_id: int = (
            tokenizer.cls_token_id
            if tokenizer.cls_token_id is not None
            else (tokenizer.bos_token_id)
        )
        self.sep_id: int = (
            tokenizer.sep_token_id
            if tokenizer.sep_token_id is not None
            else (tokenizer.eos_token_id)
        )
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._lower = bool(getattr(tokenizer, "do_lower_case", False))
        # A trimmed vocabulary: tokenizer id -> row of the trimmed embedding (see trim_ids).
        self.id_map: dict[int, int] | None = None
        if kept_ids is not None:
            self.id_map = {old: new for new, old in enumerate(kept_ids)}
            self.unk_id, self.cls_id, self.sep_id, self.pad_id = (
                self.id_map[i] for i in (self.unk_id, self.cls_id, self.sep_id, self.pad_id)
            )

    def _char_id(self, norm: str) -> int | None:
        for cand in (norm, "▁" + norm, norm.lower() if self._lower else None):
            if cand is not None and cand in self._vocab:
                return self._vocab[cand]
        return None

    def pieces(self, token: str) -> list[int]:
        """Sub-token ids of one token (never empty: an unknown token maps to ``[UNK]``)."""
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        norm = unicodedata.normalize("NFKC", token).strip() or token
        ids: list[int] = []
        if self.lang == "zh" or len(norm) == 1:
            one = self._char_id(norm) if len(norm) == 1 else None
            if one is not None:
                ids = [one]
        if not ids:
            ids = [int(i) for i in self.tokenizer.encode(norm, add_special_tokens=False)]
        if self.id_map is not None:
            ids = [self.id_map.get(i, self.unk_id) for i in ids]
        if not ids or all(i == self.unk_id for i in ids):
            self.unknown[token] += 1
            ids = [self.unk_id]
        self._cache[token] = ids
        return ids

    def special_ids(self) -> list[int]:
        """Every id up to the largest of the pad, unknown, CLS and SEP ids: what vocabulary
        trimming always keeps, so those ids keep their row numbers. (Other specials such as
        XLM-R's ``<mask>`` = 250001 are not used for tagging.)"""
        if self.id_map is not None:
            raise ValueError("special_ids needs an untrimmed encoder")
        top = max(self.pad_id, self.unk_id, self.cls_id, self.sep_id)
        return list(range(top + 1))

    def used_ids(self, sentences: Iterable[Sequence[str]]) -> list[int]:
        """Sorted tokenizer ids needed to encode ``sentences``, plus :meth:`special_ids`."""
        if self.id_map is not None:
            raise ValueError("used_ids needs an untrimmed encoder")
        used = set(self.special_ids())
        for tokens in sentences:
            for tok in tokens:
                used.update(self.pieces(tok))
        return sorted(used)

    def encode(self, tokens: Sequence[str]) -> Encoded:
        """``[CLS] pieces... [SEP]`` truncated to ``max_length``; see :class:`Encoded`."""
        ids = [self.cls_id]
        word_index: list[int] = []
        budget = self.max_length - 1
        for tok in tokens:
            p = self.pieces(tok)
            if len(ids) + len(p) > budget:
                break
            word_index.append(len(ids))
            ids.extend(p)
        ids.append(self.sep_id)
        return Encoded(ids, word_index)


def collate(
    items: Sequence[Encoded], labels: Sequence[Sequence[int]] | None, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad a batch. Returns ``input_ids``/``attention_mask`` (B, T), ``word_index``/``word_mask``
    (B, W) and, when ``labels`` is given, ``labels`` (B, W) with -100 at padding."""
    b = len(items)
    t = max(len(e.input_ids) for e in items)
    w = max(1, max(len(e.word_index) for e in items))
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    word_index = torch.zeros((b, w), dtype=torch.long)
    word_mask = torch.zeros((b, w), dtype=torch.bool)
    out_labels = torch.full((b, w), -100, dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention[i, :n] = 1
        k = len(e.word_index)
        word_index[i, :k] = torch.tensor(e.word_index, dtype=torch.long)
        word_mask[i, :k] = True
        if labels is not None:
            out_labels[i, :k] = torch.tensor(list(labels[i])[:k], dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "word_index": word_index,
        "word_mask": word_mask,
    }
    if labels is not None:
        batch["labels"] = out_labels
    return batch


def gather_words(states: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Each word's first-piece state: (B, T, H), (B, W) -> (B, W, H)."""
    idx = word_index.unsqueeze(-1).expand(-1, -1, states.shape[-1])
    out: torch.Tensor = states.gather(1, idx)
    return out


def run_lstm(lstm: nn.LSTM, feats: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """A batch-first BiLSTM over the real words only: (B, W, H), (B, W) -> (B, W, H')."""
    lengths = word_mask.sum(1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(
        feats, lengths, batch_first=True, enforce_sorted=False
    )
    out, _ = lstm(packed)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
    return padded


class SideTower(nn.Module):
    """A BiLSTM tower beside the main features (the asymmetric multi-task mode's auxiliary
    tower): the main features also read its states through a projection that starts at zero,
    so attaching a tower changes no prediction until it is trained."""

    def __init__(self, size: int, hidden: int, out: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(size, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, out)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def states(self, shared: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """The tower's own states: shared (B, W, H), word_mask (B, W) -> (B, W, 2 * hidden)."""
        return run_lstm(self.lstm, shared, word_mask)

    def forward(
        self, shared: torch.Tensor, word_mask: torch.Tensor, main: torch.Tensor
    ) -> torch.Tensor:
        """main (B, W, H') plus the projected tower states of shared (B, W, H) -> (B, W, H')."""
        return main + self.proj(self.states(shared, word_mask))
