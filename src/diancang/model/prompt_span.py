"""The prompted span head (``prompt_span``, UIE-style): one question per type.

For type ``T`` the encoder reads ``[CLS] text(T) [SEP] sentence [SEP]`` (``text(T)``: its
description under ``types:``, else its name) and a shared layer gives every word a *start* and
an *end* pointer logit for ``T`` from the word's feature ``h`` and the prompt's vector ``q`` (the
mean state of the prompt's tokens): ``W [h; h * P q]``. The product puts the type asked for
into the score directly; with the word feature alone the head must wait for the encoder to
learn to read the prompt (a pretrained encoder that was never trained as UIE is slow at that:
benchmarks/results/cluener-fewshot-prompt_span-probe.md).

A span of ``T`` runs from a start word to the nearest end word at or after it. All (sentence,
type) pairs of a batch go through the encoder together, so tagging with many types costs one
batched call, not one call per type.

A new type adds **no parameter** (its prompt is text), and can be tried zero-shot.

To fit the tagger's interface the output ``logits`` (B, W, 1 + 2n) keep the label order
``O, B-T1, I-T1, ...`` but hold pointer logits: column ``B-T`` the start logit of ``T``, column
``I-T`` its end logit (column ``O`` is 0). Strategies that read logits as label scores refuse
this head. In training a type's prompt learns from a batch only when the batch has a labelled
mention of it: a step annotated for other types says nothing about it (its logits are then a
constant and get no loss), which also spares the encoder calls of those prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from diancang.model.tagger import Tagger, TaggerOutput

#: The logit given to the pointers of prompts skipped in a training batch.
SKIPPED = -20.0


class PromptSpanHead(nn.Module):
    """Start/end pointer logits of words read against their prompt: word features (N, W, H)
    and prompt vectors (N, E) -> (N, W, 2)."""

    def __init__(self, in_features: int, prompt_features: int) -> None:
        super().__init__()
        self.query = nn.Linear(prompt_features, in_features)
        self.pointers = nn.Linear(2 * in_features, 2)

    def forward(self, features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        q = self.query(prompts)[:, None, :].expand_as(features)
        return self.pointers(torch.cat([features, features * q], -1))


def prompted_batch(
    tagger: Tagger,
    types: list[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    word_index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sentence of the batch behind each type's prompt, type-major: rows ``k * B + b``.

    input_ids, attention_mask (B, T); word_index (B, W) -> input_ids, attention_mask
    (n * B, P + T - 1), word_index (n * B, W) and the prompt's positions (n * B, P + T - 1)
    (its tokens without [CLS] and [SEP]), P the longest prompt with its [CLS] and [SEP].
    """

    prompts = [
        tagger.encode(tagger.tokenize(tagger.spec.type_texts.get(t, t))[0]).input_ids for t in types
    ]
    width = max(len(p) for p in prompts)
    b, t = input_ids.shape
    pad = tagger.token_encoder.pad_id
    device = input_ids.device
    ids = torch.full((len(types) * b, width + t - 1), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    index = torch.zeros((len(types) * b, word_index.shape[1]), dtype=torch.long, device=device)
    in_prompt = torch.zeros_like(ids, dtype=torch.bool)
    for k, prompt in enumerate(prompts):
        rows = slice(k * b, (k + 1) * b)
        n = len(prompt)
        ids[rows, :n] = torch.tensor(prompt, device=device)
        mask[rows, :n] = 1
        in_prompt[rows, 1 : max(n - 1, 2)] = True
        ids[rows, n : n + t - 1] = input_ids[:, 1:]
        mask[rows, n : n + t - 1] = attention_mask[:, 1:]
        index[rows] = word_index + (n - 1)
    return ids, mask, index, in_prompt


def pointer_targets(
    labels: torch.Tensor, word_mask: torch.Tensor, n_types: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BIO label ids (B, W) (-100: unknown) -> start and end targets (B, W, n) as floats and the
    (B, W) mask of words whose labels are known. A span ends at a word whose next word does not
    continue it (``I-`` of the same type)."""
    known = word_mask & (labels >= 0)
    lab = labels.clamp(min=0)
    typ = torch.where(lab > 0, (lab - 1) // 2, -1)  # (B, W) type index or -1 for O
    is_begin = (lab > 0) & ((lab - 1) % 2 == 0)
    is_inside = (lab > 0) & ((lab - 1) % 2 == 1)
    nxt_inside = torch.zeros_like(is_inside)
    nxt_inside[:, :-1] = is_inside[:, 1:] & known[:, 1:]
    nxt_typ = torch.full_like(typ, -1)
    nxt_typ[:, :-1] = typ[:, 1:]
    is_end = (lab > 0) & ~(nxt_inside & (nxt_typ == typ))
    one_hot = nn.functional.one_hot(typ.clamp(min=0), n_types).bool() & (typ >= 0)[..., None]
    start = (one_hot & is_begin[..., None]).float()
    end = (one_hot & is_end[..., None]).float()
    return start, end, known


def pointer_loss(
    logits: torch.Tensor, labels: torch.Tensor, word_mask: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the start/end pointers, over known words and over the types that
    have a labelled mention in the batch. logits (B, W, 1 + 2n), labels/word_mask (B, W)."""
    n = (logits.shape[-1] - 1) // 2
    start, end, known = pointer_targets(labels, word_mask, n)
    taught = (start.sum((0, 1)) > 0)[None, None, :] & known[..., None]  # (B, W, n)
    if not bool(taught.any()):
        return logits.sum() * 0.0
    pointers = logits[..., 1:].reshape(*logits.shape[:2], n, 2)
    loss = nn.functional.binary_cross_entropy_with_logits(
        pointers, torch.stack([start, end], -1), reduction="none"
    ).sum(-1)
    return (loss * taught).sum() / taught.sum()


def decode_pointers(
    logits: torch.Tensor, word_mask: torch.Tensor, threshold: float = 0.5
) -> tuple[list[list[int]], list[list[float]]]:
    """Label ids and per-word probabilities from pointer logits (B, W, 1 + 2n).

    Per type, each start above ``threshold`` pairs with the nearest end above it at or after
    the start and before the type's next start; a span scores the mean of its two pointer
    probabilities. Overlapping spans of different types: the higher score wins."""
    n = (logits.shape[-1] - 1) // 2
    probs = torch.sigmoid(logits[..., 1:].float()).reshape(*logits.shape[:2], n, 2).cpu()
    lengths = word_mask.sum(1).tolist()
    paths, scores = [], []
    for i, length in enumerate(lengths):
        p = probs[i, :length]  # (L, n, 2)
        spans: list[tuple[float, int, int, int]] = []
        for k in range(n):
            starts = (p[:, k, 0] > threshold).nonzero().flatten().tolist()
            ends = (p[:, k, 1] > threshold).nonzero().flatten().tolist()
            for j, s in enumerate(starts):
                limit = starts[j + 1] if j + 1 < len(starts) else length
                e = next((e for e in ends if s <= e < limit), None)
                if e is not None:
                    spans.append((float(p[s, k, 0] + p[e, k, 1]) / 2, s, e, k))
        path, score = [0] * length, [1.0] * length
        for sc, s, e, k in sorted(spans, reverse=True):
            if all(x == 0 for x in path[s : e + 1]):
                path[s : e + 1] = [1 + 2 * k] + [2 + 2 * k] * (e - s)
                score[s : e + 1] = [sc] * (e - s + 1)
        for w in range(length):
            if path[w] == 0:
                score[w] = float(1 - p[w, :, 0].max()) if n else 1.0
        paths.append(path)
        scores.append(score)
    return paths, scores


def prompted_forward(
    tagger: Tagger,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    word_index: torch.Tensor,
    word_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    chunk: int = 512,
) -> TaggerOutput:
    """The tagger's forward with this head: every type's prompt in front of every sentence,
    encoded in chunks of ``chunk`` rows; in training (``labels`` (B, W) given) only the types
    with a labelled mention. Returns pointer logits (B, W, 1 + 2n) and the mean over prompts of
    the word features (B, W, H')."""
    from diancang.model.tagger import TaggerOutput

    head = tagger.head
    assert isinstance(head, PromptSpanHead)
    b, w = word_index.shape
    active = list(range(len(tagger.types)))
    if tagger.training and labels is not None:
        present = set(((labels[labels > 0] - 1) // 2).tolist())
        active = [k for k in active if k in present]
    logits = torch.full((b, w, len(tagger.labels)), SKIPPED, device=word_index.device)
    logits[..., 0] = 0.0
    if not active:
        feats = torch.zeros((b, w, tagger.feature_size), device=word_index.device)
        return TaggerOutput(logits=logits + head.pointers.bias.sum() * 0.0, features=feats)
    ids, mask, index, in_prompt = prompted_batch(
        tagger, [tagger.types[k] for k in active], input_ids, attention_mask, word_index
    )
    masks = word_mask.repeat(len(active), 1)
    parts, queries = [], []
    for lo in range(0, ids.shape[0], chunk):
        states = tagger.encoder(
            input_ids=ids[lo : lo + chunk], attention_mask=mask[lo : lo + chunk]
        ).last_hidden_state
        parts.append(tagger.word_features(states, index[lo : lo + chunk], masks[lo : lo + chunk]))
        weights = in_prompt[lo : lo + chunk, :, None].to(states.dtype)
        queries.append((states * weights).sum(1) / weights.sum(1))
    feats = torch.cat(parts)  # (n * B, W, H')
    pointers = head(tagger.dropout(feats), torch.cat(queries)).reshape(len(active), b, w, 2)
    cols = torch.tensor([1 + 2 * k + j for k in active for j in (0, 1)], device=logits.device)
    logits = logits.index_copy(2, cols, pointers.permute(1, 2, 0, 3).reshape(b, w, -1))
    return TaggerOutput(logits=logits, features=feats.reshape(len(active), b, w, -1).mean(0))
