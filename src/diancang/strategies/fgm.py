"""``fgm``: adversarial training on the word embeddings (Fast Gradient Method, Miyato et al. 2017).

For every batch the embedding matrix is moved by ``epsilon`` along the normalised gradient of the
base loss, the batch is scored again, and that adversarial loss is added. Both losses are on the
resolved target (every strategy's ``targets``), so ``fgm`` never re-supervises words another
strategy took out of the cross-entropy (``distill``'s and ``cpfd``'s ``O`` words). Combine it
with any other strategy (``strategies: [distill, fgm]``).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from diancang.errors import ConfigError
from diancang.strategies.base import ALL_HEADS, StepBatch, StepContext, Strategy, Target, strategies


@strategies.register("fgm", version=1)
class FGM(Strategy):
    """Adversarial perturbation of the word embeddings; adds the adversarial loss."""

    name = "fgm"
    resumes_mid_step = True
    heads = ALL_HEADS

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        epsilon: float = Field(1.0, gt=0, description="L2 norm of the embedding perturbation.")
        weight: float = Field(1.0, ge=0, description="Weight of the adversarial loss.")

    params: Params

    def loss_terms(
        self, ctx: StepContext, batch: StepBatch, target: Target
    ) -> dict[str, torch.Tensor]:
        model, inputs = ctx.model, batch.inputs
        emb = model.encoder.get_input_embeddings().weight  # type: ignore[operator]
        if not emb.requires_grad:
            raise ConfigError(
                "fgm perturbs the word embeddings, but model.freeze_embeddings is true",
                fix="set model.freeze_embeddings: false, or remove fgm from strategies",
            )
        mask = inputs["word_mask"]
        base = model.loss(batch.out, target.labels, mask, target.weights)
        (grad,) = torch.autograd.grad(base, emb, retain_graph=True)
        norm = grad.norm()
        if not torch.isfinite(norm) or norm == 0:
            return {}
        rows = torch.unique(inputs["input_ids"])  # the only rows with a gradient
        saved = emb.detach()[rows].clone()
        with torch.no_grad():  # the lookup saves indices only, so the first graph stays valid
            emb[rows] += self.params.epsilon * grad[rows] / norm
        try:
            adv = model(**inputs)
            loss = model.loss(adv, target.labels, mask, target.weights)
        finally:
            with torch.no_grad():
                emb[rows] = saved  # exact restore
        return {"adv": self.params.weight * loss}
