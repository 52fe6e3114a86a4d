"""What a step's supervision made of the words nobody labelled, against the hidden gold.

In a benchmark the pool keeps every sentence fully annotated; a step's training data shows only
its own types, so old-type entities there read ``O``. :class:`SupervisionAudit` compares, for
every such word of the step's own sentences, the *resolved target* the base loss trained on
(after every strategy's data and target hooks: a relabelled span, a pseudo-label, ``O``, or
left out of the loss) with the hidden gold label. It is measurement only: strategies never see
the hidden gold, and ``learn`` (which has none) runs without it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from diancang.data.record import Sentence, spans_to_bio
from diancang.strategies.base import Target

LEFT_OUT = "(left out)"
FUTURE = "(later type)"


def _kind(tag: str) -> str:
    return tag if tag == "O" else tag[2:]


class SupervisionAudit:
    """Counts ``(target type, hidden type)`` over the unlabelled words of a step's sentences,
    each sentence once (its first batch). ``given[i]`` is sentence ``i`` as the step shows it,
    ``hidden[i]`` the same sentence with every type seen so far; ``labels`` the model's."""

    def __init__(self, given: list[Sentence], hidden: list[Sentence], labels: list[str]) -> None:
        self.given = [spans_to_bio(len(s.tokens), s.spans) for s in given]
        self.hidden = [spans_to_bio(len(s.tokens), s.spans) for s in hidden]
        self.labels = labels
        self.old = {_kind(lab) for lab in labels if lab != "O"}
        self.counts: Counter[tuple[str, str]] = Counter()
        self._done: set[int] = set()
        self.positions: dict[int, int] = {}

    def align(self, data: list[Sentence], given: list[Sentence]) -> None:
        """Find the step's sentences in the training data the strategies made: position ``j``
        is step sentence ``j`` when it holds its tokens (replay adds sentences after them, a
        relabelling keeps them in place; ``joint`` replaces the data, and then little matches)."""
        n = min(len(data), len(given))
        self.positions = {j: j for j in range(n) if data[j].tokens == given[j].tokens}

    def observe(self, inputs: dict[str, torch.Tensor], target: Target) -> None:
        """Count one batch's unlabelled words (rows whose ``index`` is a step sentence)."""
        lengths = inputs["word_mask"].sum(1).tolist()
        for b, j in enumerate(inputs["index"].tolist()):
            i = self.positions.get(j)
            if i is None or i in self._done:
                continue  # a replayed or synthetic sentence, or counted in an earlier epoch
            self._done.add(i)
            row = target.labels[b].tolist()
            for w in range(int(lengths[b])):
                if self.given[i][w] != "O":
                    continue
                t = LEFT_OUT if row[w] == -100 else _kind(self.labels[row[w]])
                h = _kind(self.hidden[i][w])
                self.counts[(t, h if h == "O" or h in self.old else FUTURE)] += 1

    def state(self) -> dict[str, Any]:
        """What has been counted so far, as JSON (a killed step's state, see
        :mod:`diancang.learn.resume`)."""
        return {"counts": [[t, h, n] for (t, h), n in self.counts.items()],
                "done": sorted(self._done)}  # fmt: skip

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state` returned."""
        self.counts = Counter({(t, h): n for t, h, n in state["counts"]})
        self._done = set(state["done"])

    def summary(self) -> dict[str, Any]:
        """Word counts and, over old-type targets, precision and recall against the hidden
        gold (None where nothing was counted)."""
        entity = {t for t, _ in self.counts} | {h for _, h in self.counts}
        entity -= {"O", LEFT_OUT, FUTURE}
        hit = sum(n for (t, h), n in self.counts.items() if t == h and t in entity)
        made = sum(n for (t, _), n in self.counts.items() if t in entity)
        hidden = sum(n for (_, h), n in self.counts.items() if h in entity)
        confusion: dict[str, dict[str, int]] = {}
        for (t, h), n in sorted(self.counts.items()):
            confusion.setdefault(t, {})[h] = n
        return {
            "unlabelled_words": sum(self.counts.values()),
            "hidden_old_entity_words": hidden,
            "pseudo_labelled_words": made,
            "precision": hit / made if made else None,
            "recall": hit / hidden if hidden else None,
            "left_out": sum(n for (t, _), n in self.counts.items() if t == LEFT_OUT),
            "confusion": confusion,
        }
