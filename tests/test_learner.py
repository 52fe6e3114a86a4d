"""The learner: forgetting shows under finetune, joint keeps old types, a killed run resumes."""

from __future__ import annotations

import json

import pytest

from diancang.errors import ConfigError
from tests.test_strategy_contract import tiny_run


def test_joint_beats_finetune_on_old_types(tmp_path):
    ft, _ = tiny_run(tmp_path / "ft", ["finetune"], epochs=20)
    jt, _ = tiny_run(tmp_path / "jt", ["joint"], epochs=20)
    m_ft, m_jt = ft.run(), jt.run()
    assert m_ft.per_type[0]["LOC"] > 0.5  # step 0 learned something: forgetting is measurable
    # Step 0 is identical training; afterwards finetune forgets LOC, joint does not.
    assert m_ft.per_type[0] == m_jt.per_type[0]
    assert m_jt.per_type[-1]["LOC"] > m_ft.per_type[-1]["LOC"]
    assert m_jt.forgetting() < m_ft.forgetting()


def test_killed_run_resumes_from_last_finished_step(tmp_path, monkeypatch):
    learner, _ = tiny_run(tmp_path, ["finetune"])
    original = type(learner).train_step
    trained: list[int] = []

    def dies_at_step_2(self, ctxs, *rest):
        if ctxs[0].step.index == 2:
            raise KeyboardInterrupt("killed")
        trained.append(ctxs[0].step.index)
        return original(self, ctxs, *rest)

    monkeypatch.setattr(type(learner), "train_step", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        learner.run()
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["finished"] == 2 and trained == [0, 1]

    monkeypatch.setattr(type(learner), "train_step", original)
    again, _ = tiny_run(tmp_path, ["finetune"])
    resumed: list[int] = []
    monkeypatch.setattr(
        type(again),
        "train_step",
        lambda self, ctxs, *rest: resumed.append(ctxs[0].step.index) or original(self, ctxs, *rest),
    )
    matrix = again.run()
    assert resumed == [2]
    assert matrix.n_steps == 3
    before = [{t: v["f1"] for t, v in r["per_type"].items()} for r in progress["results"]]
    assert matrix.per_type[:2] == before
    assert [r["f1"] for r in progress["results"]] == matrix.micro[:2]


def test_resume_refuses_a_different_config(tmp_path):
    learner, _ = tiny_run(tmp_path, ["finetune"], epochs=1)
    learner.run()
    other, _ = tiny_run(tmp_path, ["finetune"], epochs=2)
    with pytest.raises(ConfigError, match="different config") as err:
        other.run()
    # the fix offers a new folder first, and says what --restart would throw away
    assert "output_dir=NEW_FOLDER" in str(err.value) and "are then lost" in str(err.value)
    other.run(restart=True)


def test_eval_each_epoch_records_dev_scores(tmp_path):
    learner, _ = tiny_run(tmp_path, ["joint"], epochs=2)
    learner.config.train.eval_each_epoch = True
    learner.stream.steps[0].dev = learner.stream.steps[0].test[:6]
    learner.run()
    per_epoch = learner.progress.epochs
    assert [e["epoch"] for e in per_epoch[0]] == [1, 2]
    assert all(0.0 <= e["dev_macro"] <= 1.0 for e in per_epoch[0])
    assert per_epoch[1] == []  # no dev data in later steps of this toy stream


def test_distill_forgets_less_than_finetune(tmp_path):
    ft, _ = tiny_run(tmp_path / "ft", ["finetune"], epochs=20)
    kd, _ = tiny_run(tmp_path / "kd", ["distill"], epochs=20)
    m_ft, m_kd = ft.run(), kd.run()
    assert m_kd.per_type[0] == m_ft.per_type[0]  # step 0 has no teacher: identical
    assert m_kd.forgetting() < m_ft.forgetting()
    assert m_kd.final()["macro"] > m_ft.final()["macro"]


def test_resume_accepts_a_run_saved_before_a_setting_existed(tmp_path):
    import json

    from diancang.config import build_config
    from diancang.learn.checkpoint import Progress, load_progress, save_progress

    cfg = build_config({"output_dir": str(tmp_path)}).model_dump(mode="json")
    older = json.loads(json.dumps(cfg))
    del older["types"], older["model"]["head"], older["stream"]["shots"]  # added later, defaults
    save_progress(tmp_path, Progress(config=older))
    assert load_progress(tmp_path, cfg).finished == 0
    older["model"]["crf"] = not older["model"]["crf"]
    save_progress(tmp_path, Progress(config=older))
    with pytest.raises(Exception, match="differs in: model"):
        load_progress(tmp_path, cfg)


def test_first_step_from_shares_a_base_step_without_retraining_it(tmp_path, monkeypatch):
    base, _ = tiny_run(tmp_path / "base", ["finetune"], epochs=3, stream={"max_steps": 1})
    matrix = base.run()
    assert matrix.n_steps == 1  # max_steps: the base step only
    folder = tmp_path / "base" / "run" / "checkpoints" / "step-0"
    arm, _ = tiny_run(
        tmp_path / "arm", ["exemplars"], epochs=3, train_extra={"first_step_from": str(folder)}
    )
    trained: list[int] = []
    original = type(arm).train_step
    monkeypatch.setattr(
        type(arm),
        "train_step",
        lambda self, ctxs, *rest: trained.append(ctxs[0].step.index) or original(self, ctxs, *rest),
    )
    shared = arm.run()
    assert trained == [1, 2]  # step 0 was loaded, not trained
    assert shared.per_type[0] == matrix.per_type[0]
    assert arm.states["exemplars"].memory  # the end-of-step hooks ran on the loaded step


def test_progress_records_peak_memory_and_commit_while_training(tmp_path):
    learner, _ = tiny_run(tmp_path, ["finetune"], epochs=1)
    learner.run()
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert len(progress["peak_mb"]) == len(progress["commits"]) == 3
    assert all(mb > 0 for mb in progress["peak_mb"]) and all(progress["commits"])


def test_matmul_gflops_measures_the_host_and_restores_the_thread_count():
    import torch

    from diancang.provenance import matmul_gflops

    before, rng = torch.get_num_threads(), torch.get_rng_state()
    assert matmul_gflops(1, seconds=0.05, n=64) > 0
    assert torch.get_num_threads() == before
    assert torch.equal(torch.get_rng_state(), rng)  # a run's later draws do not change


def test_patience_stops_a_step_and_keeps_its_best_epoch(tmp_path):
    from diancang.learn.evaluate import evaluate

    learner, stream = tiny_run(
        tmp_path, ["finetune"], epochs=30, dev=True, train_extra={"patience": 2}
    )
    learner.config.stream.max_steps = 1
    learner.run()
    scores = learner.progress.epochs[0]
    macros = [e["dev_macro"] for e in scores]
    best = max(macros)
    assert len(macros) < 30  # stopped early
    # The first best epoch is followed by exactly two that do not beat it, then the step stops.
    assert macros.index(best) == len(macros) - 3
    step = stream.steps[0]
    kept = evaluate(learner.model, step.dev, step.new_types).macro_f1
    assert kept == best  # the best epoch's weights, not the last epoch's


def test_epochs_that_learned_nothing_yet_do_not_use_up_the_patience():
    from diancang.learn.early_stop import Best
    from tests.test_tagger import make_tagger
    from tests.toy import toy_sentences

    model = make_tagger(toy_sentences(7), ["PER"])
    best = Best(patience=2)
    assert [best.update(f1, model) for f1 in (0.0, 0.0, 0.0, 0.3, 0.2)] == [False] * 5
    assert best.update(0.25, model) is True  # two epochs without beating 0.3
    assert best.f1 == 0.3
    stuck = Best(patience=2)
    assert not any(stuck.update(0.0, model) for _ in range(8))  # trains to the maximum


def test_min_updates_gives_a_small_step_more_epochs_and_sentences_count_epochs_run(tmp_path):
    learner, stream = tiny_run(tmp_path, ["finetune"], epochs=1, train_extra={"min_updates": 12})
    learner.run()
    for step, sentences in zip(stream.steps, learner.progress.sentences, strict=True):
        batches = -(-len(step.train) // 8)
        assert sentences == len(step.train) * max(1, -(-12 // batches))
    patient, _ = tiny_run(
        tmp_path / "p", ["finetune"], epochs=50, dev=True, train_extra={"patience": 1}
    )
    patient.run()
    epochs_run = [len(e) for e in patient.progress.epochs]
    assert max(epochs_run) < 50  # stopped early ...
    assert patient.progress.sentences == [  # ... and counted only the epochs it ran
        len(s.train) * n for s, n in zip(patient.stream.steps, epochs_run, strict=True)
    ]
