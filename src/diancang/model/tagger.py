"""The tagger: any Hugging Face encoder + optional BiLSTM + a growable head + optional CRF.

Labels are ``["O", "B-T1", "I-T1", "B-T2", ...]``; :meth:`Tagger.add_labels` appends two rows per
new type, so old label ids never change. A saved model folder describes itself: ``config.json``
(labels, ``id2label``, head options, the resolved run config), ``model.safetensors`` and
``encoder/`` (the encoder's config and tokenizer files).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diancang.data.tokenize import tokenize
from diancang.errors import ConfigError, DiancangError
from diancang.model import ctr, der
from diancang.model.crf import CRF
from diancang.model.encoder import strip_pooler
from diancang.model.features import (
    Encoded,
    SideTower,
    TokenEncoder,
    collate,
    gather_words,
    run_lstm,
)
from diancang.model.head import GrowableLinear
from diancang.model.label_head import LabelSemanticHead
from diancang.model.prompt_span import (
    PromptSpanHead,
    decode_pointers,
    pointer_loss,
    prompted_forward,
)


@dataclass
class TaggerSpec:
    """Everything needed to rebuild a tagger's architecture (saved in ``config.json``)."""

    labels: list[str] = field(default_factory=lambda: ["O"])
    lang: str = "zh"
    max_length: int = 128
    #: Tokens shared by neighbouring windows when a longer sentence is tagged in windows.
    window_overlap: int = 16
    #: Chinese: a run of Latin letters and digits is one token (False in models saved before).
    latin_words: bool = False
    crf: bool = False
    bilstm: bool = False
    lstm_hidden: int = 128
    #: Hidden size (per direction) of a side BiLSTM tower the features also read (the
    #: asymmetric multi-task mode's auxiliary tower); 0: none.
    side_tower: int = 0
    #: DER: per-step branches of the top ``der_layers`` layers (0: none; see model/der.py).
    der_branches: int = 0
    der_layers: int = 0
    #: CTR: the types of each task that has plugins (model/ctr.py), and the plugins' sizes.
    ctr_tasks: list[list[str]] = field(default_factory=list)
    ctr_sizes: list[int] = field(default_factory=list)  # adapter, capsule, capsule hidden
    ctr_arbiter: int = 0  # the tasks its arbiter was trained over (0: none)
    dropout: float = 0.1
    encoder_name: str = "tiny-random"
    freeze_embeddings: bool = False
    #: Tokenizer ids kept by vocabulary trimming (row i of the embedding is id kept_ids[i]).
    kept_ids: list[int] | None = None
    #: "linear" (a growable row per label), "label_semantic" (rows from the types' texts) or
    #: "prompt_span" (start/end pointers behind each type's text as a prompt).
    head: str = "linear"
    #: One-line descriptions of types (the text-based heads encode them; default: the name).
    type_texts: dict[str, str] = field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        """Entity types in the order they were added."""
        return [lab[2:] for lab in self.labels if lab.startswith("B-")]


@dataclass
class TaggerOutput:
    """``logits`` (B, W, C) and ``features`` (B, W, H') per word; ``hidden_states``: the encoder's
    per-layer states (each (B, T, H)) when asked for."""

    logits: torch.Tensor
    features: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class Tagger(nn.Module):
    """Token classifier over words (first sub-token of each word)."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, spec: TaggerSpec) -> None:
        super().__init__()
        strip_pooler(encoder)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.spec = spec
        self.token_encoder = TokenEncoder(
            tokenizer, lang=spec.lang, max_length=spec.max_length, kept_ids=spec.kept_ids
        )
        if spec.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009
        self.branches: der.Branches | None = None
        if spec.der_branches:
            self.branches = der.build(encoder, spec.der_layers, spec.der_branches)
            hidden *= spec.der_branches
        self.plugins: ctr.Plugins | None = None
        if spec.ctr_tasks:
            adapter, capsule, mid = spec.ctr_sizes
            n = len(spec.ctr_tasks)
            self.plugins = ctr.Plugins(encoder, n, adapter, capsule, mid, spec.ctr_arbiter)
        self.lstm: nn.LSTM | None = None
        if spec.bilstm:
            self.lstm = nn.LSTM(hidden, spec.lstm_hidden, batch_first=True, bidirectional=True)
            hidden = 2 * spec.lstm_hidden
        self.dropout = nn.Dropout(spec.dropout)
        self.feature_size = hidden
        self.side: SideTower | None = None
        if spec.side_tower:
            self.add_side_tower(spec.side_tower)
        self.head: GrowableLinear | LabelSemanticHead | PromptSpanHead
        if spec.head == "label_semantic":
            self.head = LabelSemanticHead(hidden, int(getattr(encoder, "config").hidden_size))  # noqa: B009
        elif spec.head == "prompt_span":
            self.head = PromptSpanHead(hidden, int(getattr(encoder, "config").hidden_size))  # noqa: B009
        elif spec.head == "linear":
            self.head = GrowableLinear(hidden, len(spec.labels))
        else:
            raise DiancangError(
                f"unknown head {spec.head!r}",
                fix="use model.head: linear, label_semantic or prompt_span",
            )
        if spec.crf and spec.head == "prompt_span":
            raise ConfigError(
                "the prompt_span head predicts span pointers, which a CRF cannot decode",
                fix="set model.crf: false with model.head: prompt_span",
            )
        self.crf: CRF | None = CRF(len(spec.labels), spec.labels) if spec.crf else None
        #: Another backend for inference (:func:`diancang.model.onnx_backend.use_onnx`): padded
        #: inputs -> logits (B, W, C); None: this module's own forward pass.
        self.runtime: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None
        self.backend = "torch"  # what predictions run on (said by the service)
        if spec.head != "linear":
            self._check_type_texts(spec.types)

    # ----------------------------------------------------------------------------- labels
    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    @property
    def types(self) -> list[str]:
        return self.spec.types

    def label_ids(self, tags: list[str]) -> list[int]:
        """BIO tag strings -> label ids (a type the tagger does not know is an error)."""
        index = {lab: i for i, lab in enumerate(self.spec.labels)}
        try:
            return [index[t] for t in tags]
        except KeyError as err:
            raise DiancangError(
                f"tag {err.args[0]!r} is not among the model's labels {self.spec.labels}",
                fix="add the type with add_labels first",
            ) from None

    def add_labels(self, types: list[str], texts: dict[str, str] | None = None) -> None:
        """Append ``B-``/``I-`` labels for each new type; existing ones are untouched. The linear
        head grows two rows per type; the label-semantic head reads the types' ``texts``
        (descriptions, default: the names) and grows no parameter."""
        self.spec.type_texts = {**self.spec.type_texts, **(texts or {})}
        new = [t for t in types if t not in self.types]
        if not new:
            return
        if not isinstance(self.head, GrowableLinear):
            self._check_type_texts(self.types + new)
        added = [f"{p}-{t}" for t in new for p in ("B", "I")]
        self.spec.labels = self.spec.labels + added
        if isinstance(self.head, GrowableLinear):
            self.head.grow(len(added))
        if self.crf is not None:
            self.crf.grow(added)

    # ----------------------------------------------------------------------------- compute
    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        word_mask: torch.Tensor,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        **unused: Any,
    ) -> TaggerOutput:
        """input_ids, attention_mask (B, T); word_index, word_mask (B, W) -> TaggerOutput.
        ``inputs_embeds`` (B, T, H) replaces ``input_ids`` (model inversion optimises it)."""
        if isinstance(self.head, PromptSpanHead):
            assert input_ids is not None, "the prompt_span head needs input_ids"
            return prompted_forward(
                self, input_ids, attention_mask, word_index, word_mask, unused.get("labels")
            )
        args = (input_ids, attention_mask, word_index, word_mask, output_hidden_states)
        if self.plugins is not None:  # one pass per task, merged (model/ctr.py)
            return ctr.task_forward(self, lambda: self._forward(*args, inputs_embeds))
        return self._forward(*args, inputs_embeds)

    def _forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        word_mask: torch.Tensor,
        output_hidden_states: bool,
        inputs_embeds: torch.Tensor | None,
    ) -> TaggerOutput:
        enc = self.encoder(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
        )
        states = enc.last_hidden_state
        if self.branches is not None:
            states = self.branches(states, attention_mask)
        feats = self.word_features(states, word_index, word_mask)
        if isinstance(self.head, LabelSemanticHead):
            logits = self.head(self.dropout(feats), self.type_embeddings())
        else:
            logits = self.head(self.dropout(feats))
        hidden = tuple(enc.hidden_states) if output_hidden_states else None
        return TaggerOutput(logits=logits, features=feats, hidden_states=hidden)

    def word_features(
        self, states: torch.Tensor, word_index: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-word features (B, W, H') from token states (B, T, H): first pieces, then the
        BiLSTM if there is one, plus the side tower's reading if there is one."""
        shared = gather_words(states, word_index)
        feats = shared if self.lstm is None else run_lstm(self.lstm, shared, word_mask)
        return feats if self.side is None else self.side(shared, word_mask, feats)

    def add_branch(self, layers: int) -> nn.ModuleList:
        """DER: a new branch of the top ``layers`` layers (the first call moves the encoder's
        own top layers into branch 0; later ones copy the newest branch), its head columns at
        zero so no prediction changes until it is trained. Returns the new branch."""
        if self.lstm is not None or self.side is not None or self.spec.head != "linear":
            raise ConfigError(
                "DER branches feed the linear head directly",
                fix="use model.head: linear without model.bilstm or a side tower with der",
            )
        assert isinstance(self.head, GrowableLinear)
        size = int(getattr(self.encoder, "config").hidden_size)  # noqa: B009
        if self.branches is None:
            self.branches = der.split_top(self.encoder, layers)
            self.spec.der_layers = layers
            new = self.branches.branches[0]
            assert isinstance(new, nn.ModuleList)
        else:
            new = self.branches.add()
            self.head.grow_inputs(size)
            self.feature_size += size
        self.spec.der_branches = len(self.branches.branches)
        return new

    def add_side_tower(self, hidden: int) -> SideTower:
        """Attach a side tower (BiLSTM of ``hidden`` per direction) that the features read; it
        starts silent (predictions unchanged) and is saved with the model."""
        if self.side is None:
            size = int(getattr(self.encoder, "config").hidden_size)  # noqa: B009
            self.side = SideTower(size, hidden, self.feature_size)
            self.side.to(next(self.encoder.parameters()).device)
            self.spec.side_tower = hidden
        return self.side

    def _check_type_texts(self, types: list[str]) -> None:
        """Refuse types whose texts encode to the same ids (their labels could never differ)."""
        seen: dict[tuple[int, ...], str] = {}
        for t in types:
            text = self.spec.type_texts.get(t, t)
            ids = tuple(self.encode(self.tokenize(text)[0]).input_ids)
            if ids in seen:
                raise ConfigError(
                    f"types {seen[ids]} and {t} read the same to the encoder (texts "
                    f"{self.spec.type_texts.get(seen[ids], seen[ids])!r} and {text!r}; unknown "
                    "characters become [UNK]), so the label-semantic head cannot tell them apart",
                    fix="give them distinct descriptions the encoder knows, under `types:`",
                )
            seen[ids] = t

    def type_embeddings(self) -> torch.Tensor:
        """(n_types, H): the encoder's mean output over each type's text (description or name)."""
        texts = [self.spec.type_texts.get(t, t) for t in self.types]
        encoded = [self.encode(self.tokenize(t)[0]) for t in texts]
        batch = collate(encoded, None, self.token_encoder.pad_id)
        mask = batch["attention_mask"].to(self.device)
        states = self.encoder(
            input_ids=batch["input_ids"].to(self.device), attention_mask=mask
        ).last_hidden_state  # (n, T, H)
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.parameters()).device

    def loss(
        self,
        out: TaggerOutput,
        labels: torch.Tensor,
        word_mask: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy (or CRF negative log-likelihood, or the pointer loss of the prompt_span
        head) of ``labels`` (B, W); -100 is ignored. ``weights`` (B, W) weigh each word's
        cross-entropy (with a CRF: each sentence by the mean weight of its labelled words)."""
        if isinstance(self.head, PromptSpanHead):
            return pointer_loss(out.logits, labels, word_mask)
        if self.crf is not None:
            return self.crf.partial_nll(out.logits, labels, word_mask, weights)
        if not bool((labels != -100).any()):
            return out.logits.sum() * 0.0  # nothing to learn from in this batch (not NaN)
        if weights is not None:
            keep = labels != -100
            per_word = nn.functional.cross_entropy(out.logits[keep], labels[keep], reduction="none")
            return (per_word * weights[keep]).mean()
        return nn.functional.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )

    def decode(self, out: TaggerOutput, word_mask: torch.Tensor) -> list[list[int]]:
        """Best label ids per word (Viterbi with a CRF, else argmax), one list per row."""
        if isinstance(self.head, PromptSpanHead):
            return decode_pointers(out.logits, word_mask)[0]
        lengths = word_mask.sum(1).tolist()
        if self.crf is not None:
            rows = [i for i, n in enumerate(lengths) if n > 0]
            paths: list[list[int]] = [[] for _ in lengths]
            if rows:
                dec = self.crf.decode(out.logits[rows], word_mask[rows])
                for i, p in zip(rows, dec, strict=True):
                    paths[i] = p
            return paths
        best = out.logits.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, lengths, strict=True)]

    def tokenize(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """``(tokens, offsets)`` of raw text as this model reads it (its language and
        ``latin_words``)."""
        return tokenize(text, self.spec.lang, self.spec.latin_words)

    def encode(self, tokens: list[str]) -> Encoded:
        """One sentence's tokens -> model input (see :class:`TokenEncoder`)."""
        return self.token_encoder.encode(tokens)

    def batch(self, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
        """Token lists -> a padded batch on this model's device."""
        device = self.device
        batch = collate([self.encode(t) for t in sentences], None, self.token_encoder.pad_id)
        return {k: v.to(device) for k, v in batch.items()}

    def predict_tags(
        self,
        sentences: list[list[str]],
        batch_size: int = 64,
        progress: str | None = None,
        types: Sequence[Sequence[str] | None] | None = None,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """BIO tags and per-word probabilities of the chosen label, one list per sentence;
        ``types[i]``: the only types sentence ``i`` may get (see
        :func:`diancang.model.predicting.predict_tags`)."""
        from diancang.model import predicting

        return predicting.predict_tags(self, sentences, batch_size, progress, types)

    def label_mask(self, types: Sequence[str] | None) -> torch.Tensor | None:
        """(C,) True for the labels of ``types`` and ``O``; None: all (see
        :func:`diancang.model.predicting.label_mask`)."""
        from diancang.model import predicting

        return predicting.label_mask(self, types)

    # ----------------------------------------------------------------------------- save/load
    def save_pretrained(
        self, directory: str | Path, run_config: dict[str, Any] | None = None
    ) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``encoder/`` (config + tokenizer);
        see :func:`diancang.model.saving.save`."""
        from diancang.model import saving

        saving.save(self, directory, run_config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Tagger:
        """Rebuild a tagger saved by :meth:`save_pretrained` (no network, no pickle)."""
        from diancang.model import saving

        return saving.load(directory)
