"""Per-word outputs of a tagger over whole sentence lists, for strategies that look at the data
before or after training (prototypes, memories, bias fits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diancang.data.record import Sentence, spans_to_bio
from diancang.model.tagger import Tagger


@dataclass
class WordOutputs:
    """Row ``n`` is word ``where[n] = (sentence, word)``: its ``logits`` (N, C), ``features``
    (N, H) and gold ``tags`` (N,) strings. Words past the model's ``max_length`` are absent."""

    logits: torch.Tensor
    features: torch.Tensor
    tags: list[str]
    where: list[tuple[int, int]]

    def label_ids(self, labels: list[str], unknown: int = -100) -> torch.Tensor:
        """(N,) ids of the gold tags in ``labels`` (``unknown`` for a tag not in it)."""
        index = {lab: i for i, lab in enumerate(labels)}
        return torch.tensor([index.get(t, unknown) for t in self.tags], dtype=torch.long)


@torch.no_grad()
def word_outputs(model: Tagger, sentences: list[Sentence], batch_size: int = 64) -> WordOutputs:
    """Run ``model`` (in eval mode) over ``sentences``; results on the CPU."""
    was_training = model.training
    model.eval()
    logits, feats, tags, where = [], [], [], []
    for lo in range(0, len(sentences), batch_size):
        chunk = sentences[lo : lo + batch_size]
        batch = model.batch([s.tokens for s in chunk])
        out = model(**batch)
        for i, s in enumerate(chunk):
            n = int(batch["word_mask"][i].sum())
            logits.append(out.logits[i, :n].cpu())
            feats.append(out.features[i, :n].cpu())
            tags += spans_to_bio(len(s.tokens), s.spans)[:n]
            where += [(lo + i, j) for j in range(n)]
    model.train(was_training)
    if not logits:
        empty = torch.zeros(0, model.feature_size)
        return WordOutputs(torch.zeros(0, len(model.labels)), empty, [], [])
    return WordOutputs(torch.cat(logits), torch.cat(feats), tags, where)
