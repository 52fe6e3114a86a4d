"""Multi-task transfer: auxiliary NER or word-segmentation data trained beside the step's own.

Every auxiliary task (``aux_tasks``) has its own head (and, with ``private_lstm``, its own
BiLSTM tower) on the shared encoder's word features; its batches are drawn beside the main
task's by ``sampling`` (:mod:`diancang.multitask.sampler`) and its loss, times its ``weight``,
is added to the main batch it rides with. ``sharing: adversarial`` adds a task discriminator on
the max-pooled shared features behind a gradient-reversal layer: the discriminator learns to
tell the tasks apart (its loss weighted ``discriminator_weight``), the encoder learns to make that
impossible (minus ``adversarial_weight`` times the discriminator's gradient);
its accuracy and loss are logged and kept in the step's report, with its balanced accuracy in
every epoch (the mean of its per-task recalls: chance is 1 / tasks whatever the mix of
sentences, and a discriminator the encoder has beaten sits near it). ``adversary: confusion``
(version 3) trains the encoder instead towards the discriminator's uniform output (Tzeng et
al., 2015): reversal rewards the encoder for a discriminator that is confidently wrong, below
chance, where confusion's optimum is chance itself.
``sharing: asymmetric`` gives the first auxiliary task a BiLSTM tower that the main task's
features also read (:class:`diancang.model.features.SideTower`): that tower is part of the
tagger, saved and served with it, and the main loss trains it too.

Word segmentation is tagged ``B/M/E/S`` per character from the data's word boundaries
(:mod:`diancang.data.readers.segmented`). The auxiliary heads are saved with the version as a
blob (``keep_heads``) and continue in the next step; they are not part of the served model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from diancang.data.readers.segmented import CWS_TAGS, cws_tags, read_segmented
from diancang.data.record import Sentence, spans_to_bio
from diancang.model.features import collate, gather_words, run_lstm
from diancang.multitask.grl import reverse_gradient
from diancang.multitask.sampler import Sampling, schedule
from diancang.strategies.base import (
    StepBatch,
    StepContext,
    Strategy,
    StrategyState,
    Target,
    strategies,
)

logger = logging.getLogger("diancang.strategies")


class AuxTask(BaseModel):
    """One auxiliary task: its data and how much it counts."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="A name for logs and reports.")
    kind: Literal["ner", "cws"] = Field(description="ner: entity tags; cws: word segmentation.")
    preset: str | None = Field(None, description="A dataset preset (its training split).")
    path: Path | None = Field(None, description="A data file (when no preset).")
    format: Literal["conll", "cluener", "jsonl", "segmented"] = Field(
        "conll", description="The file's format; segmented: words separated by spaces (SIGHAN)."
    )
    weight: float = Field(1.0, ge=0, description="Weight of its loss.")
    max_sentences: int | None = Field(
        5000, ge=1, description="Keep at most this many of its sentences (seeded; null: all)."
    )


class Params(BaseModel):
    """Hyperparameters of ``multitask``."""

    model_config = ConfigDict(extra="forbid")
    aux_tasks: list[AuxTask] = Field(default_factory=list, description="The auxiliary tasks.")
    sharing: Literal["hard", "asymmetric", "adversarial"] = Field(
        "hard",
        description="hard: shared encoder, a head per task; asymmetric: the first auxiliary "
        "task's BiLSTM tower is also read by the main task (and served with it); adversarial: "
        "a task discriminator on the shared features that the encoder learns to fool "
        "(``adversary``).",
    )
    private_lstm: bool = Field(False, description="A private BiLSTM tower per auxiliary task.")
    lstm_hidden: int = Field(
        128, ge=8, description="Hidden size per direction of a private (or asymmetric) tower."
    )
    adversarial_weight: float = Field(
        0.05,
        ge=0,
        description="Lambda: the encoder gets minus this times the discriminator's gradient "
        "(through the gradient-reversal layer).",
    )
    discriminator_weight: float = Field(
        1.0,
        gt=0,
        description="Weight of the discriminator's own loss (how fast it learns); 1 is "
        "Ganin and Lempitsky's setting. Version 1 of this strategy trained it at "
        "adversarial_weight, too slowly to follow the encoder.",
    )
    adversary: Literal["reverse", "confusion"] = Field(
        "reverse",
        description="How the encoder fights the discriminator. reverse: gradient reversal, the "
        "encoder ascends the discriminator's loss (its optimum: the discriminator confidently "
        "wrong); confusion: the encoder descends the cross-entropy of the discriminator's "
        "output against the uniform distribution (its optimum: chance).",
    )
    sampling: Sampling = Field("proportional", description="proportional, equal or subsample.")
    batch_size: int = Field(16, ge=1, description="Sentences per auxiliary batch.")
    keep_heads: bool = Field(True, description="Save the auxiliary heads with the version.")


class Heads(nn.Module):
    """The auxiliary towers and heads, and the task discriminator (task 0 is the main one)."""

    def __init__(
        self, hidden: int, labels: dict[str, int], p: Params, side: tuple[str, int] | None = None
    ) -> None:
        """``side``: the task whose tower is the tagger's side tower, and that tower's width."""
        super().__init__()
        self.lstms = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for name, n in labels.items():
            size = hidden
            if side is not None and name == side[0]:
                size = side[1]
            elif p.private_lstm:
                self.lstms[name] = nn.LSTM(
                    hidden, p.lstm_hidden, batch_first=True, bidirectional=True
                )
                size = 2 * p.lstm_hidden
            self.heads[name] = nn.Linear(size, n)
        self.discriminator = nn.Linear(hidden, len(labels) + 1)


def adversarial_loss(
    discriminator: nn.Module, feats: torch.Tensor, tasks: torch.Tensor, p: Params
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weighted adversarial term, the discriminator's scores (N, tasks + 1) and its plain
    loss, for pooled features ``feats`` (N, H) of sentences from ``tasks`` (N,). The
    discriminator's gradient is ``discriminator_weight`` times its loss's. ``reverse``: the
    features get minus ``adversarial_weight`` times the loss's gradient, whatever
    ``discriminator_weight`` is; ``confusion``: ``adversarial_weight`` times the gradient of the
    cross-entropy against the uniform distribution, through the discriminator held fixed."""
    if p.adversary == "confusion":
        scores = discriminator(feats.detach())
        fixed = {k: v.detach() for k, v in discriminator.named_parameters()}
        fooled = torch.func.functional_call(discriminator, fixed, (feats,))
        confusion = -F.log_softmax(fooled, -1).mean()
        loss = F.cross_entropy(scores, tasks)
        return p.discriminator_weight * loss + p.adversarial_weight * confusion, scores, loss
    reverse = p.adversarial_weight / p.discriminator_weight
    scores = discriminator(reverse_gradient(feats, reverse))
    loss = F.cross_entropy(scores, tasks)
    return p.discriminator_weight * loss, scores, loss


def _labels(task: AuxTask, sentences: list[Sentence]) -> list[str]:
    if task.kind == "cws":
        return list(CWS_TAGS)
    types = sorted({sp.label for s in sentences for sp in s.spans})
    return ["O", *(f"{p}-{t}" for t in types for p in "BI")]


def _read(task: AuxTask, seed: int) -> list[Sentence]:
    """The task's training sentences (at most ``max_sentences``, a seeded sample)."""
    from diancang.data.presets import load_files, load_preset, split_off
    from diancang.errors import ConfigError

    if task.format == "segmented":
        if task.path is None:
            raise ConfigError(f"aux task {task.name!r}: segmented data needs a path")
        sentences = read_segmented(task.path)
    elif task.preset is not None:
        sentences = load_preset(task.preset, seed=seed).train
    elif task.path is not None:
        sentences = load_files(task.path, None, None, format=task.format, split_dev=False).train
    else:
        raise ConfigError(f"aux task {task.name!r} has neither a preset nor a path")
    if task.max_sentences and len(sentences) > task.max_sentences:
        sentences = split_off(sentences, task.max_sentences / len(sentences), seed)[1]
    return [s for s in sentences if s.tokens]


@strategies.register("multitask", version=3)
class MultiTask(Strategy):
    """Auxiliary tasks (NER or word segmentation) trained beside the step's own, hard or
    adversarial sharing."""

    name = "multitask"
    Params = Params
    resumes_mid_step = True

    class State(StrategyState):
        """The auxiliary heads (a safetensors blob) and each step's report."""

        required = False
        heads: str | None = None
        labels: dict[str, list[str]] = Field(default_factory=dict)
        history: list[dict[str, Any]] = Field(default_factory=list)

        def blobs(self) -> list[str]:
            return [self.heads] if self.heads else []

    def begin_step(self, ctx: StepContext) -> dict[str, Any]:
        """Read and encode every auxiliary task; build (or reload) the heads."""
        p: Params = self.params  # type: ignore[assignment]
        model, seed = ctx.model, ctx.config.seed + ctx.step.index
        hidden = int(getattr(model.encoder, "config").hidden_size)  # noqa: B009
        tasks, labels = {}, {}
        for task in p.aux_tasks:
            sentences = _read(task, seed)
            names = _labels(task, sentences)
            index = {lab: i for i, lab in enumerate(names)}
            rows = []
            for s in sentences:
                tags = cws_tags(s) if task.kind == "cws" else spans_to_bio(len(s.tokens), s.spans)
                enc = model.encode(s.tokens)
                rows.append((enc, [index[t] for t in tags][: len(enc.word_index)]))
            tasks[task.name] = rows
            labels[task.name] = names
        side = None
        if p.sharing == "asymmetric" and p.aux_tasks:
            tower = model.add_side_tower(p.lstm_hidden)  # kept from an earlier step if it has one
            side = (p.aux_tasks[0].name, 2 * tower.lstm.hidden_size)
        heads = Heads(hidden, {k: len(v) for k, v in labels.items()}, p, side)
        state = ctx.state
        assert isinstance(state, MultiTask.State)
        if state.heads and state.labels == labels:
            heads.load_state_dict(load_file(str(ctx.blobs.path(state.heads))))
        sizes = {k: -(-len(v) // p.batch_size) for k, v in tasks.items()}
        logger.info(
            "%s: %s", self.name, ", ".join(f"{k} {len(v)} sentences" for k, v in tasks.items())
        )
        return {"heads": heads, "tasks": tasks, "labels": labels, "sizes": sizes, "plan": [],
                "seen": 0, "stats": {"disc_right": 0, "disc_n": 0, "disc_loss": 0.0},
                "epoch_counts": torch.zeros(len(tasks) + 1, 2), "by_epoch": []}  # fmt: skip

    def texts(self, seed: int, lang: str, latin_words: bool) -> list[list[str]]:
        """The auxiliary tasks' sentences (vocabulary trimming keeps their pieces)."""
        p: Params = self.params  # type: ignore[assignment]
        return [s.tokens for task in p.aux_tasks for s in _read(task, seed)]

    def modules(self, ctx: StepContext) -> list[nn.Module]:
        return [ctx.work["heads"]] if ctx.work["tasks"] else []

    def _plan(self, ctx: StepContext, main_batches: int) -> list[list[tuple[str, int]]]:
        """One epoch's auxiliary batches, listed by the main batch they ride with."""
        p: Params = self.params  # type: ignore[assignment]
        names = list(ctx.work["tasks"])
        epoch = ctx.work["seen"] // max(1, main_batches)
        order = schedule(
            [main_batches, *(ctx.work["sizes"][n] for n in names)],
            p.sampling,
            ctx.config.seed * 1009 + ctx.step.index * 31 + epoch,
        )
        plan: list[list[tuple[str, int]]] = [[] for _ in range(main_batches)]
        k = 0
        for task, i in order:
            if task == 0:
                k += 1
            else:
                plan[min(k, main_batches - 1)].append((names[task - 1], i))
        return plan

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        """Each auxiliary batch riding with this main batch: its loss (and, adversarial, the
        discriminator's on both)."""
        w, p = ctx.work, self.params
        assert isinstance(p, Params)
        if not w["tasks"]:
            return {}
        if not w["plan"]:
            main = -(-len(ctx.step.train) // ctx.config.train.batch_size)
            w["plan"] = self._plan(ctx, max(1, main))
            if w["epoch_counts"][:, 1].any():  # the epoch that ended
                w["by_epoch"].append(round(balanced(w["epoch_counts"]), 4))
            w["epoch_counts"].zero_()  # per task: [right, seen] in this epoch
        rides = w["plan"].pop(0)
        w["seen"] += 1
        model, heads = ctx.model, w["heads"]
        weight = {t.name: t.weight for t in p.aux_tasks}
        terms: dict[str, torch.Tensor] = {}
        pooled = []
        if p.sharing == "adversarial":
            towers = model.lstm is not None or model.side is not None
            shared = self._shared(model, batch.inputs) if towers else batch.out.features
            pooled.append((_max_pool(shared, batch.inputs["word_mask"]), 0))
        for name, i in rides:
            rows = w["tasks"][name][i * p.batch_size : (i + 1) * p.batch_size]
            inputs = collate([r[0] for r in rows], [r[1] for r in rows], model.token_encoder.pad_id)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            feats = self._shared(model, inputs)
            if p.sharing == "adversarial":
                pooled.append(
                    (_max_pool(feats, inputs["word_mask"]), 1 + list(w["tasks"]).index(name))
                )
            side = model.side if p.sharing == "asymmetric" and name == p.aux_tasks[0].name else None
            if side is not None:
                feats = side.states(feats, inputs["word_mask"])
            elif name in heads.lstms:
                feats = run_lstm(heads.lstms[name], feats, inputs["word_mask"])
            logits = heads.heads[name](model.dropout(feats))
            loss = F.cross_entropy(
                logits.flatten(0, 1), inputs["labels"].flatten(), ignore_index=-100
            )
            terms[f"aux_{name}"] = terms.get(f"aux_{name}", 0.0) + weight[name] * loss
        if len(pooled) > 1:
            feats = torch.cat([f for f, _ in pooled])
            tasks = torch.cat([torch.full((len(f),), t, device=feats.device) for f, t in pooled])
            terms["adversarial"], scores, loss = adversarial_loss(
                heads.discriminator, feats, tasks, p
            )
            stats = w["stats"]
            right = (scores.argmax(-1) == tasks).float().cpu()
            stats["disc_right"] += int(right.sum())
            stats["disc_n"] += len(tasks)
            stats["disc_loss"] += loss.item() * len(tasks)
            counts = w["epoch_counts"]
            counts[:, 0].index_add_(0, tasks.cpu(), right)
            counts[:, 1].index_add_(0, tasks.cpu(), torch.ones_like(right))
        return terms

    def epoch_state(self, ctx: StepContext) -> dict[str, Any]:
        """The batches seen, the epoch's plan left, and the discriminator's tallies."""
        w = ctx.work
        return {
            "seen": w["seen"],
            "plan": w["plan"],
            "stats": w["stats"],
            "epoch_counts": w["epoch_counts"].tolist(),
            "by_epoch": w["by_epoch"],
        }

    def load_epoch_state(self, ctx: StepContext, state: dict[str, Any]) -> None:
        w = ctx.work
        w.update(seen=state["seen"], stats=dict(state["stats"]), by_epoch=list(state["by_epoch"]))
        w["plan"] = [[(name, i) for name, i in rides] for rides in state["plan"]]
        w["epoch_counts"] = torch.tensor(state["epoch_counts"], dtype=w["epoch_counts"].dtype)

    @staticmethod
    def _shared(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The shared encoder's word features (B, W, H) of a batch."""
        states = model.encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        return gather_words(states, inputs["word_index"])

    def end_step(self, ctx: StepContext) -> State:
        """The heads as a blob (``keep_heads``) and this step's report: auxiliary sentences and,
        adversarial, the discriminator's accuracy and mean loss against chance."""
        p: Params = self.params  # type: ignore[assignment]
        w, state = ctx.work, ctx.state
        assert isinstance(state, MultiTask.State)
        report: dict[str, Any] = {
            "step": ctx.step.index,
            "sentences": {k: len(v) for k, v in w["tasks"].items()},
        }
        stats = w["stats"]
        if stats["disc_n"]:
            report["discriminator_accuracy"] = round(stats["disc_right"] / stats["disc_n"], 4)
            report["discriminator_loss"] = round(stats["disc_loss"] / stats["disc_n"], 4)
            report["chance"] = round(1 / (len(w["tasks"]) + 1), 4)
            by_epoch = [*w["by_epoch"], round(balanced(w["epoch_counts"]), 4)]
            report["discriminator_balanced_by_epoch"] = by_epoch
            report["discriminator_balanced_last_epoch"] = by_epoch[-1]
            logger.info(
                "%s: discriminator accuracy %.1f%%, balanced over the last epoch %.1f%% "
                "(chance %.1f%%), loss %.3f",
                self.name,
                100 * report["discriminator_accuracy"],
                100 * report["discriminator_balanced_last_epoch"],
                100 * report["chance"],
                report["discriminator_loss"],
            )
        digest = None
        if p.keep_heads and w["tasks"]:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "heads.safetensors"
                tensors = {
                    k: v.detach().cpu().contiguous() for k, v in w["heads"].state_dict().items()
                }
                save_file(tensors, str(path))
                digest = ctx.blobs.put(path)
        return self.State(heads=digest, labels=w["labels"], history=[*state.history, report])


def _max_pool(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the real words: (B, W, H), (B, W) -> (B, H)."""
    return feats.masked_fill(~mask.unsqueeze(-1), -1e4).max(1).values


def balanced(counts: torch.Tensor) -> float:
    """Balanced accuracy from per-class ``[right, seen]`` rows (T, 2): the mean recall over the
    classes that were seen."""
    seen = counts[:, 1] > 0
    return float((counts[seen, 0] / counts[seen, 1]).mean()) if bool(seen.any()) else 0.0
