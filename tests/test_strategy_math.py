"""Each strategy's own maths on hand-made inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from diancang.data.record import spans_to_bio
from diancang.errors import ConfigError
from diancang.strategies.base import StepBatch, StoredSentence, Target
from diancang.strategies.distill import Distill, old_label_kl
from diancang.strategies.ema import EMA
from diancang.strategies.fgm import FGM
from tests.test_tagger import make_tagger
from tests.toy import toy_sentences


def test_old_label_kl_hand_value():
    teacher = torch.zeros(1, 1, 2)  # p = (1/2, 1/2) over O, B-A
    student = torch.zeros(1, 1, 3)  # q = (1/3, 1/3, 1/3) over O, B-A, I-A
    mask = torch.ones(1, 1, dtype=torch.bool)
    # KL = sum_i 1/2 * (log 1/2 - log 1/3) = log(3/2)
    assert old_label_kl(student, teacher, mask).item() == pytest.approx(math.log(1.5), abs=1e-6)
    # A confident, agreeing student: KL near 0 on the old labels' share.
    student2 = torch.tensor([[[5.0, 5.0, -20.0]]])
    assert old_label_kl(student2, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert old_label_kl(student, teacher, torch.zeros(1, 1, dtype=torch.bool)).item() == 0.0


def test_distill_ignores_o_tokens_in_the_base_loss_only_with_a_teacher():
    labels = torch.tensor([[0, 3, 4, 0, -100]])
    d = Distill()
    batch = SimpleNamespace(inputs={"labels": labels})
    with_teacher = SimpleNamespace(previous=object())
    out = d.targets(with_teacher, batch, Target(labels))
    assert out.labels.tolist() == [[-100, 3, 4, -100, -100]] and out.weights is None
    target = Target(labels)
    assert d.targets(SimpleNamespace(previous=None), batch, target) is target


def test_ema_average_by_hand():
    module = torch.nn.Linear(1, 1, bias=False)
    ema = EMA()
    ctx = SimpleNamespace(model=module, work=ema.begin_step(None))
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema.after_update(ctx)  # starts the average at the current weights
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema.after_update(ctx)  # n = 1: decay = min(0.995, 2 / 11)
    decay = 2 / 11
    weights = ema.final_weights(ctx)
    assert weights["weight"].item() == pytest.approx(1 - decay)
    ctx.work = ema.begin_step(None)  # the next step starts a new average
    assert ema.final_weights(ctx) is None


def test_fgm_adds_an_adversarial_loss_and_restores_the_embeddings():
    data = [s.keep_types(["PER", "LOC"]) for s in toy_sentences(6)]
    model = make_tagger(data, ["PER", "LOC"])
    batch = model.batch([s.tokens for s in data])

    labels = [model.label_ids(spans_to_bio(len(s.tokens), s.spans)) for s in data]
    batch["labels"] = torch.full_like(batch["word_mask"], -100, dtype=torch.long)
    for i, row in enumerate(labels):
        batch["labels"][i, : len(row)] = torch.tensor(row)
    model.eval()  # no dropout: the comparison below is deterministic
    out = model(**batch)
    base = model.loss(out, batch["labels"], batch["word_mask"]).item()
    before = model.encoder.get_input_embeddings().weight.detach().clone()
    step_batch, target = StepBatch(batch, out), Target(batch["labels"])
    terms = FGM(FGM.Params(epsilon=0.5)).loss_terms(
        SimpleNamespace(model=model), step_batch, target
    )
    assert torch.equal(model.encoder.get_input_embeddings().weight, before)
    assert terms["adv"].item() > base  # moving along the gradient raises the loss
    assert terms["adv"].requires_grad

    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        FGM().loss_terms(SimpleNamespace(model=model), step_batch, target)


def test_herding_picks_the_expected_exemplars():
    from diancang.strategies.exemplars import herding

    x = torch.tensor([[0.0], [10.0], [4.0], [6.0], [5.0]])  # mean 5
    # 5 first; then 4 (ties with 6 go to the lower index); then 6 brings the mean back to 5.
    assert herding(x, 3, normalize=False) == [4, 2, 3]
    assert herding(x, 10, normalize=False)[:3] == [4, 2, 3]  # k > n: every row, once
    assert sorted(herding(x, 10, normalize=False)) == [0, 1, 2, 3, 4]
    # Normalised 2-d features: the two rows pointing along the mean direction come first.
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    assert set(herding(y, 2)) == {2, 3}


def test_exemplar_memory_is_bounded_and_replayed(tmp_path):
    from tests.test_strategy_contract import tiny_run

    learner, stream = tiny_run(tmp_path, ["exemplars"], epochs=1)
    learner.strategies[0].params.per_type = 2
    learner.run()
    memory = learner.states["exemplars"].memory
    n_types = len(stream.order)
    assert len(memory) <= 2 * n_types + 5 * len(stream.steps)
    stepped = [(s.tokens, s.spans) for st in stream.steps for s in st.train]
    for m in memory:  # each stored sentence keeps exactly the labels of its own step
        assert (m.sentence().tokens, m.sentence().spans) in stepped
    assert {label for m in memory for _, _, label in m.spans} == set(stream.order)
    # Replay: the memory is appended to the step's data as it was stored.
    strategy = learner.strategies[0]
    ctx = SimpleNamespace(state=strategy.State(memory=memory))
    replayed = strategy.train_data(ctx, [])
    assert [s.tokens for s in replayed] == [m.tokens for m in memory]
    strategy.params.repeat = 3  # the memory joins each epoch three times
    assert len(strategy.train_data(ctx, replayed[:1])) == 1 + 3 * len(memory)


def test_cpfd_pseudo_labels_and_weights_by_hand():
    from diancang.strategies.cpfd import normalized_entropy, pooled_feature_loss, pseudo_label

    # Old labels O, B-A, I-A (C_old = 3); the new type's B-X is label 3.
    teacher = torch.tensor([[[0.0, 10.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 0, 3]])
    thresholds = torch.tensor([0.5, 0.5, 0.5])
    assert normalized_entropy(teacher.softmax(-1))[0, 1].item() == pytest.approx(1.0)
    out, weights = pseudo_label(teacher, labels, thresholds, min_factor=0.5, type_balance=True)
    # Confident O -> teacher's B-A; uncertain O -> ignored; the new label stays.
    assert out.tolist() == [[1, -100, 3]]
    factor = 0.5  # one of the two O tokens is certain
    balance = 0.5 + 1 / (1 + math.exp(-1.0))  # one old token for one new token
    assert weights[0, 0].item() == pytest.approx(factor * balance)
    assert weights[0, 2].item() == pytest.approx(factor)

    h = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert pooled_feature_loss(h, h, mask).item() == 0.0
    assert pooled_feature_loss(h, (h[0], h[1] + 1.0), mask).item() > 0.0


def test_weight_align_rescales_new_rows_to_the_old_norm():
    from diancang.strategies.weight_align import aligned_head

    # Rows: O, B-A, I-A (old, norm 2), B-B, I-B (new, norm 4).
    w = torch.tensor([[9.0, 0.0], [2.0, 0.0], [0.0, 2.0], [4.0, 0.0], [0.0, 4.0]])
    out = aligned_head(w, old_rows=[1, 2], new_rows=[3, 4])
    assert out[3:].norm(dim=1).tolist() == [2.0, 2.0]  # gamma = 2 / 4
    assert torch.equal(out[:3], w[:3])  # O and old rows untouched
    assert torch.equal(aligned_head(w, [], [3, 4]), w)  # the first step: nothing to align


def test_bic_fit_moves_the_new_logits_below_the_old_ones():
    from diancang.strategies.bic import fit_bias

    # Labels: O=0, old=1, new=2. The new column is inflated: every old word reads as new.
    logits = torch.tensor([[0.0, 2.0, 3.0]] * 4 + [[0.0, 0.0, 3.0]] * 4 + [[2.0, 0.0, 1.0]] * 4)
    gold = torch.tensor([1] * 4 + [2] * 4 + [0] * 4)
    assert (logits.argmax(1) == gold).float().mean() < 0.7
    alpha, beta = fit_bias(logits, gold, new_rows=[2], steps=300)
    corrected = logits.clone()
    corrected[:, 2] = alpha * logits[:, 2] + beta
    assert bool((corrected.argmax(1) == gold).all())
    assert 0 < alpha * 3 + beta < 2  # between the O score of new words and the old score


def test_bic_ignore_leaves_the_old_sentences_o_words_out_of_the_fit():
    from diancang.strategies.bic import fit_bias, fit_targets
    from diancang.strategies.words import WordOutputs

    # Labels O, B-A (old), B-B (new). Sentence 0 (an earlier step's) holds an A word and a word
    # of the new type B read as O; sentence 1 (this step's) a B word and a plain O word.
    labels = ["O", "B-A", "B-B"]
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0]])
    words = WordOutputs(
        logits=logits,
        features=torch.zeros(4, 1),
        tags=["B-A", "O", "B-B", "O"],
        where=[(0, 0), (0, 1), (1, 0), (1, 1)],
    )
    assert fit_targets(words, labels, 1, "keep").tolist() == [1, 0, 2, 0]
    assert fit_targets(words, labels, 1, "ignore").tolist() == [1, -100, 2, 0]
    new_score = {}
    for old_o in ("keep", "ignore"):
        alpha, beta = fit_bias(logits, fit_targets(words, labels, 1, old_o), [2], steps=300)
        new_score[old_o] = alpha * 3.0 + beta
    # keep: the same scores read as O and as B, so the fit halves B's lead over O (3 -> ~0.7);
    # ignore: nothing contradicts B, and its words' score rises.
    assert new_score["keep"] < 1.5 < 3.0 < new_score["ignore"]


@pytest.mark.parametrize("old_o", ["keep", "ignore"])
def test_bic_rescales_only_new_rows_from_the_second_step(tmp_path, old_o):
    from diancang.strategies.bic import BiC

    train = toy_sentences(20)
    model = make_tagger(train, ["LOC", "PER"])
    dev = [s.keep_types(["PER"]) for s in toy_sentences(20, seed=3) if "PER" in s.types()]
    step = SimpleNamespace(index=1, new_types=["PER"], dev=dev)
    config = SimpleNamespace(seed=1)
    held = [StoredSentence.of(s.keep_types(["LOC"])) for s in toy_sentences(14, seed=4)]
    bic = BiC(BiC.Params(per_type=3, old_o=old_o))
    first = SimpleNamespace(model=model, step=step, config=config, state=BiC.State())
    assert bic.final_weights(first) is None  # no held-out old types yet
    ctx = SimpleNamespace(model=model, step=step, config=config, state=BiC.State(held_out=held))
    weights = bic.final_weights(ctx)
    w0, w1 = model.head.weight.detach(), weights["head.weight"]
    assert torch.equal(w0[:3], w1[:3])  # O, B-LOC, I-LOC unchanged
    ratio = w1[3:] / w0[3:]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-5)  # one alpha
    assert len(bic.end_step(ctx).held_out) == len(held) + 3


def test_nme_head_rows_are_scaled_class_means():
    from diancang.strategies.exemplars import nme_head

    memory = [s.keep_types(["LOC"]) for s in toy_sentences(14)]
    model = make_tagger(memory, ["LOC", "PER"])
    out = nme_head(model, memory)
    w0, w = model.head.weight.detach(), out["head.weight"]
    assert torch.equal(w[3:], w0[3:])  # PER never in memory: rows kept
    batch = model.batch([s.tokens for s in memory])
    model.eval()
    feats = torch.nn.functional.normalize(model(**batch).features, dim=-1)
    rows = [
        feats[i, j]
        for i, s in enumerate(memory)
        for j, tag in enumerate(spans_to_bio(len(s.tokens), s.spans))
        if tag == "B-LOC"
    ]
    mean = torch.nn.functional.normalize(torch.stack(rows).mean(0), dim=0)
    expected = w0.norm(dim=1).mean() * mean
    assert torch.allclose(w[1], expected, atol=1e-5)
    assert out["head.bias"][1] == 0.0


def test_relabel_by_prototype_on_hand_made_prototypes():
    from diancang.strategies.relabel_o import prototypes, relabel_by_prototype

    # Labels: 0 = O, 1 = B-A (old). Members of A lie around (1, 0); O words around (0, 1).
    feats = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    protos, tau = prototypes(feats, torch.tensor([1, 1, 0, 0]), n_labels=3)
    assert torch.allclose(protos[1], torch.tensor([1.0, 0.0]))
    assert tau[1].item() == pytest.approx(1 / math.sqrt(1.01))  # lowest member cosine
    assert math.isnan(tau[2].item())  # I-A has no member, so no prototype
    words = torch.tensor([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
    # cos((1, .5), A) = 0.894 < tau = 0.995: stays O at threshold 1, relabelled at 0.85.
    assert relabel_by_prototype(words, protos, tau, [1, 2], 1.0).tolist() == [1, -1, -1]
    assert relabel_by_prototype(words, protos, tau, [1, 2], 0.85).tolist() == [1, 1, -1]


def test_relabel_by_neighbour_excludes_the_word_itself():
    from diancang.strategies.relabel_o import relabel_by_neighbour

    support = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    labels = torch.tensor([0, 1, 0])
    words = torch.tensor([[0.0, 1.0], [0.9, 0.1]])
    assert relabel_by_neighbour(words, support, labels, [1], 0.9).tolist() == [-1, 1]
    assert relabel_by_neighbour(words, support, labels, [1], 0.999).tolist() == [-1, -1]
    # Word 0 is support row 0: without itself its nearest is (0.8, 0.6), an O word.
    assert relabel_by_neighbour(support[:1], support, labels, [1], 0.0, True).tolist() == [-1]


def test_words_to_spans_repairs_a_lone_inside_tag():
    from diancang.data.record import Span
    from diancang.strategies.relabel_o import words_to_spans

    names = ["O", "B-A", "I-A", "B-B", "I-B"]
    assert words_to_spans([None, 2, 2, None, 1, 3, 4], names) == [
        Span(1, 3, "A"),
        Span(4, 5, "A"),
        Span(5, 7, "B"),
    ]


def test_supervised_contrastive_hand_value():
    from diancang.strategies.relabel_o import supervised_contrastive

    # Two A words (identical) and one O word orthogonal to them, temperature 1.
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = supervised_contrastive(feats, torch.tensor([1, 1, 0]), 1.0)
    # Each anchor: -log(e^1 / (e^1 + e^0)).
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1)), abs=1e-6)
    ignored = supervised_contrastive(feats, torch.tensor([1, -100, 0]), 1.0)
    assert ignored.item() == 0.0  # the lone A word has no positive


def test_cfner_causal_o_loss_by_hand():
    from diancang.strategies.cfner import causal_o_loss

    # Old labels O, B-A; all labels O, B-A, I-B. Word 0: teacher says O (plain KL);
    # words 1 and 2: teacher says B-A (defined O), each the other's only neighbour.
    teacher = torch.tensor([[0.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    student = torch.zeros(3, 3)  # q = 1/3 everywhere
    feats = torch.eye(3)
    loss = causal_o_loss(student, teacher, feats, k=1)
    kl0 = math.log(1.5)  # KL((1/2, 1/2) || (1/3, 1/3)) on the old labels
    defined = -math.log(1 / 3)  # averaging two equal predictions changes nothing
    assert loss.item() == pytest.approx((kl0 + 2 * defined) / 3, abs=1e-6)
    # A neighbour that is sure of B-A lifts the averaged probability (and lowers the loss).
    student2 = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-9.0, 9.0, -9.0]])
    lone = causal_o_loss(student2[:2], teacher[:2], feats[:2], k=1)
    helped = causal_o_loss(student2, teacher, feats, k=1)
    q_bar = 0.5 * (1 / 3 + torch.softmax(student2[2], 0)[1].item())
    assert helped.item() == pytest.approx(
        (kl0 - math.log(q_bar) - math.log(torch.softmax(student2[2], 0)[1].item() / 2 + 1 / 6)) / 3,
        abs=1e-5,
    )
    assert lone.item() == pytest.approx((kl0 + defined) / 2, abs=1e-6)


def test_synthetic_replay_generates_valid_tagged_sentences(tmp_path):
    from diancang.strategies.synthetic_replay import TokenLM, pseudo_label
    from tests.test_tagger import overfit

    types = ["LOC", "PER"]
    data = [s.keep_types(types) for s in toy_sentences(28)]
    texts = [s.tokens for s in data]
    vocab = ["<pad>", "</s>", "<s>", *sorted({t for s in texts for t in s})]
    torch.manual_seed(0)
    lm = TokenLM(vocab, dim=32, hidden=64)
    first = lm.fit(texts, 1, seed=0)
    last = lm.fit(texts, 40, seed=0)
    assert last < first  # it learns the toy sentences
    lm.save(tmp_path / "lm.safetensors")
    loaded = TokenLM.load(tmp_path / "lm.safetensors")
    samples = loaded.sample(40, 30, seed=1)
    assert samples == loaded.sample(40, 30, seed=1)  # seeded
    assert samples and all(set(s) <= set(vocab[3:]) for s in samples)
    tagger = make_tagger(data, types)
    overfit(tagger, data)
    kept = pseudo_label(tagger, samples, set(types), min_score=0.5)
    assert kept, "no generated sentence was confidently tagged"
    for s in kept:
        assert s.spans and all(0 <= sp.start < sp.end <= len(s.tokens) for sp in s.spans)
        assert {sp.label for sp in s.spans} <= set(types)
