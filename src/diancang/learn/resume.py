"""Resuming a step mid-way: the training state after each whole epoch, kept until the step ends.

A version folder is written when a step finishes (:mod:`diancang.learn.checkpoint`); a step that
trains for hours needs more. After every epoch :class:`EpochState` writes what the rest of the
step depends on: the model's and the strategies' modules' weights, the optimizer and scheduler,
every random generator (the data order's, torch's, Python's and NumPy's), and what the step
runner and the strategies accumulate (early stopping's best weights, dev scores, training
seconds; :meth:`~diancang.strategies.base.Strategy.epoch_state`). A killed ``diancang run``
started again rebuilds the step as before, loads that state and trains on from the next epoch,
to the same weights as a run that was never stopped (``tests/test_resume.py``).

Files: ``tensors.safetensors`` and ``state.json`` in one folder, replaced whole (written beside
it, then renamed), so a kill while writing leaves the previous epoch's state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diancang.errors import DiancangError

logger = logging.getLogger("diancang.learn")

#: ``more()``: what the caller adds to the state (tensors, JSON); ``load_more(tensors, json)``
#: puts it back.
More = Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]
LoadMore = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


def _tensors(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state``'s tensors as ``prefix.name``, copied to the CPU (no shared storage)."""
    return {f"{prefix}.{k}": v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _take(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix.`` (prefix stripped)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _param_names(opt: Any, modules: dict[str, nn.Module]) -> list[str]:
    """The name of each parameter the optimizer holds, in its ``state_dict()`` order (modules'
    parameters named ``prefix.name``): a model rebuilt from a version folder may list its
    parameters in another order, so saved slots are matched by name, not position."""
    names = {id(q): f"{k}.{n}" for k, m in modules.items() for n, q in m.named_parameters()}
    return [names[id(q)] for group in opt.param_groups for q in group["params"]]


def optimizer_state(
    opt: Any, modules: dict[str, nn.Module]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict()`` split into tensors (``opt.<param name>/<key>``) and JSON,
    its slots named by parameter (see :func:`_param_names`)."""
    sd = opt.state_dict()
    names = _param_names(opt, modules)
    tensors, plain = {}, {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{names[index]}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                plain[f"{names[index]}/{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    sizes = [len(g["params"]) for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "sizes": sizes, "plain": plain}


def load_optimizer_state(
    opt: Any, modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor], saved: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`, matching slots to parameters by name."""
    names = _param_names(opt, modules)
    sizes = [len(g["params"]) for g in opt.param_groups]
    if sizes != saved["sizes"]:
        raise DiancangError(
            f"the saved optimizer holds parameter groups of {saved['sizes']} parameters, this "
            f"step's {sizes}",
            fix="start the step over: pass --restart (or remove output_dir/work/epoch-state)",
        )
    by_name: dict[str, dict[str, Any]] = {}
    for name, value in _take("opt", tensors).items():
        param, key = name.rsplit("/", 1)
        by_name.setdefault(param, {})[key] = value
    for name, value in saved["plain"].items():
        param, key = name.rsplit("/", 1)
        by_name.setdefault(param, {})[key] = value
    state = {i: by_name[n] for i, n in enumerate(names) if n in by_name}
    groups, start = [], 0
    for group, size in zip(saved["param_groups"], sizes, strict=True):
        groups.append({**group, "params": list(range(start, start + size))})
        start += size
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state(generator: torch.Generator | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random generator a step draws from: torch's, the data order's (``generator``),
    Python's and NumPy's."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if generator is not None:
        tensors["rng.loader"] = generator.get_state()
    numpy = np.random.get_state(legacy=True)
    assert isinstance(numpy, tuple)
    version, keys, gauss = random.getstate()
    plain = {
        "python": [version, list(keys), gauss],
        "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]],
    }
    return tensors, plain


def load_rng_state(
    generator: torch.Generator | None, tensors: dict[str, torch.Tensor], saved: dict[str, Any]
) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None:
        generator.set_state(tensors["rng.loader"])
    version, keys, gauss = saved["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


class EpochState:
    """The state of one unfinished step after its last whole epoch, in ``folder``.

    ``key`` says which run and step it belongs to (a state saved under another key is
    ignored, with a warning). ``more``/``load_more`` carry the caller's own accumulations.
    """

    def __init__(self, folder: Path, key: dict[str, Any], more: More, load_more: LoadMore) -> None:
        self.folder = folder
        self.key = key
        self.more = more
        self.load_more = load_more
        #: Seconds spent writing states in this process (not training time).
        self.saving = 0.0

    @classmethod
    def of_step(
        cls, folder: Path, config: dict[str, Any], step: int, more: More, load_more: LoadMore
    ) -> EpochState:
        """Step ``step``'s state in ``folder/step-N``, keyed by the run's ``config`` (a JSON
        dump; where the run is written and its name do not count)."""
        config = {k: v for k, v in config.items() if k not in ("output_dir", "name")}
        key = json.loads(json.dumps({"config": config, "step": step}))
        return cls(folder / f"step-{step}", key, more, load_more)

    def save(
        self,
        epochs_done: int,
        stopped: bool,
        model: nn.Module,
        extra: list[nn.Module],
        opt: Any,
        sched: Any,
        generator: torch.Generator | None,
    ) -> None:
        """Write the state after ``epochs_done`` epochs (``stopped``: early stopping ended the
        loop there)."""
        began = time.perf_counter()
        tensors = _tensors("model", model.state_dict())
        for i, m in enumerate(extra):
            tensors.update(_tensors(f"extra{i}", m.state_dict()))
        opt_tensors, opt_plain = optimizer_state(opt, self._named(model, extra))
        rng_tensors, rng_plain = rng_state(generator)
        more_tensors, more_plain = self.more()
        tensors.update({**opt_tensors, **rng_tensors, **_tensors("more", more_tensors)})
        plain = {
            "key": self.key,
            "epochs_done": epochs_done,
            "stopped": stopped,
            "optimizer": opt_plain,
            "scheduler": sched.state_dict(),
            "rng": rng_plain,
            "more": more_plain,
        }
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(plain), "utf-8")
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(tmp, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self.saving += time.perf_counter() - began

    def restore(
        self,
        model: nn.Module,
        extra: list[nn.Module],
        opt: Any,
        sched: Any,
        generator: torch.Generator | None,
    ) -> tuple[int, bool]:
        """Load the saved state into the step's freshly built objects; returns the epochs
        already done and whether training had stopped (0, False when there is none)."""
        folder = self.folder
        if not (folder / "state.json").is_file():
            folder = self.folder.with_name(self.folder.name + ".old")  # killed mid-rename
            if not (folder / "state.json").is_file():
                return 0, False
        plain = json.loads((folder / "state.json").read_text("utf-8"))
        if plain["key"] != self.key:
            logger.warning("%s holds another run's or step's state: not resumed from", folder)
            return 0, False
        tensors = load_file(str(folder / "tensors.safetensors"))
        model.load_state_dict(_take("model", tensors))
        for i, m in enumerate(extra):
            m.load_state_dict(_take(f"extra{i}", tensors))
        load_optimizer_state(opt, self._named(model, extra), tensors, plain["optimizer"])
        sched.load_state_dict(plain["scheduler"])
        load_rng_state(generator, tensors, plain["rng"])
        self.load_more(_take("more", tensors), plain["more"])
        logger.info("resuming the step after epoch %d (%s)", plain["epochs_done"], folder)
        return int(plain["epochs_done"]), bool(plain["stopped"])

    @staticmethod
    def _named(model: nn.Module, extra: list[nn.Module]) -> dict[str, nn.Module]:
        return {"model": model, **{f"extra{i}": m for i, m in enumerate(extra)}}

    def clear(self) -> None:
        """Remove the saved state (the step finished)."""
        for suffix in ("", ".tmp", ".old"):
            shutil.rmtree(self.folder.with_name(self.folder.name + suffix), ignore_errors=True)
