"""A tiny multi-task run learns both tasks; the auxiliary heads are saved and continue."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from diancang.data.readers.segmented import cws_tags, read_segmented, word_scores, words_of
from diancang.learn.checkpoint import step_dir
from diancang.model.features import collate
from diancang.strategies.multitask import Heads, MultiTask
from tests.test_strategy_contract import killed_and_resumed, tiny_run
from tests.toy import toy_sentences


def _segmented(path) -> None:
    """Toy sentences segmented into words: each mention a word, the rest in characters."""
    lines = []
    for s in toy_sentences(42, seed=1):
        words, pos = [], 0
        for sp in s.spans:
            words += [*s.tokens[pos : sp.start], "".join(s.tokens[sp.start : sp.end])]
            pos = sp.end
        lines.append("  ".join([*words, *s.tokens[pos:]]))
    path.write_text("\n".join(lines) + "\n", "utf-8")


def _aux_words(heads: Heads, model, sentences, side=None) -> list[list[str]]:
    """The segmentation head's words (reading the side tower's states when ``side``)."""
    rows = [model.encode(s.tokens) for s in sentences]
    batch = collate(rows, None, model.token_encoder.pad_id)
    with torch.no_grad():
        feats = MultiTask._shared(model, batch)
        if side is not None:
            feats = side.states(feats, batch["word_mask"])
        tags = heads.heads["seg"](feats).argmax(-1).tolist()
    names = ["B", "M", "E", "S"]
    return [
        words_of(s.tokens, [names[t] for t in row[: len(s.tokens)]])
        for s, row in zip(sentences, tags, strict=True)
    ]


def _run(tmp_path, epochs: int, **params):
    """A tiny multitask run beside the toy segmentation data; the main task must learn each
    step's type (alone, multitask forgets like finetune)."""
    _segmented(tmp_path / "seg.utf8")
    seg = {"name": "seg", "kind": "cws", "path": str(tmp_path / "seg.utf8"), "format": "segmented"}
    config = {"multitask": {**params, "aux_tasks": [seg]}}
    learner, _ = tiny_run(tmp_path, ["multitask"], epochs=epochs, strategy_params=config)
    assert min(learner.run().after_own_step().values()) > 0.5
    return learner


def test_a_tiny_multitask_run_learns_both_tasks_and_keeps_the_heads(tmp_path):
    learner = _run(tmp_path, 25, sharing="adversarial", adversarial_weight=0.01)
    folder = step_dir(tmp_path / "run", 2)

    def state_of(step: int) -> dict:
        record = json.loads((step_dir(tmp_path / "run", step) / "strategies.json").read_text())
        return next(e["state"] for e in record["strategies"] if e["name"] == "multitask")

    state = state_of(2)
    assert state["labels"] == {"seg": ["B", "M", "E", "S"]}
    history = state["history"]
    assert [h["step"] for h in history] == [0, 1, 2] and history[-1]["sentences"] == {"seg": 42}
    assert 0.0 <= history[-1]["discriminator_accuracy"] <= 1.0 and history[-1]["chance"] == 0.5
    by_epoch = history[-1]["discriminator_balanced_by_epoch"]
    assert len(by_epoch) == 25 and all(0.0 <= b <= 1.0 for b in by_epoch)
    assert history[-1]["discriminator_balanced_last_epoch"] == by_epoch[-1]
    # the heads saved with the version reload and segment the auxiliary data they learned
    heads = Heads(64, {"seg": 4}, MultiTask.Params())
    heads.load_state_dict(load_file(str(folder / "blobs" / state["heads"])))
    sentences = read_segmented(tmp_path / "seg.utf8")
    gold = [words_of(s.tokens, cws_tags(s)) for s in sentences]
    assert word_scores(gold, _aux_words(heads, learner.model, sentences))["f1"] > 0.9
    # each step saved its own heads, trained on from the previous step's
    assert len({state_of(k)["heads"] for k in range(3)}) == 3


def test_the_auxiliary_texts_are_offered_to_vocabulary_trimming(tmp_path):
    _segmented(tmp_path / "seg.utf8")
    task = {"name": "seg", "kind": "cws", "path": str(tmp_path / "seg.utf8"), "format": "segmented"}
    strategy = MultiTask.from_config({"aux_tasks": [task]})
    texts = strategy.texts(seed=1, lang="zh", latin_words=False)
    assert len(texts) == 42 and texts[0] == read_segmented(tmp_path / "seg.utf8")[0].tokens


def test_a_side_tower_starts_silent_and_round_trips(tmp_path):
    from diancang.model.tagger import Tagger
    from tests.test_tagger import make_tagger

    model = make_tagger(toy_sentences(8, seed=1), ["LOC", "PER"]).eval()
    batch = model.batch([s.tokens for s in toy_sentences(4, seed=2)])
    with torch.no_grad():
        before = model(**batch).logits
        model.add_side_tower(16)
        assert torch.equal(model(**batch).logits, before)  # attached, not yet trained
        torch.nn.init.normal_(model.side.proj.weight)
        after = model(**batch).logits
    assert not torch.allclose(after, before)
    model.save_pretrained(tmp_path / "m")
    again = Tagger.from_pretrained(tmp_path / "m")
    assert again.spec.side_tower == 16
    with torch.no_grad():
        assert torch.allclose(again(**batch).logits, after, atol=1e-5)


def test_asymmetric_sharing_serves_the_auxiliary_tower_with_the_tagger(tmp_path):
    learner = _run(tmp_path, 12, sharing="asymmetric", lstm_hidden=16)
    side = learner.model.side
    assert side is not None and learner.model.spec.side_tower == 16
    assert side.proj.weight.abs().sum() > 0  # the main task learned to read the tower
    # the segmentation head reads the side tower, which the served model carries
    record = json.loads((step_dir(tmp_path / "run", 2) / "strategies.json").read_text())
    state = next(e["state"] for e in record["strategies"] if e["name"] == "multitask")
    heads = Heads(64, {"seg": 4}, MultiTask.Params(), side=("seg", 32))
    heads.load_state_dict(load_file(str(step_dir(tmp_path / "run", 2) / "blobs" / state["heads"])))
    sentences = read_segmented(tmp_path / "seg.utf8")
    guess = _aux_words(heads, learner.model, sentences, side)
    gold = [words_of(s.tokens, cws_tags(s)) for s in sentences]
    assert word_scores(gold, guess)["f1"] > 0.8
    from diancang.model.tagger import Tagger

    saved = Tagger.from_pretrained(step_dir(tmp_path / "run", 2))
    assert saved.side is not None
    assert torch.equal(saved.side.proj.weight, side.proj.weight.cpu())


def test_a_killed_adversarial_step_resumes_to_the_same_heads_and_tallies(tmp_path, monkeypatch):
    """The auxiliary heads, the discriminator and its per-epoch tallies go on where the killed
    run stopped: the same weights, heads blob and report as a run never stopped."""
    _segmented(tmp_path / "seg.utf8")
    seg = {"name": "seg", "kind": "cws", "path": str(tmp_path / "seg.utf8"), "format": "segmented"}
    params = {"multitask": {"sharing": "adversarial", "aux_tasks": [seg]}}
    straight, again = killed_and_resumed(tmp_path, ["multitask"], params, monkeypatch)
    assert again is not None
    a, b = straight.states["multitask"], again.states["multitask"]
    assert a.heads == b.heads  # the heads blob's content hash: bit-identical weights
    assert a.history == b.history and len(a.history[-1]["discriminator_balanced_by_epoch"]) == 2
    weights = again.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in straight.model.state_dict().items())
