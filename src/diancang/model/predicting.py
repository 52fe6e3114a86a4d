"""Tagging whole sentences: windows for long ones, batches, CRF or argmax decoding, the
probability of each chosen label, and task-incremental restriction to the types a caller names.
:meth:`Tagger.predict_tags <diancang.model.tagger.Tagger.predict_tags>` calls it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from diancang.errors import DiancangError
from diancang.model import windows
from diancang.model.prompt_span import PromptSpanHead, decode_pointers

if TYPE_CHECKING:
    from diancang.model.tagger import Tagger


@torch.no_grad()
def predict_tags(
    tagger: Tagger,
    sentences: list[list[str]],
    batch_size: int = 64,
    progress: str | None = None,
    types: Sequence[Sequence[str] | None] | None = None,
) -> tuple[list[list[str]], list[list[float]]]:
    """BIO tags and per-word probabilities of the chosen label, one list per sentence. A
    sentence longer than ``max_length`` is tagged in overlapping windows and merged back
    (:mod:`diancang.model.windows`), so every word gets a tag. ``progress``: the label of
    a progress bar (shown on a terminal only). ``types[i]``: the only types sentence ``i``
    may get (task-incremental prediction: the caller names them; None: all)."""
    enc = tagger.token_encoder
    plan, parts = windows.plan(
        sentences, lambda t: len(enc.pieces(t)), enc.max_length - 2, tagger.spec.window_overlap
    )
    masks = None
    if types is not None:
        per = [label_mask(tagger, t) for t in types]
        masks = [m for m, wins in zip(per, plan, strict=True) for _ in wins]
    tags, probs = windows.merge(plan, *_predict_parts(tagger, parts, batch_size, progress, masks))
    if types is not None:  # the span head is not masked: its other types' spans dropped
        for row, keep in enumerate(types):
            if keep is not None:
                tags[row] = [t if t == "O" or t[2:] in keep else "O" for t in tags[row]]
    return tags, probs


def label_mask(tagger: Tagger, types: Sequence[str] | None) -> torch.Tensor | None:
    """(C,) True for the labels of ``types`` and ``O`` (None: every label allowed). Unknown
    types are a :class:`~diancang.errors.DiancangError` naming the model's."""
    if types is None:
        return None
    unknown = sorted(set(types) - set(tagger.types))
    if unknown:
        raise DiancangError(
            f"unknown types {unknown}; this model has {tagger.types}",
            fix="name types the model has (GET /v1/types, or its config.json)",
        )
    keep = set(types)
    return torch.tensor([lab == "O" or lab[2:] in keep for lab in tagger.spec.labels])


def _predict_parts(
    tagger: Tagger,
    sentences: list[list[str]],
    batch_size: int,
    progress: str | None,
    masks: list[torch.Tensor | None] | None = None,
) -> tuple[list[list[str]], list[list[float]]]:
    """:meth:`predict_tags` of sentences that each fit ``max_length`` (``masks[i]``: the
    labels sentence ``i`` may take)."""
    from tqdm.auto import tqdm

    from diancang.model.tagger import TaggerOutput

    was_training = tagger.training
    tagger.eval()
    tags: list[list[str]] = []
    probs: list[list[float]] = []
    starts = range(0, len(sentences), batch_size)
    bar = tqdm(starts, desc=progress, leave=False, disable=None if progress else True)
    for lo in bar:
        chunk = sentences[lo : lo + batch_size]
        batch = tagger.batch(chunk)
        asked = masks[lo : lo + batch_size] if masks is not None else []
        only = _plugin_tasks(tagger, asked)
        if tagger.runtime is not None and only is None:
            logits = tagger.runtime(batch).to(tagger.device)
            out = TaggerOutput(logits=logits, features=logits[..., :0])
        elif only is not None:  # CTR: the named types' tasks only (PyTorch: the graph runs all)
            assert tagger.plugins is not None
            tagger.plugins.run.only = only
            try:
                out = tagger(**batch)
            finally:
                tagger.plugins.run.only = None
        else:
            out = tagger(**batch)
        if any(m is not None for m in asked) and not isinstance(tagger.head, PromptSpanHead):
            every = torch.ones(len(tagger.spec.labels), dtype=torch.bool)
            allowed = torch.stack([m if m is not None else every for m in asked])
            logits = out.logits.masked_fill(~allowed[:, None, :].to(out.logits.device), -1e4)
            out = TaggerOutput(logits=logits, features=out.features)
        if isinstance(tagger.head, PromptSpanHead):
            paths, word_probs = decode_pointers(out.logits, batch["word_mask"])
            _append_tags(tagger.spec.labels, chunk, paths, word_probs, tags, probs)
            continue
        paths = tagger.decode(out, batch["word_mask"])
        soft = out.logits.softmax(-1)  # (B, W, C)
        rows = batch["word_mask"].any(1)
        if tagger.crf is not None and bool(rows.any()):
            soft[rows] = tagger.crf.marginals(out.logits[rows], batch["word_mask"][rows])
        word_probs = [
            [float(soft[i, j, lab]) for j, lab in enumerate(path)] for i, path in enumerate(paths)
        ]
        _append_tags(tagger.spec.labels, chunk, paths, word_probs, tags, probs)
    tagger.train(was_training)
    return tags, probs


def _append_tags(
    labels: list[str],
    chunk: list[list[str]],
    paths: list[list[int]],
    word_probs: list[list[float]],
    tags: list[list[str]],
    probs: list[list[float]],
) -> None:
    """Append each sentence's tags and probabilities, ``O``/0 past the kept words."""
    for toks, path, p in zip(chunk, paths, word_probs, strict=True):
        pad = len(toks) - len(path)
        tags.append([labels[lab] for lab in path] + ["O"] * pad)
        probs.append(p + [0.0] * pad)


def _plugin_tasks(tagger: Tagger, asked: list[torch.Tensor | None]) -> list[int] | None:
    """With CTR plugins and types named for every sentence of a batch: the tasks holding those
    types (task-incremental: only their plugins run); else None (every task, merged)."""
    if tagger.plugins is None or not asked or any(m is None for m in asked):
        return None
    from diancang.model.ctr import task_labels

    wanted = torch.stack([m for m in asked if m is not None]).any(0)
    wanted[0] = False  # O belongs to every task
    tasks = [
        t for t in range(tagger.plugins.n_tasks) if bool((task_labels(tagger, t) & wanted).any())
    ]
    return tasks or None
