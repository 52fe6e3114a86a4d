"""Few-shot machinery: model inversion, the review phase."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from diancang.config import build_config
from diancang.learn.blobs import Blobs
from diancang.learn.runner import StepRunner
from diancang.strategies.base import StepContext
from diancang.strategies.inversion_replay import InversionReplay, invert, sample_tags, word_rows
from diancang.strategies.review import Review, soft_kl
from diancang.stream import Step
from tests.test_tagger import make_tagger, overfit
from tests.toy import toy_sentences

TYPES = ["LOC", "PER"]


def trained():
    data = [s.keep_types(TYPES) for s in toy_sentences(28)]
    model = make_tagger(data, TYPES)
    overfit(model, data)
    return model.eval().requires_grad_(False), data


def test_sampled_tags_are_valid_bio():
    tags = sample_tags(TYPES, 50, 10, (2, 4), 3, seed=0)
    assert tags == sample_tags(TYPES, 50, 10, (2, 4), 3, seed=0)
    for seq in tags:
        assert len(seq) == 10 and any(t.startswith("B-") for t in seq)
        for prev, cur in zip(["O", *seq], seq, strict=False):
            if cur.startswith("I-"):
                assert prev[2:] == cur[2:], seq  # an I- continues a span of its type


def test_inversion_lowers_its_objective_and_reconstructs_old_types():
    model, _ = trained()
    rows, words = word_rows(model)
    assert words and all(len(w) == 1 for w in words)  # Chinese: characters
    assert all(model.token_encoder.pieces(w) == [r] for r, w in zip(rows, words, strict=True))
    table = model.encoder.get_input_embeddings().weight[torch.tensor(rows)]
    tags = sample_tags(TYPES, 16, 8, (2, 3), 1, seed=1)
    targets = torch.tensor([model.label_ids(t) for t in tags])
    params = copy.deepcopy(model.state_dict())
    x, history = invert(model, targets, table, iterations=40, lr=0.1, prior_weight=0.5, seed=0)
    assert x.shape == (16, 8, table.shape[1])
    assert history[-1] < 0.5 * history[0], history
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())  # model frozen

    strategy = InversionReplay(InversionReplay.Params(per_step=40, length=8, iterations=40, lr=0.1))
    sentences = strategy.reconstruct(model, seed=3)
    assert sentences, "no reconstructed sentence was tagged confidently"
    for s in sentences:
        assert set(s.tokens) <= set(words)
        assert s.spans and {sp.label for sp in s.spans} <= set(TYPES)


def test_soft_kl_matches_a_hand_computed_value():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0]])
    q = torch.softmax(teacher / 2, -1)[0]
    expected = float((q * (q / 0.5).log()).sum()) * 4
    assert abs(float(soft_kl(student, teacher, 2.0)) - expected) < 1e-6


def test_review_keeps_old_types_and_leaves_its_teachers_alone():
    previous, data = trained()
    learned = copy.deepcopy(previous)
    learned.add_labels(["ORG"])
    new = [s.keep_types(["ORG"]) for s in toy_sentences(28, seed=5)]
    learned.requires_grad_(True)
    overfit(learned, new, epochs=30)  # plain fine-tuning: forgets the old types
    learned.eval()
    before = copy.deepcopy(learned.state_dict())
    strategy = Review(Review.Params(review_epochs=15, review_lr=2e-3, review_batch=8))
    config = build_config({"train": {"progress": False}})
    runner = StepRunner(config, [strategy])
    step = Step(1, ["ORG"], [*previous.types, "ORG"], new, [], [])
    ctx = StepContext(step, learned, previous, config, [], [], Blobs(Path("unused")))
    ctx.fit = runner.fit  # the review trains through the step runner's loop
    student = strategy.review(ctx, data, new)
    assert all(torch.equal(v, before[k]) for k, v in learned.state_dict().items())

    def kl_old(model):
        batch = model.batch([s.tokens for s in data])
        with torch.no_grad():
            s = model(**batch).logits[batch["word_mask"]][:, :5]
            t = previous(**batch).logits[batch["word_mask"]]
        return float(soft_kl(s, t, 1.0))

    assert kl_old(student) < 0.5 * kl_old(learned)  # the review brought the old types back


# ------------------------------------------------------------------------------- prompt_span
def test_pointer_targets_and_decoding_on_hand_made_labels():
    from diancang.model.prompt_span import decode_pointers, pointer_targets

    # O B-A I-A B-B B-B I-B O   (A = type 0, B = type 1; label ids O=0 B-A=1 I-A=2 B-B=3 I-B=4)
    labels = torch.tensor([[0, 1, 2, 3, 3, 4, 0]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    start, end, _ = pointer_targets(labels, mask, 2)
    assert start[0, :, 0].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert end[0, :, 0].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert start[0, :, 1].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert end[0, :, 1].tolist() == [0, 0, 0, 1, 0, 1, 0]  # a one-word span ends where it starts
    logits = torch.full((1, 7, 5), -9.0)
    logits[..., 0] = 0
    for k in range(2):
        logits[0, :, 1 + 2 * k] = 18 * start[0, :, k] - 9
        logits[0, :, 2 + 2 * k] = 18 * end[0, :, k] - 9
    paths, probs = decode_pointers(logits, mask)
    assert paths == [labels[0].tolist()]
    assert all(p > 0.99 for p in probs[0])


def test_prompt_span_learns_saves_and_adds_a_type_without_parameters(tmp_path):
    import pytest

    from diancang.errors import ConfigError
    from diancang.model.tagger import Tagger
    from tests.test_label_head import TEXTS, grown_text_head

    model, data, batch, before, after = grown_text_head("prompt_span")
    assert torch.allclose(after[..., :5], before, atol=1e-5)
    # Batched over (sentence, type) pairs == one type at a time.
    from diancang.model.prompt_span import prompted_forward

    with torch.no_grad():
        one = prompted_forward(
            model,
            *(batch[k] for k in ("input_ids", "attention_mask")),
            batch["word_index"],
            batch["word_mask"],
            chunk=1,
        ).logits
    assert torch.allclose(one, after, atol=1e-5)

    model.save_pretrained(tmp_path / "m")
    loaded = Tagger.from_pretrained(tmp_path / "m")
    assert loaded.spec.head == "prompt_span" and loaded.types == ["LOC", "PER", "ORG"]
    tokens = [s.tokens for s in data]
    assert loaded.predict_tags(tokens) == model.predict_tags(tokens)
    with pytest.raises(ConfigError, match="CRF"):
        make_tagger(data, TYPES, head="prompt_span", texts=TEXTS, crf=True)


def test_prompt_span_head_reads_the_prompt_vector():
    from diancang.model.prompt_span import PromptSpanHead

    torch.manual_seed(0)
    head = PromptSpanHead(8, 6)
    words = torch.randn(1, 5, 8).expand(2, 5, 8)  # the same words behind two prompts
    out = head(words, torch.randn(2, 6))
    assert out.shape == (2, 5, 2)
    assert not torch.allclose(out[0], out[1])  # the type asked for changes the pointers


def test_weights_of_another_head_shape_give_a_clear_error(tmp_path):
    import pytest
    from safetensors.torch import load_file, save_file

    from diancang.errors import DiancangError
    from diancang.model.tagger import Tagger
    from tests.test_label_head import grown_text_head

    model = grown_text_head("prompt_span")[0]
    model.save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    old = weights["head.pointers.weight"][:, :4].clone()  # the layout of an older head
    weights["head.pointers.weight"] = old
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(DiancangError, match="do not fit") as e:
        Tagger.from_pretrained(tmp_path / "m")
    assert "retrain" in str(e.value) and "model.safetensors" in str(e.value)


def test_strategies_that_read_label_scores_refuse_prompt_span(tmp_path):
    import pytest

    from diancang.errors import ConfigError
    from tests.test_strategy_contract import tiny_run

    with pytest.raises(ConfigError, match="distill reads"):
        tiny_run(tmp_path, ["distill"], model={"head": "prompt_span"})
    tiny_run(tmp_path, ["exemplars"], model={"head": "prompt_span"})  # replay is fine
