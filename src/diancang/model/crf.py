"""A growable linear-chain CRF in pure PyTorch, with fixed BIO constraints.

Labels follow ``["O", "B-T1", "I-T1", "B-T2", "I-T2", ...]``; new entity types are appended with
:meth:`CRF.grow`, which never changes the id of an existing label. The learned parameters are
``start`` (C,), ``end`` (C,) and ``transitions`` (C, C) indexed ``[from, to]``. BIO constraints
(``I-X`` only after ``B-X``/``I-X``, never first) are non-persistent buffers added to the scores
(-1e4 per forbidden move) in the likelihood, the marginals and Viterbi decoding; they are rebuilt
from the label names and are not part of ``state_dict``.

All algorithms are vectorised over the batch and loop over time steps only. Masks must be
left-aligned: each row is True for its first ``n >= 1`` positions and False after.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diancang.errors import DiancangError

#: Score added to a forbidden transition or start (finite, so the algebra stays NaN-free).
FORBIDDEN = -1e4


def bio_constraints(labels: list[str]) -> tuple[Tensor, Tensor]:
    """Penalties for a BIO label list: ``(start_penalty (C,), transition_penalty (C, C))``.

    ``I-X`` may not start a sentence and may only follow ``B-X`` or ``I-X``; every other move is
    allowed (penalty 0). Labels that are not ``I-...`` are unconstrained.
    """
    num = len(labels)
    start = torch.zeros(num)
    trans = torch.zeros(num, num)
    for to, name in enumerate(labels):
        if not name.startswith("I-"):
            continue
        kind = name[2:]
        start[to] = FORBIDDEN
        for frm, prev in enumerate(labels):
            if prev not in (f"B-{kind}", f"I-{kind}"):
                trans[frm, to] = FORBIDDEN
    return start, trans


def _check_labels(labels: list[str]) -> None:
    seen: set[str] = set()
    for name in labels:
        if not isinstance(name, str) or not name:
            raise DiancangError(
                f"CRF label {name!r} is not a non-empty string",
                fix="use BIO label names such as 'O', 'B-PER', 'I-PER'",
            )
        if name in seen:
            raise DiancangError(
                f"CRF label {name!r} appears twice",
                fix="give every label exactly once (the model config's label list is corrupt)",
            )
        seen.add(name)


class CRF(nn.Module):
    """Linear-chain CRF over ``num_labels`` tags with optional BIO constraints.

    ``labels`` (one name per tag id) switches on the BIO constraints; with ``None`` every
    transition is allowed. The label list is *not* stored in ``state_dict``: build
    ``CRF(num_labels, labels)`` from the saved config, then ``load_state_dict``.
    """

    start_penalty: Tensor
    transition_penalty: Tensor

    def __init__(self, num_labels: int, labels: list[str] | None = None) -> None:
        super().__init__()
        if num_labels < 1:
            raise DiancangError(
                f"a CRF needs at least one label, got num_labels={num_labels}",
                fix="pass the size of the label list (at least ['O'])",
            )
        if labels is not None:
            labels = list(labels)
            _check_labels(labels)
            if len(labels) != num_labels:
                raise DiancangError(
                    f"CRF has num_labels={num_labels} but {len(labels)} label names were given",
                    fix="make the label list in the model config match the saved CRF size",
                )
        self.num_labels = num_labels
        self._labels = labels
        self.start = nn.Parameter(torch.zeros(num_labels))
        self.end = nn.Parameter(torch.zeros(num_labels))
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels))
        self.register_buffer("start_penalty", torch.zeros(num_labels), persistent=False)
        self.register_buffer(
            "transition_penalty", torch.zeros(num_labels, num_labels), persistent=False
        )
        self._rebuild_constraints()

    @property
    def labels(self) -> list[str] | None:
        """A copy of the label names (``None`` when the CRF is unconstrained)."""
        return None if self._labels is None else list(self._labels)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, constrained={self._labels is not None}"

    def _rebuild_constraints(self) -> None:
        device, dtype = self.transitions.device, self.transitions.dtype
        if self._labels is None:
            start = torch.zeros(self.num_labels)
            trans = torch.zeros(self.num_labels, self.num_labels)
        else:
            start, trans = bio_constraints(self._labels)
        self.start_penalty = start.to(device=device, dtype=dtype)
        self.transition_penalty = trans.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ growing

    def grow(self, new_labels: list[str]) -> None:
        """Append ``new_labels``; old ids and old parameter entries are kept exactly.

        New rows/columns of ``start``, ``end`` and ``transitions`` start at 0, on the module's
        device and dtype. The parameters are replaced by *new* ``nn.Parameter`` objects, so any
        optimizer built before ``grow`` holds stale tensors and must be rebuilt afterwards.
        """
        new_labels = list(new_labels)
        if not new_labels:
            return
        if self._labels is not None:
            _check_labels(self._labels + new_labels)
        else:
            _check_labels(new_labels)
        old, extra = self.num_labels, len(new_labels)
        size = old + extra
        ref = self.transitions
        with torch.no_grad():
            start = ref.new_zeros(size)
            end = ref.new_zeros(size)
            trans = ref.new_zeros(size, size)
            start[:old] = self.start
            end[:old] = self.end
            trans[:old, :old] = self.transitions
        self.start = nn.Parameter(start, requires_grad=self.start.requires_grad)
        self.end = nn.Parameter(end, requires_grad=self.end.requires_grad)
        self.transitions = nn.Parameter(trans, requires_grad=self.transitions.requires_grad)
        self.num_labels = size
        if self._labels is not None:
            self._labels = self._labels + new_labels
        self._rebuild_constraints()

    # ------------------------------------------------------------------ helpers

    def _scores(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Validate inputs; return float32 ``(emissions, mask, start, transitions)``."""
        if emissions.dim() != 3 or emissions.size(-1) != self.num_labels:
            raise ValueError(
                f"emissions must be (B, L, {self.num_labels}), got {tuple(emissions.shape)}"
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"mask must be (B, L) = {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}"
            )
        mask = mask.bool()
        if emissions.size(1) == 0 or not bool(mask[:, 0].all()):
            raise ValueError("every row of the mask must cover at least its first token")
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("the mask must be left-aligned (True then False in every row)")
        low = emissions.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if low else emissions.dtype  # half precision: work in float32
        start = (self.start + self.start_penalty).to(dtype)
        trans = (self.transitions + self.transition_penalty).to(dtype)
        return emissions.to(dtype), mask, start, trans

    def _forward_alphas(
        self, emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor
    ) -> Tensor:
        """Forward log-scores ``alpha`` (B, L, C); frozen after each row's last token."""
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    def _log_z(self, emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor) -> Tensor:
        alpha = self._forward_alphas(emissions, mask, start, trans)[:, -1]
        return torch.logsumexp(alpha + self.end.to(alpha.dtype), dim=1)

    def _gold(
        self, emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor, trans: Tensor
    ) -> Tensor:
        if tags.shape != mask.shape:
            raise ValueError(f"tags must be (B, L) = {tuple(mask.shape)}, got {tuple(tags.shape)}")
        tags = torch.where(mask, tags.long(), torch.zeros_like(tags, dtype=torch.long))
        if bool(((tags < 0) | (tags >= self.num_labels)).any()):
            raise ValueError(f"tags at unmasked positions must be in [0, {self.num_labels})")
        maskf = mask.to(emissions.dtype)
        score = start[tags[:, 0]]
        score = score + (emissions.gather(2, tags.unsqueeze(2)).squeeze(2) * maskf).sum(1)
        if tags.size(1) > 1:
            score = score + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = mask.long().sum(1) - 1
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
        return score + self.end.to(emissions.dtype)[last_tags]

    # ------------------------------------------------------------------ public API

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Log normaliser ``log Z`` per row: emissions (B, L, C), mask (B, L) -> (B,)."""
        return self._log_z(*self._scores(emissions, mask))

    def path_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised (constrained) score of ``tags`` (B, L) per row -> (B,)."""
        emissions, mask, start, trans = self._scores(emissions, mask)
        return self._gold(emissions, tags, mask, start, trans)

    def neg_log_likelihood(
        self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean"
    ) -> Tensor:
        """Negative log-likelihood of ``tags`` under the constrained CRF.

        emissions (B, L, C), tags (B, L) long (ignored where ``mask`` is False, may be -100),
        mask (B, L) bool, left-aligned. ``reduction``: ``"mean"`` / ``"sum"`` over the batch,
        or ``"none"`` for (B,). A gold path that breaks the BIO constraints costs about 1e4.
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        emissions, mask, start, trans = self._scores(emissions, mask)
        log_z = self._log_z(emissions, mask, start, trans)
        nll = log_z - self._gold(emissions, tags, mask, start, trans)
        if reduction == "mean":
            return nll.mean()
        if reduction == "sum":
            return nll.sum()
        return nll

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Posterior marginals ``p(y_t = c | x)`` by forward-backward: (B, L, C).

        Each unmasked position sums to 1 over labels; masked positions are all zeros.
        """
        emissions, mask, start, trans = self._scores(emissions, mask)
        end = self.end.to(emissions.dtype)
        alphas = self._forward_alphas(emissions, mask, start, trans)
        length = emissions.size(1)
        beta = end.expand(emissions.size(0), -1)
        betas = [beta]
        for t in range(length - 2, -1, -1):
            nxt = torch.logsumexp(trans + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where(mask[:, t + 1 : t + 2], nxt, end.expand_as(nxt))
            betas.append(beta)
        betas_t = torch.stack(betas[::-1], dim=1)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
        probs = torch.exp(alphas + betas_t - log_z[:, None, None])
        return probs * mask.unsqueeze(2).to(probs.dtype)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Constrained Viterbi: emissions (B, L, C), mask (B, L) -> best tag ids, n per row."""
        emissions, mask, start, trans = self._scores(emissions, mask)
        batch, length, _ = emissions.shape
        score = start + emissions[:, 0]
        identity = torch.arange(self.num_labels, device=emissions.device).expand(batch, -1)
        pointers = []
        for t in range(1, length):
            best, arg = (score.unsqueeze(2) + trans).max(dim=1)
            keep = mask[:, t : t + 1]
            score = torch.where(keep, best + emissions[:, t], score)
            pointers.append(torch.where(keep, arg, identity))
        tag = (score + self.end.to(score.dtype)).argmax(dim=1)
        path = [tag]
        for ptr in reversed(pointers):
            tag = ptr.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1).tolist()
        lengths = mask.long().sum(1).tolist()
        return [row[:n] for row, n in zip(tags, lengths, strict=True)]

    def partial_nll(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        word_mask: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CRF negative log-likelihood of the known labels, mean over sentences.

        A word labelled -100 may take any label: the loss is ``log Z - log Z_known``, where
        ``Z_known`` sums the scores of every path that agrees with the known labels (for a fully
        labelled sentence that is the usual path score). logits (B, W, C), labels/mask (B, W);
        ``weights`` (B, W): each sentence's term is scaled by its labelled words' mean weight.
        """
        rows = word_mask.any(1) & ((labels != -100) & word_mask).any(1)
        if not bool(rows.any()):
            return logits.sum() * 0.0
        em, lab, mask = logits[rows], labels[rows], word_mask[rows]
        known = (lab != -100) & mask
        if weights is None and bool((known == mask).all()):
            return self.neg_log_likelihood(em, lab.clamp(min=0), mask)
        one_hot = nn.functional.one_hot(lab.clamp(min=0), em.shape[-1]).bool()
        allowed = one_hot | ~known.unsqueeze(-1)
        constrained = em.masked_fill(~allowed, -1e4)
        nll = self.log_partition(em, mask) - self.log_partition(constrained, mask)
        if weights is not None:
            w = weights[rows].masked_fill(~known, 0.0)
            nll = nll * w.sum(1) / known.sum(1).clamp(min=1)
        return nll.sum() / rows.sum()
