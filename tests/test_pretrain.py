"""Continued pre-training: masking modes at their rates, raw text readers, the MLM loss falls,
a resumed run trains exactly as an uninterrupted one, and the written encoder loads."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from diancang.config import validate_as
from diancang.errors import ConfigError
from diancang.learn.optim import linear_warmup
from diancang.model.encoder import build_vocab, load_pretrained_encoder, tiny_random_encoder
from diancang.model.features import Encoded
from diancang.pretrain import trainer
from diancang.pretrain.config import PretrainConfig
from diancang.pretrain.corpus import TextSource, find_keywords, read_texts, segment
from diancang.pretrain.masking import Masking, apply, choose, units
from tests.toy import toy_sentences

# 华为手机在北京很好卖: jieba-like words and two entities; one piece per character
WORDS = [(0, 2), (2, 4), (4, 5), (5, 7), (7, 8), (8, 9), (9, 10)]
ENTITIES = [(0, 2), (5, 7)]
ENC = Encoded(input_ids=[2, *range(10, 20), 3], word_index=list(range(1, 11)))


def test_entity_masking_masks_both_entities_whole_at_the_rate():
    unit_list, lead = units(ENC, "entity", WORDS, ENTITIES)
    assert lead == 2 and unit_list[:2] == [[1, 2], [6, 7]]
    for seed in range(5):  # 0.4 x 10 pieces = 4: exactly the two entities, in any order
        assert choose(unit_list, lead, 0.4, random.Random(seed)) == [1, 2, 6, 7]


@pytest.mark.parametrize("rate", [0.15, 0.3, 0.5])
def test_whole_word_masking_keeps_words_whole_within_the_rate(rate):
    unit_list, lead = units(ENC, "whole_word", WORDS)
    assert lead == 0 and len(unit_list) == len(WORDS)
    for seed in range(20):
        chosen = set(choose(unit_list, 0, rate, random.Random(seed)))
        assert 0 < len(chosen) <= max(2, round(rate * 10))
        for a, b in WORDS:  # a word is masked whole or not at all
            assert {p + 1 for p in range(a, b)} <= chosen or not {
                p + 1 for p in range(a, b)
            } & chosen


def test_token_masking_counts_pieces_and_words_span_their_pieces():
    # an English sentence of 3 words with 2, 1 and 3 pieces
    enc = Encoded(input_ids=[2, 10, 11, 12, 13, 14, 15, 3], word_index=[1, 3, 4])
    unit_list, _ = units(enc, "token", [(0, 1), (1, 2), (2, 3)])
    assert unit_list == [[i] for i in range(1, 7)]
    assert len(choose(unit_list, 0, 0.5, random.Random(0))) == 3
    words, _ = units(enc, "whole_word", [(0, 1), (1, 2), (2, 3)])
    assert words == [[1, 2], [3], [4, 5, 6]]


def test_replacement_rates_and_labels():
    rng = random.Random(0)
    chosen = list(range(1, 11))
    ids, labels = apply(ENC.input_ids, chosen, Masking(p_mask=1.0, p_random=0.0), 4, 30, rng)
    assert ids == [2, *[4] * 10, 3] and labels == [-100, *range(10, 20), -100]
    kinds = {"mask": 0, "random": 0, "kept": 0}
    masking = Masking()
    for _ in range(400):
        ids, _ = apply(ENC.input_ids, chosen, masking, 4, 1000, rng, frozenset({0, 2, 3}))
        for i in chosen:
            key = "mask" if ids[i] == 4 else "kept" if ids[i] == ENC.input_ids[i] else "random"
            kinds[key] += 1
    assert abs(kinds["mask"] / 4000 - 0.8) < 0.03 and abs(kinds["kept"] / 4000 - 0.1) < 0.03


def test_keywords_and_words_map_onto_tokens(tmp_path):
    tokens = list("华为手机在北京很好卖")
    assert find_keywords(tokens, ["北京", "华为", "华为手机", "上海"]) == [(0, 4), (5, 7)]
    assert all(b > a for a, b in segment(tokens, "zh"))
    assert segment(["New", "York"], "en") == [(0, 1), (1, 2)]
    path = tmp_path / "t.json"
    rows = [{"sentence": "华为手机在北京很好卖", "keywords": "北京,华为"}, {"id": 3}, "not json"]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n{bad\n")
    texts = read_texts([TextSource(path=path, format="jsonl")], "zh")
    assert len(texts) == 1 and texts[0].entities == [(0, 2), (5, 7)]
    with pytest.raises(ConfigError, match="text file not found"):
        read_texts([TextSource(path=tmp_path / "missing.txt")], "zh")


def _tiny_encoder_dir(tmp_path):
    sentences = toy_sentences(60, seed=1)
    vocab = build_vocab(s.tokens for s in sentences)
    vocab.update({c: len(vocab) + i for i, c in enumerate("鑫龘")})  # rows the texts never use
    enc, tok = tiny_random_encoder(vocab, hidden=32, layers=2, heads=2, max_length=64, seed=0)
    enc.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(str(tmp_path / "enc"))
    (tmp_path / "texts.txt").write_text("\n".join("".join(s.tokens) for s in sentences) + "\n")
    return tmp_path / "enc", tmp_path / "texts.txt"


def _config(tmp_path, out, **extra) -> PretrainConfig:
    enc, texts = _tiny_encoder_dir(tmp_path)
    raw = {
        "encoder": str(enc),
        "texts": [{"path": str(texts)}],
        "output_dir": str(tmp_path / out),
        "heldout": 10,
        "batch_size": 8,
        "lr": 1e-3,
        "head_lr": 3e-3,
        "head_warmup": 5,
        "progress": False,
        **extra,
    }
    return validate_as(PretrainConfig, raw)


def test_the_delayed_schedule_is_zero_then_warms_up_and_decays_to_zero():
    head, enc = linear_warmup(20, 0.25), linear_warmup(20, 0.25, start=4)
    assert [head(i) for i in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert [enc(i) for i in range(4)] == [0.0] * 4
    assert [enc(i) for i in range(4, 10)] == [0.25, 0.5, 0.75, 1.0, 1.0, 11 / 12]
    assert enc(19) == pytest.approx(1 / 12) and head(19) == pytest.approx(1 / 15)


def test_mlm_loss_falls_and_the_encoder_loads_with_its_tokenizer(tmp_path):
    cfg = _config(tmp_path, "out", epochs=8, lr=3e-3, head_lr=1e-2)
    out = trainer.pretrain(cfg)
    report = json.loads((out / "pretrain.json").read_text())
    assert report["heldout_loss_after"] < report["heldout_loss_before"] - 0.3
    assert report["updates"] == 8 * 7 and not (out / "checkpoint").exists()
    original, tok0 = load_pretrained_encoder(str(tmp_path / "enc"))
    encoder, tok = load_pretrained_encoder(str(out))
    assert tok.get_vocab() == tok0.get_vocab()
    text = "".join(toy_sentences(1, seed=1)[0].tokens)
    assert tok.decode(tok.encode(text, add_special_tokens=False)).replace(" ", "") == text
    new, old = encoder.get_input_embeddings().weight, original.get_input_embeddings().weight
    assert new.shape == old.shape  # the full vocabulary again
    unused = [tok0.get_vocab()[c] for c in "鑫龘"]
    assert torch.equal(new[unused], old[unused])  # rows the texts never use are untouched
    used = tok0.get_vocab()["北"]
    assert not torch.equal(new[used], old[used])
    assert "bias_rows" in load_file(str(out / "mlm_head.safetensors"))


def test_a_resumed_run_trains_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = trainer.pretrain(
        _config(tmp_path, "whole", max_updates=12, save_every=4, average="ema", epochs=3)
    )
    calls = {"n": 0}
    real = trainer.mlm_loss

    def dies_at_the_tenth(*args):
        calls["n"] += 1
        if calls["n"] == 10 + 1:  # +1: the held-out evaluation's batch
            raise KeyboardInterrupt
        return real(*args)

    cfg = _config(tmp_path, "resumed", max_updates=12, save_every=4, average="ema", epochs=3)
    monkeypatch.setattr(trainer, "mlm_loss", dies_at_the_tenth)
    with pytest.raises(KeyboardInterrupt):
        trainer.pretrain(cfg)
    assert json.loads((cfg.output_dir / "checkpoint" / "progress.json").read_text())["update"] == 8
    monkeypatch.setattr(trainer, "mlm_loss", real)
    with pytest.raises(ConfigError, match="different pretraining config"):
        trainer.pretrain(cfg.model_copy(update={"lr": 5e-4}))
    resumed = trainer.pretrain(cfg)
    a = load_file(str(whole / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_adapt_runs_mlm_each_step_and_distils_from_the_second(tmp_path):
    from tests.test_strategy_contract import tiny_run

    params = {"adapt": {"updates": 30, "batch_size": 8, "lr": 3e-3, "head_lr": 1e-2,
                        "masking": {"mode": "entity"}}}  # fmt: skip
    learner, _ = tiny_run(tmp_path, ["distill", "adapt"], epochs=3, strategy_params=params)
    learner.run()
    state = learner.states["adapt"]
    history = state.history
    assert [h["step"] for h in history] == [0, 1, 2] and all(h["updates"] == 30 for h in history)
    assert history[0]["mlm_loss_last"] < history[0]["mlm_loss_first"]
    assert history[0]["distill_mean"] is None and history[1]["distill_mean"] is not None
    assert (
        state.head
        and (tmp_path / "run" / "checkpoints" / "step-2" / "blobs" / state.head).is_file()
    )
