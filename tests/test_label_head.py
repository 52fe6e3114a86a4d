"""The label-semantic head: types from their texts, no parameter per type, zero-shot scores."""

from __future__ import annotations

import torch

from diancang.model.tagger import Tagger
from tests.test_tagger import f1_on, make_tagger, overfit
from tests.toy import toy_sentences


def n_params(model: Tagger) -> int:
    return sum(p.numel() for p in model.parameters())


TEXTS = {"LOC": "北京上海", "PER": "张三李四"}  # the toy vocabulary has no Latin letters


def grown_text_head(head: str):
    """A ``head`` tagger overfit on LOC and PER, then given ORG by its text: returns the model,
    the data, the batch and the logits on it before and after adding ORG."""
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types, head=head, texts=TEXTS)
    overfit(model, data, epochs=80)
    assert f1_on(model, data, types) == 1.0
    model.eval()
    batch = model.batch([s.tokens for s in data])
    with torch.no_grad():
        before = model(**batch).logits
    count = n_params(model)
    model.add_labels(["ORG"], {"ORG": "清华大学"})
    assert n_params(model) == count  # the new type comes from its text, not new parameters
    assert model.spec.type_texts == {**TEXTS, "ORG": "清华大学"}
    with torch.no_grad():
        after = model(**batch).logits
    return model, data, batch, before, after


def test_a_new_type_adds_no_parameter_and_keeps_old_scores(tmp_path):
    model, data, _, before, after = grown_text_head("label_semantic")
    assert after.shape[-1] == before.shape[-1] + 2
    assert torch.allclose(after[..., :5], before, atol=1e-5)  # old labels' scores unchanged
    assert torch.isfinite(after[..., 5:]).all()  # zero-shot scores for the new type

    model.save_pretrained(tmp_path / "m")
    loaded = Tagger.from_pretrained(tmp_path / "m")
    assert loaded.spec.head == "label_semantic" and loaded.types == ["LOC", "PER", "ORG"]
    tokens = [s.tokens for s in data]
    assert loaded.predict_tags(tokens) == model.predict_tags(tokens)


def test_linear_head_strategies_refuse_the_label_semantic_head():
    import pytest

    from diancang.errors import ConfigError
    from diancang.strategies.base import linear_head

    model = make_tagger(toy_sentences(5), ["LOC"], head="label_semantic", texts={"LOC": "北京"})
    with pytest.raises(ConfigError, match="weight_align rewrites the linear head"):
        linear_head(model, "weight_align")


def test_types_the_encoder_cannot_tell_apart_are_refused():
    import pytest

    from diancang.errors import ConfigError

    data = toy_sentences(5)
    with pytest.raises(ConfigError, match="LOC and PER read the same"):
        make_tagger(data, ["LOC", "PER"], head="label_semantic")  # both names are [UNK] here
