"""ONNX Runtime gives the PyTorch path's tags (fp32), int8 runs, and backends are chosen."""

from __future__ import annotations

import pytest

from diancang.errors import ConfigError
from diancang.model import onnx_backend
from tests.test_tagger import make_tagger, overfit
from tests.toy import toy_sentences

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("crf", [False, True])
def test_onnx_tags_as_pytorch_does_long_sentences_included(tmp_path, crf):
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types, crf=crf, bilstm=crf)
    if not crf:  # with an asymmetric multi-task side tower
        model.add_side_tower(8)
    overfit(model, data, epochs=40)
    tokens = [s.tokens for s in data] + [["的"] * 130 + data[0].tokens]
    tags, probs = model.predict_tags(tokens)
    assert onnx_backend.pick_backend(model, "auto", tmp_path / "fp32") == "onnx"
    onnx_tags, onnx_probs = model.predict_tags(tokens)
    assert onnx_tags == tags
    pairs = zip(probs, onnx_probs, strict=True)
    assert max(abs(a - b) for p, q in pairs for a, b in zip(p, q, strict=True)) < 1e-4
    model.runtime = None
    assert onnx_backend.pick_backend(model, "onnx-int8", tmp_path / "int8") == "onnx-int8"
    assert (tmp_path / "int8" / "model.int8.onnx").is_file()
    int8_tags, _ = model.predict_tags(tokens)
    assert [len(t) for t in int8_tags] == [len(t) for t in tags]


def test_backend_choice_and_what_cannot_export(tmp_path):
    data = toy_sentences(7)
    model = make_tagger(data, ["PER"])
    assert onnx_backend.pick_backend(model, "torch", tmp_path) == "torch"
    assert model.runtime is None
    semantic = make_tagger(data, ["PER"], head="label_semantic", texts={"PER": "人名"})
    assert onnx_backend.pick_backend(semantic, "auto", tmp_path) == "torch"
    with pytest.raises(ConfigError, match="label_semantic head"):
        onnx_backend.pick_backend(semantic, "onnx", tmp_path)
    towers = make_tagger(data, ["PER"], bilstm=True)
    towers.add_side_tower(8)
    with pytest.raises(ConfigError, match="a BiLSTM and a side tower"):
        onnx_backend.pick_backend(towers, "onnx", tmp_path)
    with pytest.raises(ConfigError, match="unknown backend"):
        onnx_backend.pick_backend(model, "gpu", tmp_path)


def test_a_der_tagger_exports_with_its_branches(tmp_path):
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types)
    model.add_branch(1)
    model.add_branch(1)
    overfit(model, data, epochs=20)
    tokens = [s.tokens for s in data]
    tags, _ = model.predict_tags(tokens)
    assert onnx_backend.pick_backend(model, "onnx", tmp_path) == "onnx"
    assert model.predict_tags(tokens)[0] == tags
