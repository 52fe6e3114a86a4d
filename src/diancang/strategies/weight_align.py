"""``weight_align``: Weight Aligning (WA, Zhao et al., CVPR 2020) for the growable head.

A head trained on a step's data learns large weights for the new labels and so favours them
over the old ones. At the end of each step (from the second on) WA rescales the new types'
``B-``/``I-`` rows by ``gamma = mean norm of the old types' rows / mean norm of the new rows``.
The ``O`` row is left out of both means. Biases are unchanged. Put it after ``ema`` in
``strategies`` to align the averaged weights.
"""

from __future__ import annotations

import torch

from diancang.strategies.base import StepContext, Strategy, linear_head, strategies


def aligned_head(weight: torch.Tensor, old_rows: list[int], new_rows: list[int]) -> torch.Tensor:
    """A copy of ``weight`` (C, H) with ``new_rows`` scaled to the mean norm of ``old_rows``."""
    out = weight.detach().clone()
    if old_rows and new_rows:
        norms = out.norm(dim=1)
        gamma = norms[old_rows].mean() / norms[new_rows].mean().clamp_min(1e-12)
        out[new_rows] *= gamma
    return out


@strategies.register("weight_align", version=1)
class WeightAlign(Strategy):
    """Rescale the new types' head rows to the old rows' mean norm after each step (WA)."""

    name = "weight_align"

    def final_weights(self, ctx: StepContext) -> dict[str, torch.Tensor] | None:
        labels = ctx.model.labels
        new = set(ctx.step.new_types)
        new_rows = [i for i, lab in enumerate(labels) if lab != "O" and lab[2:] in new]
        old_rows = [i for i, lab in enumerate(labels) if lab != "O" and lab[2:] not in new]
        if not old_rows:
            return None
        head = linear_head(ctx.model, "weight_align")
        return {"head.weight": aligned_head(head.weight, old_rows, new_rows)}
