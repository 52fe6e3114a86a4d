"""The tagger overfits tiny data, round-trips through save/load, and grows without forgetting."""

from __future__ import annotations

import pytest
import torch

from diancang.data.record import spans_to_bio
from diancang.errors import DiancangError
from diancang.evaluation.metrics import entity_scores
from diancang.model.encoder import build_vocab, tiny_random_encoder
from diancang.model.features import collate
from diancang.model.tagger import Tagger, TaggerSpec
from diancang.predict import bio_spans
from tests.toy import toy_sentences


def make_tagger(
    sentences, types, crf=False, bilstm=False, seed=0, head="linear", texts=None
) -> Tagger:
    vocab = build_vocab(s.tokens for s in sentences)
    enc, tok = tiny_random_encoder(vocab, hidden=64, layers=2, heads=2, max_length=64, seed=seed)
    spec = TaggerSpec(
        labels=["O"] + [f"{p}-{t}" for t in types for p in "BI"],
        lang="zh",
        max_length=64,
        crf=crf,
        bilstm=bilstm,
        lstm_hidden=32,
        dropout=0.0,
        head=head,
        type_texts=dict(texts or {}),
    )
    torch.manual_seed(seed)
    return Tagger(enc, tok, spec)


def overfit(model: Tagger, sentences, epochs: int = 60) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    items = [model.encode(s.tokens) for s in sentences]
    labels = [model.label_ids(spans_to_bio(len(s.tokens), s.spans)) for s in sentences]
    batch = collate(items, labels, model.token_encoder.pad_id)
    model.train()
    for _ in range(epochs):
        out = model(**batch)
        loss = model.loss(out, batch["labels"], batch["word_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()


def f1_on(model: Tagger, sentences, types) -> float:
    gold = [spans_to_bio(len(s.tokens), s.spans) for s in sentences]
    pred, _ = model.predict_tags([s.tokens for s in sentences])
    return entity_scores(gold, pred, types).f1


def _check(tmp_path, crf: bool, bilstm: bool) -> None:
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types, crf=crf, bilstm=bilstm)
    overfit(model, data)
    assert f1_on(model, data, types) == 1.0
    before, probs = model.predict_tags([s.tokens for s in data])

    model.save_pretrained(tmp_path / "m")
    loaded = Tagger.from_pretrained(tmp_path / "m")
    after, probs2 = loaded.predict_tags([s.tokens for s in data])
    assert after == before
    assert torch.allclose(torch.tensor(probs[0]), torch.tensor(probs2[0]), atol=1e-5)
    assert loaded.types == types

    n_params = sum(p.numel() for p in loaded.head.parameters())
    loaded.add_labels(["ORG", "PRO"])
    assert loaded.labels[:5] == model.labels
    assert loaded.labels[5:] == ["B-ORG", "I-ORG", "B-PRO", "I-PRO"]
    assert sum(p.numel() for p in loaded.head.parameters()) > n_params
    grown, _ = loaded.predict_tags([s.tokens for s in data])
    assert grown == before, "adding labels changed old predictions"


def test_overfit_save_reload_add_labels(tmp_path):
    _check(tmp_path, crf=False, bilstm=False)


def test_overfit_crf_bilstm(tmp_path):
    _check(tmp_path, crf=True, bilstm=True)


def test_a_sentence_longer_than_max_length_is_tagged_whole():
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types)
    overfit(model, data)
    short, _ = model.predict_tags([data[0].tokens])
    assert short[0].count("B-PER") == 1
    # 130 x filler, then the first sentence: 140 characters against a 64-piece window
    long = ["的"] * 130 + data[0].tokens
    tags, probs = model.predict_tags([long, data[0].tokens])
    assert len(tags[0]) == len(long) and len(probs[0]) == len(long)
    assert tags[0][130:] == short[0], "the entities past the first window are lost"
    assert tags[1] == short[0]


def test_empty_sentences_and_crf_probabilities():
    data = toy_sentences(4)
    model = make_tagger(data, ["PER"], crf=True)
    tags, probs = model.predict_tags([[], data[0].tokens, []])
    assert tags[0] == [] and tags[2] == [] and len(tags[1]) == len(data[0].tokens)
    assert all(0.0 <= p <= 1.0 for p in probs[1])


def test_trimmed_vocab_and_truncated_layers_roundtrip(tmp_path):
    from diancang.model.encoder import trim_embeddings, truncate_layers
    from diancang.model.features import TokenEncoder

    data = toy_sentences(10)
    full = make_tagger(data, ["PER", "LOC"])
    probe = TokenEncoder(full.tokenizer, lang="zh", max_length=64)
    kept = probe.used_ids(s.tokens for s in data[:5])
    assert kept[: len(probe.special_ids())] == probe.special_ids()
    vocab_before = full.encoder.get_input_embeddings().weight.shape[0]
    enc, tok = full.encoder, full.tokenizer
    trim_embeddings(enc, kept)
    truncate_layers(enc, 1)
    spec = full.spec
    spec.kept_ids, spec.freeze_embeddings = kept, True
    model = Tagger(enc, tok, spec)
    assert model.encoder.get_input_embeddings().weight.shape[0] == len(kept) < vocab_before
    assert not model.encoder.get_input_embeddings().weight.requires_grad
    assert len(model.encoder.encoder.layer) == 1
    # Same rows as before trimming for kept ids; unseen characters map to [UNK].
    ids = model.encode(data[0].tokens).input_ids
    assert max(ids) < len(kept)
    unseen = model.encode(["龘"]).input_ids[1]
    assert unseen == model.token_encoder.unk_id
    model.save_pretrained(tmp_path / "m")
    loaded = Tagger.from_pretrained(tmp_path / "m")
    assert loaded.spec.kept_ids == kept and len(loaded.encoder.encoder.layer) == 1
    tokens = [s.tokens for s in data]
    assert loaded.predict_tags(tokens) == model.predict_tags(tokens)


def test_trimming_ignores_a_mask_token_at_the_end_of_the_vocabulary():
    # XLM-R puts <mask> last (id 250001): trimming must not keep every id below it.
    from transformers import BertTokenizer

    from diancang.model.features import TokenEncoder

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"甲乙丙丁", *[f"w{i}" for i in range(50)]]
    vocab = {w: i for i, w in enumerate([*words, "[MASK]"])}
    enc = TokenEncoder(BertTokenizer(vocab=vocab), lang="zh", max_length=16)
    assert enc.special_ids() == [0, 1, 2, 3]
    assert enc.used_ids([["乙", "丁"]]) == [0, 1, 2, 3, 5, 7]


def test_crf_loss_with_unknown_labels_is_the_partial_likelihood():

    data = toy_sentences(2)
    model = make_tagger(data, ["PER"], crf=True)
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = type("O", (), {"logits": logits})()
    full = torch.tensor([[1, 2, 0]])
    # Fully labelled: the ordinary CRF negative log-likelihood.
    assert torch.allclose(
        model.loss(out, full, mask), model.crf.neg_log_likelihood(logits, full, mask)
    )
    # Middle word unknown: -log of the summed probability of the paths that agree elsewhere.
    partial = torch.tensor([[1, -100, 0]])
    nll_all = [
        model.crf.neg_log_likelihood(logits, torch.tensor([[1, c, 0]]), mask) for c in range(3)
    ]
    expected = -torch.logsumexp(-torch.stack(nll_all), 0)
    assert torch.allclose(model.loss(out, partial, mask), expected, atol=1e-4)
    # Nothing known: no loss (not an all-O target).
    assert model.loss(out, torch.full((1, 3), -100), mask).item() == 0.0


def test_trimming_changes_no_output_on_the_texts_it_kept():
    """Vocabulary trimming only drops rows no kept text uses: its F1 cost is zero by design."""
    import copy

    from diancang.model.encoder import trim_embeddings
    from diancang.model.features import TokenEncoder

    data = toy_sentences(10)
    full = make_tagger(data, ["PER", "LOC"]).eval()
    probe = TokenEncoder(full.tokenizer, lang="zh", max_length=64)
    kept = probe.used_ids(s.tokens for s in data)
    enc = copy.deepcopy(full.encoder)
    trim_embeddings(enc, kept)
    spec = copy.deepcopy(full.spec)
    spec.kept_ids = kept
    trimmed = Tagger(enc, full.tokenizer, spec).eval()
    trimmed.head.load_state_dict(full.head.state_dict())
    tokens = [s.tokens for s in data]
    with torch.no_grad():
        a, b = full(**full.batch(tokens)).logits, trimmed(**trimmed.batch(tokens)).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("crf", [False, True])
def test_task_incremental_prediction_keeps_to_the_types_asked(crf):
    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types, crf=crf)
    overfit(model, data, epochs=40)
    tokens = [s.tokens for s in data]
    tags, _ = model.predict_tags(tokens)
    only, _ = model.predict_tags(tokens, types=[["LOC"]] * len(tokens))
    assert any(t.endswith("PER") for row in tags for t in row)
    assert all(t == "O" or t.endswith("LOC") for row in only for t in row)
    # a LOC mention the model found is still found when only LOC is asked for
    loc = [(i, s) for i, row in enumerate(tags) for s in bio_spans(row) if s[2] == "LOC"]
    found = {(i, s) for i, row in enumerate(only) for s in bio_spans(row)}
    assert loc and sum(x in found for x in loc) >= 0.9 * len(loc)
    mixed, _ = model.predict_tags(tokens[:2], types=[None, ["PER"]])
    assert mixed[0] == tags[0]
    with pytest.raises(DiancangError, match="unknown types"):
        model.predict_tags(tokens[:1], types=[["ORG"]])


def test_task_incremental_scores_one_pass_per_step():
    from diancang.learn.evaluate import evaluate, score_task_incremental

    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(14)]
    model = make_tagger(data, types)
    overfit(model, data, epochs=30)
    whole = evaluate(model, data, types)
    assert score_task_incremental(model, data, [types]) == {
        t: whole.per_type[t].f1 for t in types
    }  # naming every type is no restriction
    split = score_task_incremental(model, data, [["LOC"], ["PER"]])
    assert set(split) == {"LOC", "PER"} and all(0.0 <= v <= 1.0 for v in split.values())
