"""The previous model's outputs on a step's training sentences, computed once per step.

The teacher is frozen and in eval mode, so its output on a sentence is the same in every epoch.
:class:`TeacherCache` keeps each sentence's rows the first time a batch holds it (epoch 1 costs
what it always did) and assembles later batches from them, so a teacher costs one forward pass
per sentence and step, not one per epoch. Rows are cut to each sentence's real words and tokens;
padding positions read 0, and every strategy masks them out. Past ``max_bytes`` it stops
keeping rows and computes the rest live.
"""

from __future__ import annotations

import torch

from diancang.model.tagger import Tagger, TaggerOutput


class TeacherCache:
    """Per training sentence (the batch's ``index``): the teacher's logits (w, C), features
    (w, H) and, when asked for, every layer's hidden states (t, H)."""

    def __init__(self, teacher: Tagger, hidden: bool, max_bytes: int) -> None:
        self.teacher = teacher
        self.hidden = hidden
        self.max_bytes = max_bytes
        self.bytes = 0
        self.rows: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self.live = 0  # batches computed by a forward pass (for tests and reports)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> TaggerOutput:
        """The teacher's output on a batch (B, W, ...) with an ``index`` (B,) of sentences."""
        index = inputs["index"].tolist()
        if all(i in self.rows for i in index):
            return self._assemble(index, inputs)
        self.live += 1
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=self.hidden)
        words = inputs["word_mask"].sum(1).tolist()
        tokens = inputs["attention_mask"].sum(1).tolist()
        for b, i in enumerate(index):
            if i in self.rows:
                continue
            w, t = int(words[b]), int(tokens[b])
            layers = tuple(h[b, :t].clone() for h in out.hidden_states or ())
            row = (out.logits[b, :w].clone(), out.features[b, :w].clone(), layers)
            size = sum(x.numel() * x.element_size() for x in (row[0], row[1], *layers))
            if self.bytes + size > self.max_bytes:
                break
            self.rows[i] = row
            self.bytes += size
        return out

    def _assemble(self, index: list[int], inputs: dict[str, torch.Tensor]) -> TaggerOutput:
        n_words = inputs["word_mask"].shape[1]
        n_tokens = inputs["attention_mask"].shape[1]
        first = self.rows[index[0]]
        logits = first[0].new_zeros(len(index), n_words, first[0].shape[-1])
        feats = first[1].new_zeros(len(index), n_words, first[1].shape[-1])
        layers = [h.new_zeros(len(index), n_tokens, h.shape[-1]) for h in first[2]]
        for b, i in enumerate(index):
            lg, ft, hs = self.rows[i]
            logits[b, : len(lg)] = lg
            feats[b, : len(ft)] = ft
            for layer, h in zip(layers, hs, strict=True):
                layer[b, : len(h)] = h
        hidden = tuple(layers) if self.hidden else None
        return TaggerOutput(logits=logits, features=feats, hidden_states=hidden)
