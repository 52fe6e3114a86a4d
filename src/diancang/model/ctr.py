"""CTR's continual-learning plugins (Ke et al., NeurIPS 2021) for a frozen encoder.

Two plugins per transformer layer, on the outputs of the attention block's and the feed-forward
block's dense layers (where adapters sit). A plugin maps states x (B, T, H) of task t to
``x + TSM(x + KSM(x, t), t)``:

- **KSM**, the knowledge-sharing module: one **task capsule** per task (a small 2-layer network
  x -> R^d, squashed); **transfer routing** from the capsules of tasks 0..t to task t's output
  capsule by dynamic routing (priors ``u_i = W_i c_i``, coupling coefficients ``softmax(b)``
  over the tasks, ``b += u_i . v`` for ``iterations`` rounds), then task t's projection d -> H.
  A task's capsule, routing matrix and projection train only in its own step.
- **TSM**, the task-specific module: an adapter (H -> a -> H) whose units are gated by task t's
  **hard-attention masks** (HAT: ``sigmoid(s e_t)`` while task t trains, annealed to a binary
  mask, ``e_t > 0``, afterwards). Units a finished task uses are protected (the strategy puts
  their weights back after every update), so an earlier task's outputs stay bit-identical.

:class:`Plugins` installs them as forward hooks and holds which task runs: one task while its
step trains (``train_task``), otherwise the tasks :meth:`Tagger.forward` asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from diancang.model.arbiter import Arbiter, arbitrate

if TYPE_CHECKING:
    from diancang.model.tagger import Tagger, TaggerOutput


def squash(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Capsule non-linearity: keeps the direction, maps the norm into [0, 1)."""
    n2 = (x * x).sum(dim, keepdim=True)
    return n2 / (1 + n2) * x / torch.sqrt(n2 + 1e-9)


def route(priors: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic routing: priors (..., n, d) of n task capsules -> output capsule (..., d) and the
    coupling coefficients (..., n), which sum to 1 over the tasks."""
    logits = priors.new_zeros(priors.shape[:-1])
    for r in range(iterations):
        coupling = logits.softmax(-1)
        out = squash((coupling.unsqueeze(-1) * priors).sum(-2))
        if r < iterations - 1:
            logits = logits + (priors * out.unsqueeze(-2)).sum(-1)
    return out, coupling


class Compensate(torch.autograd.Function):
    """HAT's gradient compensation: the identity on a task embedding e, whose gradient is
    scaled by ``s_max / s * (cosh(s e) + 1) / (cosh(e) + 1)`` so that the embedding trains as
    if the slope were ``s_max`` while the mask's sigmoid is still soft."""

    @staticmethod
    def forward(ctx: Any, e: torch.Tensor, s: float, s_max: float) -> torch.Tensor:
        ctx.save_for_backward(e)
        ctx.s, ctx.s_max = s, s_max
        return e.view_as(e)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (e,) = ctx.saved_tensors
        num = torch.cosh(torch.clamp(ctx.s * e, -50, 50)) + 1
        return grad * ctx.s_max / ctx.s * num / (torch.cosh(e) + 1), None, None


class Running:
    """Which task the plugins run: ``task``; ``train_task`` and ``s`` (HAT's slope) while a
    task's step trains. Shared by the plugins of one model (a deep copy gets its own)."""

    def __init__(self) -> None:
        self.task = 0
        self.train_task: int | None = None
        self.s: float | None = None
        self.s_max = 1.0  # the slope the annealing ends at (HAT's gradient compensation)
        self.only: list[int] | None = None  # the tasks a merged pass runs (None: all)


class Plugin(nn.Module):
    """One CL-plugin (see the module docstring); grows a task at a time."""

    used1: torch.Tensor
    used2: torch.Tensor

    def __init__(self, hidden: int, adapter: int, capsule: int, mid: int, run: Running) -> None:
        super().__init__()
        self.run = run
        self.hidden, self.adapter, self.capsule, self.mid = hidden, adapter, capsule, mid
        self.capsules = nn.ModuleList()  # per task: H -> mid -> d
        self.routes = nn.ParameterList()  # per task: (d, d)
        self.larger = nn.ModuleList()  # per task: d -> H
        self.e1 = nn.ParameterList()  # per task: HAT embedding of the adapter's units (a,)
        self.e2 = nn.ParameterList()  # ... and of its outputs (H,)
        self.fc1 = nn.Linear(hidden, adapter)
        self.fc2 = nn.Linear(adapter, hidden)
        nn.init.zeros_(self.fc2.weight)  # a new plugin starts as the identity
        nn.init.zeros_(self.fc2.bias)
        self.register_buffer("used1", torch.zeros(adapter))  # units finished tasks use
        self.register_buffer("used2", torch.zeros(hidden))

    def reset(self) -> None:
        """No task, a fresh adapter (the identity), no unit in use: what a consolidation
        trains anew."""
        for name in ("capsules", "larger"):
            setattr(self, name, nn.ModuleList())
        for name in ("routes", "e1", "e2"):
            setattr(self, name, nn.ParameterList())
        self.fc1.reset_parameters()
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.used1.zero_()
        self.used2.zero_()

    def add_task(self) -> None:
        """Parameters for one more task (capsule, routing matrix, projection, masks)."""
        device = self.fc1.weight.device
        self.capsules.append(
            nn.Sequential(
                nn.Linear(self.hidden, self.mid), nn.GELU(), nn.Linear(self.mid, self.capsule)
            ).to(device)
        )
        self.routes.append(nn.Parameter(torch.eye(self.capsule, device=device)))
        larger = nn.Linear(self.capsule, self.hidden).to(device)
        nn.init.zeros_(larger.weight)
        nn.init.zeros_(larger.bias)
        self.larger.append(larger)
        # N(0, 1) as HAT's task embeddings: about half the units start on
        self.e1.append(nn.Parameter(torch.randn(self.adapter).to(device)))
        self.e2.append(nn.Parameter(torch.randn(self.hidden).to(device)))

    def masks(self, t: int, s: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Task t's unit masks: ``sigmoid(s e_t)`` while it trains (``s``), else binary."""
        if s is None:
            return (self.e1[t] > 0).to(self.e1[t].dtype), (self.e2[t] > 0).to(self.e2[t].dtype)
        s_max = self.run.s_max
        e1, e2 = (Compensate.apply(e, s, s_max) for e in (self.e1[t], self.e2[t]))
        return torch.sigmoid(s * e1), torch.sigmoid(s * e2)

    def forward(self, x: torch.Tensor, t: int, s: float | None) -> torch.Tensor:
        """(B, T, H) states of task t -> (B, T, H)."""
        caps = torch.stack([squash(self.capsules[i](x)) for i in range(t + 1)], dim=-2)
        priors = torch.einsum("...nd,nde->...ne", caps, torch.stack(list(self.routes[: t + 1])))
        shared, _ = route(priors, 3)
        h = x + self.larger[t](shared)
        m1, m2 = self.masks(t, s)
        h = F.gelu(self.fc1(h)) * m1
        h = F.gelu(self.fc2(h)) * m2
        return x + h

    def hook(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        """The forward hook on a dense layer: its output through this plugin as the running
        task (a bound method, so a deep copy of the model hooks its own plugins)."""
        run = self.run
        return self(out, run.task, run.s if run.task == run.train_task else None)

    @torch.no_grad()
    def finish_task(self, t: int) -> None:
        """Mark the units task t uses as protected."""
        m1, m2 = self.masks(t, None)
        self.used1.copy_(torch.maximum(self.used1, m1))
        self.used2.copy_(torch.maximum(self.used2, m2))

    def protected(self) -> dict[str, torch.Tensor]:
        """Boolean masks of the adapter entries finished tasks rely on (name -> mask)."""
        u1, u2 = self.used1.bool(), self.used2.bool()
        return {
            "fc1.weight": u1[:, None].expand_as(self.fc1.weight),
            "fc1.bias": u1,
            "fc2.weight": u2[:, None] & u1[None, :],
            "fc2.bias": u2,
        }


class Plugins(nn.Module):
    """Two plugins per layer of a BERT-style encoder, installed as forward hooks."""

    def __init__(
        self, encoder: nn.Module, tasks: int, adapter: int, capsule: int, mid: int, arbiter: int = 0
    ) -> None:
        super().__init__()
        layers: Any = getattr(getattr(encoder, "encoder", None), "layer", None)
        if layers is None:
            from diancang.errors import ConfigError

            raise ConfigError(
                f"CTR plugins need a BERT- or XLM-R-style encoder, not {type(encoder).__name__}",
                fix="use e5-small, minilm-l6 or tiny-random",
            )
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009
        self.run = Running()
        self.plugins = nn.ModuleList(
            Plugin(hidden, adapter, capsule, mid, self.run) for _ in range(2 * len(layers))
        )
        for _ in range(tasks):
            self.add_task()
        #: Trained over ``arbiter`` tasks' experts (None: the rule merges them).
        self.arbiter: Arbiter | None = Arbiter(arbiter) if arbiter else None
        for i, layer in enumerate(layers):
            for k, dense in enumerate((layer.attention.output.dense, layer.output.dense)):
                dense.register_forward_hook(self.plugins[2 * i + k].hook)

    def add_task(self) -> int:
        """Grow every plugin by one task; returns its index."""
        for p in self.plugins:
            p.add_task()  # type: ignore[operator]
        return self.n_tasks - 1

    @property
    def n_tasks(self) -> int:
        return len(self.plugins[0].e1)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Every plugin without tasks (:meth:`Plugin.reset`), no arbiter; the hooks stay."""
        for p in self.plugins:
            p.reset()  # type: ignore[operator]
        self.arbiter = None

    def mask_penalty(self, task: int) -> torch.Tensor:
        """HAT's penalty at the running slope: the share of the units no finished task uses
        that task ``task``'s masks take (a scalar)."""
        assert self.run.s is not None
        taken, free = [], []
        for plugin in self.plugins:
            assert isinstance(plugin, Plugin)
            m1, m2 = plugin.masks(task, self.run.s)
            taken += [(m1 * (1 - plugin.used1)).sum(), (m2 * (1 - plugin.used2)).sum()]
            free += [(1 - plugin.used1).sum(), (1 - plugin.used2).sum()]
        return torch.stack(taken).sum() / torch.stack(free).sum().clamp(min=1)

    def anneal(self, s_max: float, batch: int, batches: int, once: bool = False) -> None:
        """Set HAT's slope for update ``batch`` (counted from 0) of periods of ``batches``
        updates (an epoch or a whole step): from ``1/s_max`` at a period's first update to
        ``s_max`` at its last; ``once``: one period, ``s_max`` after it too."""
        r = (min(batch, batches - 1) if once else batch % batches) / max(1, batches - 1)
        self.run.s, self.run.s_max = 1 / s_max + (s_max - 1 / s_max) * r, s_max

    @torch.no_grad()
    def clamp_embeddings(self, task: int, bound: float = 6.0) -> None:
        """Keep task ``task``'s embeddings within ``[-bound, bound]`` (HAT's clamp: a mask
        stays trainable)."""
        for plugin in self.plugins:
            assert isinstance(plugin, Plugin)
            plugin.e1[task].clamp_(-bound, bound)
            plugin.e2[task].clamp_(-bound, bound)

    @contextmanager
    def running(self, task: int) -> Iterator[None]:
        """Run the encoder as task ``task`` inside the block."""
        before, self.run.task = self.run.task, task
        try:
            yield
        finally:
            self.run.task = before


def add_task(tagger: Tagger, types: list[str], sizes: list[int]) -> int:
    """Plugins for one more task with ``types`` (the first call installs them with ``sizes``:
    adapter, capsule and capsule hidden width); returns the task's index."""
    from diancang.errors import ConfigError

    if tagger.crf is not None or tagger.spec.head != "linear" or tagger.branches is not None:
        raise ConfigError(
            "CTR plugins need the linear head without a CRF or DER branches",
            fix="set model.crf: false and model.head: linear, and leave der out",
        )
    if tagger.plugins is None:
        tagger.plugins = Plugins(tagger.encoder, 0, *sizes).to(tagger.device)
        tagger.spec.ctr_sizes = list(sizes)
    tagger.spec.ctr_tasks = [*tagger.spec.ctr_tasks, list(types)]
    return tagger.plugins.add_task()


def task_labels(tagger: Tagger, task: int) -> torch.Tensor:
    """(C,) True for ``O`` and the labels of the task's types."""
    keep = set(tagger.spec.ctr_tasks[task])
    return torch.tensor([lab == "O" or lab[2:] in keep for lab in tagger.labels])


def task_forward(tagger: Tagger, once: Callable[[], TaggerOutput]) -> TaggerOutput:
    """The tagger's output with plugins: while a task trains, that task's pass (its labels
    only); otherwise one pass per task (``run.only``: those tasks), merged per word by the
    arbiter trained over all of them (:mod:`diancang.model.arbiter`), else by the rule: each
    label scored by its task's probability, ``O`` by the lowest of the tasks' (an entity any
    task is sure of wins). Logits are log-scores (B, W, C)."""
    from diancang.model.tagger import TaggerOutput

    plugins = tagger.plugins
    assert plugins is not None
    run = plugins.run
    if tagger.training and run.train_task is not None:
        tasks = [run.train_task]
    else:
        tasks = list(run.only) if run.only is not None else list(range(plugins.n_tasks))
    logps, keeps, out = expert_passes(tagger, once, tasks)
    if len(tasks) == 1:
        return TaggerOutput(logps[0], out.features, out.hidden_states)
    if plugins.arbiter is not None and plugins.arbiter.experts == len(tasks):
        merged = arbitrate(plugins.arbiter, logps, keeps)
    else:  # the rule: each label from its task, O from the least sure task
        merged = logps[0].clone()
        for logp, keep in zip(logps[1:], keeps[1:], strict=True):
            merged = torch.where(keep, logp, merged)
        merged[..., 0] = torch.stack([lp[..., 0] for lp in logps]).min(0).values
    return TaggerOutput(merged, out.features, out.hidden_states)


def expert_passes(
    tagger: Tagger, once: Callable[[], TaggerOutput], tasks: list[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor], TaggerOutput]:
    """Each task's pass: its logits over its own labels (the others at -1e4; log-probabilities
    when there are several tasks), its label mask (C,), and the last pass's output."""
    plugins = tagger.plugins
    assert plugins is not None
    logps, keeps = [], []
    out = None
    for t in tasks:
        with plugins.running(t):
            out = once()
        keep = task_labels(tagger, t).to(out.logits.device)
        logits = out.logits.masked_fill(~keep, -1e4)
        logps.append(logits if len(tasks) == 1 else logits.log_softmax(-1))
        keeps.append(keep)
    assert out is not None
    return logps, keeps, out
