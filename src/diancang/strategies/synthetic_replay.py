"""``synthetic_replay``: replay of old types without old data, from a small language model.

At the end of each step a character-level (token-level) LSTM language model is trained on that
step's training sentences (text only) and kept as a blob of the version (one safetensors
file). In every later step, each saved model generates ``per_step`` sentences; the previous
step's tagger labels them, and a sentence is kept when it has at least one old-type entity and
every entity's score is at least ``min_score`` (confidence filtering). The kept sentences join
the step's data with their pseudo-labels, so the old types keep appearing as labelled examples.

The carried state lists the language models by content hash; each version folder holds them
under ``blobs/``, so a resumed run or ``diancang learn`` from an archived version replays them.
Costs: training a model per step and generating are counted in the step's time (the learner
times the data hook).
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from diancang.data.record import Sentence, Span
from diancang.predict import bio_spans
from diancang.strategies.base import ALL_HEADS, StepContext, Strategy, StrategyState, strategies

logger = logging.getLogger("diancang.strategies")

BOS, EOS = "<s>", "</s>"


class TokenLM(nn.Module):
    """An LSTM language model over tokens (characters for Chinese)."""

    def __init__(self, vocab: list[str], dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.vocab = vocab
        self.index = {t: i for i, t in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, len(vocab))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> next-token logits (B, T, V)."""
        states, _ = self.lstm(self.embed(ids))
        return self.out(states)

    def ids(self, tokens: list[str]) -> list[int]:
        known = (self.index[t] for t in tokens if t in self.index)
        return [self.index[BOS], *known, self.index[EOS]]

    def fit(self, sentences: list[list[str]], epochs: int, seed: int, lr: float = 3e-3) -> float:
        """Train on ``sentences`` (token lists); returns the last epoch's mean loss."""
        rng = random.Random(seed)
        rows = [self.ids(s) for s in sentences if s]
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        last = 0.0
        self.train()
        for _ in range(epochs):
            rng.shuffle(rows)
            total, n = 0.0, 0
            for lo in range(0, len(rows), 32):
                chunk = rows[lo : lo + 32]
                width = max(len(r) for r in chunk)
                ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk])  # 0 = padding
                logits = self(ids[:, :-1])
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
            last = total / max(1, n)
        return last

    @torch.no_grad()
    def sample(self, n: int, max_len: int, seed: int, temperature: float = 1.0) -> list[list[str]]:
        """``n`` token lists sampled from BOS until EOS (or ``max_len`` tokens)."""
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        ids = torch.full((n, 1), self.index[BOS])
        state = None
        out: list[list[str]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool)
        for _ in range(max_len):
            states, state = self.lstm(self.embed(ids[:, -1:]), state)
            probs = torch.softmax(self.out(states[:, -1]) / temperature, -1)
            probs[:, 0] = 0  # never padding
            probs[:, self.index[BOS]] = 0
            nxt = torch.multinomial(probs, 1, generator=gen)
            for i, t in enumerate(nxt[:, 0].tolist()):
                if not done[i]:
                    if self.vocab[t] == EOS:
                        done[i] = True
                    else:
                        out[i].append(self.vocab[t])
            ids = nxt
            if bool(done.all()):
                break
        return [s for s in out if s]

    def save(self, path: Path) -> None:
        """One safetensors file: the weights, and the vocabulary and sizes as its metadata."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "vocab": json.dumps(self.vocab, ensure_ascii=False),
            "dim": str(self.embed.embedding_dim),
            "hidden": str(self.lstm.hidden_size),
        }
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path), meta)

    @classmethod
    def load(cls, path: Path) -> TokenLM:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        model = cls(json.loads(meta["vocab"]), int(meta["dim"]), int(meta["hidden"]))
        model.load_state_dict(load_file(str(path)))
        return model


def pseudo_label(
    tagger: Any, token_lists: list[list[str]], types: set[str], min_score: float
) -> list[Sentence]:
    """Sentences the ``tagger`` labels with at least one entity of ``types``, every entity
    scored at least ``min_score`` (mean probability of its labels)."""
    tags, probs = tagger.predict_tags(token_lists)
    kept = []
    for tokens, tag, prob in zip(token_lists, tags, probs, strict=True):
        spans = [Span(s, e, t) for s, e, t in bio_spans(tag)]
        scores = [sum(prob[sp.start : sp.end]) / (sp.end - sp.start) for sp in spans]
        if spans and all(sp.label in types for sp in spans) and min(scores) >= min_score:
            kept.append(Sentence(tokens=tokens, spans=spans))
    return kept


@strategies.register("synthetic_replay", version=2)
class SyntheticReplay(Strategy):
    """Replay old types on sentences generated by per-step LSTM LMs, labelled by the old model."""

    name = "synthetic_replay"
    heads = ALL_HEADS
    needs_previous = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        per_step: int = Field(200, ge=1, description="Sentences generated per earlier step.")
        min_score: float = Field(0.8, ge=0, le=1, description="Least entity score to keep.")
        lm_epochs: int = Field(5, ge=1, description="Epochs training each step's LM.")
        lm_hidden: int = Field(256, ge=8, description="LSTM size of the LM.")
        max_len: int = Field(60, ge=4, description="Longest generated sentence (tokens).")
        temperature: float = Field(0.9, gt=0, description="Sampling temperature.")

    params: Params

    class State(StrategyState):
        lms: list[str] = Field(
            default_factory=list, description="Blob hashes of the language models, one a step."
        )
        history: list[dict[str, Any]] = Field(
            default_factory=list, description="Per step: sentences kept and seconds spent."
        )

        def blobs(self) -> list[str]:
            return list(self.lms)

    def begin_step(self, ctx: StepContext) -> dict[str, float]:
        return {}  # this step's cost report

    def generate(self, ctx: StepContext) -> list[Sentence]:
        """Sentences from every earlier step's LM that the previous model tags confidently with
        old types (empty at the first step)."""
        lms = ctx.state.lms
        if ctx.previous is None or not lms:
            return []
        began = time.perf_counter()
        p = self.params
        old = set(ctx.previous.types)
        synthetic: list[Sentence] = []
        for k, digest in enumerate(lms):
            lm = TokenLM.load(ctx.blobs.path(digest))
            seed = ctx.config.seed * 7907 + ctx.step.index * 101 + k
            tokens = lm.sample(p.per_step, p.max_len, seed, p.temperature)
            synthetic += pseudo_label(ctx.previous, tokens, old, p.min_score)
        seconds = round(time.perf_counter() - began, 2)
        ctx.work.update(kept=len(synthetic), generate_seconds=seconds, lms_loaded=len(lms))
        logger.info("%s: %d generated sentences kept (%.1fs)", self.name, len(synthetic), seconds)
        return synthetic

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        return data + self.generate(ctx)

    def end_step(self, ctx: StepContext) -> State:
        """Train this step's LM and put it in the blobs; the state lists every LM so far and
        the cost report."""
        began = time.perf_counter()
        p = self.params
        texts = [s.tokens for s in ctx.step.train if s.tokens]
        lms = list(ctx.state.lms)
        if texts:
            vocab = ["<pad>", EOS, BOS, *sorted({t for s in texts for t in s})]
            lm = TokenLM(vocab, hidden=p.lm_hidden)
            torch.manual_seed(ctx.config.seed + ctx.step.index)
            lm.fit(texts, p.lm_epochs, ctx.config.seed + ctx.step.index)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "lm.safetensors"
                lm.save(path)
                lms.append(ctx.blobs.put(path))
        report = {"step": ctx.step.index, **ctx.work}
        report["lm_seconds"] = round(time.perf_counter() - began, 2)
        return self.State(lms=lms, history=[*ctx.state.history, report])
