"""ONNX Runtime for a tagger's forward pass on CPU, in fp32 or dynamically quantised int8.

The exported graph maps ``input_ids``, ``attention_mask`` (B, T), ``word_index`` and
``word_mask`` (B, W) to per-word ``logits`` (B, W, C); everything after the logits (CRF
decoding, marginals, windows, spans) stays the tagger's own code, so both backends decode
alike. Taggers with the ``linear`` head export (with or without BiLSTM, side tower and CRF,
but not with both towers: the exporter merges their two identical packings of the words into
one, which it cannot translate); the text-based heads stay on PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from diancang.model.tagger import Tagger

INPUTS = ("input_ids", "attention_mask", "word_index", "word_mask")


def available() -> bool:
    """Whether ONNX Runtime is installed (``pip install -e .[onnx]``)."""
    return importlib.util.find_spec("onnxruntime") is not None


def exportable(tagger: Tagger) -> bool:
    """Whether this tagger's forward pass exports (the ``linear`` head, at most one tower)."""
    return not why_not(tagger)


def why_not(tagger: Tagger) -> str:
    """Why this tagger does not export ("" when it does)."""
    if tagger.spec.head != "linear":
        return f"a {tagger.spec.head} head"
    if tagger.lstm is not None and tagger.side is not None:
        return "a BiLSTM and a side tower"
    return ""


class _Logits(nn.Module):
    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.tagger(input_ids, attention_mask, word_index, word_mask).logits


def export(tagger: Tagger, path: str | Path, int8: bool = False) -> Path:
    """Write the tagger's forward pass to ``path`` (ONNX, dynamic batch and lengths); with
    ``int8`` also quantise its weights (dynamic int8) and return that file's path instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = tagger.training
    tagger.eval()
    batch = tagger.batch([["例", "子", "一"], ["例", "子"]])
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes |= {"word_index": {0: "batch", 1: "words"}, "word_mask": {0: "batch", 1: "words"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
        torch.onnx.export(
            _Logits(tagger),
            tuple(batch[k] for k in INPUTS),
            str(path),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch", 1: "words"}},
            opset_version=17,
            dynamo=False,
        )
    tagger.train(was_training)
    if not int8:
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(path.stem + ".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is for convolutional nets
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return quantized


class OnnxForward:
    """Runs an exported forward pass: ``batch`` (the tagger's padded inputs) -> logits (B, W, C)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # unused ones are pruned

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed: dict[str, Any] = {k: batch[k].cpu().numpy() for k in self.inputs}
        (logits,) = self.session.run(["logits"], feed)
        return torch.from_numpy(logits)


def use_onnx(tagger: Tagger, cache: str | Path, int8: bool = False) -> bool:
    """Serve ``tagger`` through ONNX Runtime from ``cache`` (a folder; exported there once).
    Returns False (and leaves the tagger on PyTorch) when ONNX Runtime is missing or the tagger
    does not export."""
    if not available() or not exportable(tagger):
        return False
    cache = Path(cache)
    target = cache / ("model.int8.onnx" if int8 else "model.onnx")
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # one per writer
            written = export(tagger, Path(tmp) / "model.onnx", int8=int8)
            written.replace(target)  # atomic: a reader never sees a half-written file
    tagger.runtime = OnnxForward(target)
    return True


#: ``auto``: ONNX Runtime fp32 when installed and the tagger exports, else PyTorch. On e5-small
#: (results/inference.md) fp32 ONNX tags one text at a time 1.24 x as fast as PyTorch and
#: batches of 32 alike, with the same F1; ``onnx-int8`` is 2.2 x PyTorch at batch 32 but costs
#: about 1.5 F1 points there, so it is opt-in.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def pick_backend(tagger: Tagger, choice: str, cache: str | Path) -> str:
    """Put ``tagger`` on the backend ``choice`` (see :data:`BACKENDS`; ONNX files are exported
    into ``cache`` once) and return the one it runs on. An explicit ``onnx`` choice that cannot
    be met is a :class:`~diancang.errors.ConfigError`."""
    from diancang.errors import ConfigError

    if choice not in BACKENDS:
        raise ConfigError(f"unknown backend {choice!r}", fix=f"use one of {', '.join(BACKENDS)}")
    if choice == "torch":
        return "torch"
    if use_onnx(tagger, cache, int8=choice == "onnx-int8"):
        return "onnx-int8" if choice == "onnx-int8" else "onnx"
    if choice == "auto":
        return "torch"
    why = "onnxruntime is not installed" if not available() else why_not(tagger)
    raise ConfigError(
        f"cannot run this model on {choice} ({why})",
        fix="pip install -e '.[onnx]', or use backend auto or torch",
    )
