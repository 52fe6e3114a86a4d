"""``adapt``: continued masked-language-model training on the step's own raw text at the start
of every step, with the previous encoder's states distilled so earlier steps are not washed out.

When the training loop starts (the ``train_data`` hook, so its time counts in the step's
seconds), ``updates`` MLM updates run through the step runner's own loop (``ctx.fit``) on the
step's training sentences (labels ignored, except as entities under ``masking.mode: entity``)
and any extra unlabelled ``texts``. From the second step the loss adds ``distill_weight`` x the
mean squared distance between the encoder's last states and the previous model's on the same
masked input. The MLM head (:mod:`diancang.pretrain.mlm`, tied to the embeddings) is saved with
the version as a blob and continues in the next step; it is not part of the served model.
Compose it before the anti-forgetting strategies' data, e.g. ``[cpfd, exemplars, adapt]``.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from diancang.data.record import Sentence
from diancang.pretrain.corpus import RawText, TextSource, from_sentences, read_texts
from diancang.pretrain.masking import Masking
from diancang.pretrain.mlm import MLMHead, feature_distillation, masked_batch, mlm_loss, prepare
from diancang.strategies.base import ALL_HEADS, StepContext, Strategy, StrategyState, strategies


class Params(BaseModel):
    """Hyperparameters of ``adapt``."""

    model_config = ConfigDict(extra="forbid")
    updates: int = Field(100, ge=1, description="MLM updates at the start of each step.")
    batch_size: int = Field(16, ge=1, description="Texts per MLM update.")
    lr: float = Field(5e-5, gt=0, description="Encoder learning rate of the MLM phase.")
    head_lr: float = Field(1e-3, gt=0, description="MLM head learning rate.")
    masking: Masking = Field(default_factory=Masking, description="How pieces are masked.")  # type: ignore[arg-type]
    distill_weight: float = Field(
        1.0, ge=0, description="Weight of the distance to the previous encoder's states."
    )
    texts: list[TextSource] = Field(
        default_factory=list, description="Extra unlabelled text read at every step."
    )


@strategies.register("adapt", version=1)
class Adapt(Strategy):
    """Continued MLM training on the step's raw text (and extra text) before the step trains,
    distilling the previous encoder's states."""

    name = "adapt"
    Params = Params
    needs_previous = True
    heads = ALL_HEADS

    class State(StrategyState):
        """The MLM head (a safetensors blob) and each step's report."""

        required = False
        head: str | None = None
        history: list[dict[str, Any]] = Field(default_factory=list)

        def blobs(self) -> list[str]:
            return [self.head] if self.head else []

    def texts(self, seed: int, lang: str, latin_words: bool) -> list[list[str]]:
        """The extra texts' tokens (vocabulary trimming keeps their pieces)."""
        return [t.tokens for t in self._extra(lang, latin_words)]

    def _extra(self, lang: str, latin_words: bool) -> list[RawText]:
        """The extra texts, read and segmented once a run (every step uses them)."""
        p: Params = self.params  # type: ignore[assignment]
        cache: dict[tuple[str, bool], list[RawText]] = self.__dict__.setdefault("_read", {})
        if (lang, latin_words) not in cache:
            cache[lang, latin_words] = read_texts(p.texts, lang, latin_words) if p.texts else []
        return cache[lang, latin_words]

    def begin_step(self, ctx: StepContext) -> dict[str, Any]:
        model = ctx.model
        weight = model.encoder.get_input_embeddings().weight  # type: ignore[operator]
        head = MLMHead(int(weight.shape[1]), int(weight.shape[0]))
        state = ctx.state
        assert isinstance(state, Adapt.State)
        if state.head:
            saved = load_file(str(ctx.blobs.path(state.head)))
            if saved["bias"].shape == head.bias.shape:
                head.load_state_dict(saved)
        extra = self._extra(model.spec.lang, model.spec.latin_words)
        return {"head": head, "extra": extra, "report": {}}

    def train_data(self, ctx: StepContext, data: list[Sentence]) -> list[Sentence]:
        """Run the MLM phase (on ``data``'s text and the extra texts); ``data`` is unchanged."""
        p: Params = self.params  # type: ignore[assignment]
        model, previous, head = ctx.model, ctx.previous, ctx.work["head"]
        raw = from_sentences(data, model.spec.lang)
        items = prepare([*raw, *ctx.work["extra"]], model.token_encoder, p.masking)
        if not items:
            return data
        began = time.perf_counter()
        order = random.Random(ctx.config.seed * 131 + ctx.step.index)
        picked: list[Any] = []
        while len(picked) < p.updates * p.batch_size:
            shuffled = list(items)
            order.shuffle(shuffled)
            picked += shuffled
        picked = picked[: p.updates * p.batch_size]
        rng = random.Random(ctx.config.seed * 7 + ctx.step.index)
        vocab = int(head.bias.shape[0])
        loader: DataLoader[Any] = DataLoader(
            picked,  # type: ignore[arg-type]
            batch_size=p.batch_size,
            collate_fn=lambda rows: masked_batch(rows, p.masking, model.token_encoder, vocab, rng),
        )
        losses: dict[str, list[float]] = {"mlm": [], "distill": []}

        def loss_fn(wrapped: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            encoder = getattr(wrapped, "module", wrapped).encoder
            loss, states = mlm_loss(encoder, head, batch)
            losses["mlm"].append(loss.item())
            if previous is not None and p.distill_weight > 0:
                with torch.no_grad():
                    teacher = previous.encoder(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).last_hidden_state
                kept = feature_distillation(states, teacher, batch["attention_mask"])
                losses["distill"].append(kept.item())
                loss = loss + p.distill_weight * kept
            return loss

        ctx.fit(
            model,
            loader,
            loss_fn,
            epochs=1,
            lr=p.lr,
            head_lr=p.head_lr,
            desc=f"step {ctx.step.index + 1} adapt",
            extra=[head],
        )
        tenth = max(1, len(losses["mlm"]) // 10)
        ctx.work["report"] = {
            "step": ctx.step.index,
            "texts": len(items),
            "updates": len(losses["mlm"]),
            "mlm_loss_first": round(sum(losses["mlm"][:tenth]) / tenth, 4),
            "mlm_loss_last": round(sum(losses["mlm"][-tenth:]) / tenth, 4),
            "distill_mean": (
                round(sum(losses["distill"]) / len(losses["distill"]), 6)
                if losses["distill"]
                else None
            ),
            "seconds": round(time.perf_counter() - began, 1),
        }
        return data

    def end_step(self, ctx: StepContext) -> State:
        """The MLM head as a blob, and this step's report."""
        state = ctx.state
        assert isinstance(state, Adapt.State)
        head: MLMHead = ctx.work["head"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mlm_head.safetensors"
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path)
            )
            digest = ctx.blobs.put(path)
        history = [*state.history, ctx.work["report"]] if ctx.work["report"] else state.history
        return self.State(head=digest, history=history)
