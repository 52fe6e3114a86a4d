"""``inversion_replay``: synthetic replay (b), old-type sentences reconstructed from the previous
model alone by model inversion (after Wang et al., ACL 2022, "Few-Shot Class-Incremental Learning
for Named Entity Recognition").

No generator and no stored text. At the start of a step the strategy samples ``per_step`` tag
sequences ``y`` of old types (1 to ``max_entities`` spans at random places, ``O`` elsewhere) and
optimises input embeddings ``x`` (N, L, H) so that the frozen previous model predicts them::

    J(x) = loss_previous(x, y) + prior_weight * mean_w (1 - max_v cos(x_w, E_v))

``loss_previous`` is the tagger's own loss (cross-entropy, or the CRF likelihood) and ``E`` the
encoder's embeddings of whole words, so the second term keeps every position near a real word.
Each position is then replaced by its nearest word; the previous model labels the sentences, and
those with an old-type entity whose entities all score at least ``min_score`` join the step's
data (compose with ``distill`` to distil on them too).

Deviation from the paper, documented: the paper distils on the continuous embeddings and keeps
them realistic by matching real data statistics; here they are projected to words so that they
pass through the data hook like any sentence (and can be read in a log), and the realism term is
the distance to the nearest word embedding.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.data.record import Sentence
from diancang.model.tagger import Tagger
from diancang.strategies.base import StepContext, Strategy, StrategyState, strategies
from diancang.strategies.synthetic_replay import pseudo_label

logger = logging.getLogger("diancang.strategies")


def word_rows(tagger: Tagger) -> tuple[list[int], list[str]]:
    """Embedding rows that are whole words, and their text: row ``r`` with text ``w`` such that
    the tagger encodes ``w`` to exactly ``[r]`` (single characters for Chinese)."""
    te = tagger.token_encoder
    n_rows = int(tagger.encoder.get_input_embeddings().weight.shape[0])  # type: ignore[operator]
    ids = tagger.spec.kept_ids if tagger.spec.kept_ids is not None else list(range(n_rows))
    specials = set(tagger.tokenizer.all_special_ids)
    unknown_before = te.unknown.copy()
    rows, words = [], []
    tokens = tagger.tokenizer.convert_ids_to_tokens(ids)
    for row, (tid, tok) in enumerate(zip(ids, tokens, strict=True)):
        if tid in specials or not tok or tok.startswith(("##", "[", "<")):
            continue
        word = tok.lstrip("▁").strip()
        if not word or (tagger.spec.lang == "zh" and len(word) != 1):
            continue
        if te.pieces(word) == [row]:
            rows.append(row)
            words.append(word)
    te.unknown = unknown_before  # probing the vocabulary is not an unknown-token event
    return rows, words


def sample_tags(
    types: list[str], n: int, length: int, span: tuple[int, int], max_entities: int, seed: int
) -> list[list[str]]:
    """``n`` BIO sequences of ``length`` words with 1..``max_entities`` non-overlapping spans of
    ``types`` (lengths uniform in ``span``), types drawn uniformly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tags = ["O"] * length
        for _ in range(rng.randint(1, max_entities)):
            size = min(rng.randint(*span), length)
            start = rng.randint(0, length - size)
            if any(t != "O" for t in tags[max(0, start - 1) : start + size + 1]):
                continue  # would touch another span
            label = rng.choice(types)
            tags[start : start + size] = [f"B-{label}"] + [f"I-{label}"] * (size - 1)
        if all(t == "O" for t in tags):  # the first span always fits
            size = min(span[0], length)
            label = rng.choice(types)
            tags[:size] = [f"B-{label}"] + [f"I-{label}"] * (size - 1)
        out.append(tags)
    return out


def _nearest(x: torch.Tensor, table: torch.Tensor, budget: int = 1 << 24) -> torch.Tensor:
    """For x (M, H) and unit rows ``table`` (V, H): the (M,) index of each row's most similar
    table row (cosine), chunked under ``budget`` similarity entries."""
    unit = torch.nn.functional.normalize(x, dim=-1)
    step = max(1, budget // max(1, table.shape[0]))
    return torch.cat(
        [(unit[lo : lo + step] @ table.T).argmax(-1) for lo in range(0, len(unit), step)]
    )


def invert(
    tagger: Tagger,
    targets: torch.Tensor,
    table: torch.Tensor,
    iterations: int,
    lr: float,
    prior_weight: float,
    seed: int,
) -> tuple[torch.Tensor, list[float]]:
    """Optimise embeddings (N, L, H) so that ``tagger`` predicts ``targets`` (N, L) label ids;
    ``table`` (V, H) are the candidate word embeddings (start points and realism prior).
    Returns the embeddings and the objective J before each iteration and at the end."""
    n, length = targets.shape
    device = tagger.device
    emb = tagger.encoder.get_input_embeddings().weight.detach()  # type: ignore[operator]
    te = tagger.token_encoder
    cls, sep = emb[te.cls_id], emb[te.sep_id]
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(len(table), (n, length), generator=gen)
    x = table[start].clone().to(device).requires_grad_(True)
    unit_table = torch.nn.functional.normalize(table.to(device), dim=-1)
    attention = torch.ones(n, length + 2, dtype=torch.long, device=device)
    word_index = torch.arange(1, length + 1, device=device).expand(n, -1)
    word_mask = torch.ones(n, length, dtype=torch.bool, device=device)
    targets = targets.to(device)
    opt = torch.optim.Adam([x], lr=lr)
    history: list[float] = []
    was_training = tagger.training
    tagger.eval()
    for it in range(iterations + 1):
        inputs = torch.cat([cls.expand(n, 1, -1), x, sep.expand(n, 1, -1)], dim=1)
        out = tagger(None, attention, word_index, word_mask, inputs_embeds=inputs)
        fit = tagger.loss(out, targets, word_mask)
        sims = torch.nn.functional.normalize(x, dim=-1).reshape(n * length, -1) @ unit_table.T
        prior = (1 - sims.max(-1).values).mean()
        objective = fit + prior_weight * prior
        history.append(float(objective.detach()))
        if it == iterations:
            break
        opt.zero_grad()
        objective.backward()
        opt.step()
    tagger.train(was_training)
    return x.detach(), history


@strategies.register("inversion_replay", version=2)
class InversionReplay(Strategy):
    """Replay old types on sentences reconstructed from the previous model by inversion."""

    name = "inversion_replay"
    needs_previous = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        per_step: int = Field(200, ge=1, description="Sentences reconstructed per step.")
        length: int = Field(20, ge=2, description="Words per reconstructed sentence.")
        span_min: int = Field(2, ge=1, description="Shortest sampled entity (words).")
        span_max: int = Field(4, ge=1, description="Longest sampled entity (words).")
        max_entities: int = Field(2, ge=1, description="Most entities per sentence.")
        iterations: int = Field(20, ge=1, description="Optimisation steps of the inversion.")
        lr: float = Field(0.01, gt=0, description="Adam learning rate on the embeddings.")
        prior_weight: float = Field(1.0, ge=0, description="Weight of the nearest-word prior.")
        batch: int = Field(50, ge=1, description="Sentences inverted together.")
        min_score: float = Field(0.8, ge=0, le=1, description="Least entity score to keep.")

    params: Params

    class State(StrategyState):
        required = False  # a cost report only

        history: list[dict[str, Any]] = Field(
            default_factory=list, description="Per step: sentences kept and seconds spent."
        )

    def begin_step(self, ctx: StepContext) -> dict[str, Any]:
        return {"step": ctx.step.index}  # this step's cost report

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        if ctx.previous is None or not ctx.previous.types:
            return data
        began = time.perf_counter()
        synthetic = self.reconstruct(ctx.previous, ctx.config.seed * 7919 + ctx.step.index)
        ctx.work.update(kept=len(synthetic), seconds=round(time.perf_counter() - began, 2))
        logger.info(
            "inversion_replay: %d of %d reconstructed sentences kept (%.1fs)",
            len(synthetic),
            self.params.per_step,
            ctx.work["seconds"],
        )
        return data + synthetic

    def reconstruct(self, old: Tagger, seed: int) -> list[Sentence]:
        """Sentences of ``old``'s types reconstructed by inversion, labelled by ``old``."""
        p = self.params
        rows, words = word_rows(old)
        if not rows:
            return []
        emb = old.encoder.get_input_embeddings().weight.detach()  # type: ignore[operator]
        table = emb[torch.tensor(rows)].cpu()
        unit_table = torch.nn.functional.normalize(table, dim=-1)
        span = (p.span_min, max(p.span_min, p.span_max))
        tags = sample_tags(old.types, p.per_step, p.length, span, p.max_entities, seed)
        token_lists: list[list[str]] = []
        for lo in range(0, len(tags), p.batch):
            ids = torch.tensor([old.label_ids(t) for t in tags[lo : lo + p.batch]])
            x, _ = invert(old, ids, table, p.iterations, p.lr, p.prior_weight, seed + lo)
            nearest = _nearest(x.reshape(-1, x.shape[-1]).cpu(), unit_table)
            flat = [words[i] for i in nearest.tolist()]
            token_lists += [flat[k : k + p.length] for k in range(0, len(flat), p.length)]
        return pseudo_label(old, token_lists, set(old.types), p.min_score)

    def end_step(self, ctx: StepContext) -> State:
        return self.State(history=[*ctx.state.history, ctx.work])
