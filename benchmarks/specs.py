"""Benchmark definitions: a base run config, the strategies compared, and a --quick variant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: ``config`` is a partial run config (YAML-shaped), ``quick`` the overrides
    that make it finish in minutes (fewer epochs, a fixed subsample)."""

    name: str
    description: str
    config: dict[str, Any]
    strategies: list[str] = field(default_factory=lambda: ["finetune", "joint"])
    quick: dict[str, Any] = field(default_factory=dict)
    ceiling: bool = False
    """Run ``joint`` once on all data with every type and score it after each step on the types
    seen by then, instead of retraining it at every step on all data so far (which costs about
    (steps + 1) / 2 times as much)."""


#: The strategies the continual-learning comparison runs (``--compare``) besides a benchmark's
#: own list; ``a+b`` composes strategies in one run.
COMPARED = [
    "distill",
    "relabel_o",
    "cpfd",
    "exemplars",
    "relabel_o+distill+exemplars",
    "cpfd+exemplars",
]

#: Benchmarks read Chinese one character per token, as the corpora are annotated and as every
#: result before ``model.latin_words`` existed was measured (``LEGACY`` below).
TINY = {"encoder": "tiny-random", "bilstm": True, "crf": True, "latin_words": False}
#: e5-small as the benchmarks run it: trimmed vocabulary and its first 6 layers, about twice as
#: fast as all 12 (results/encoder-speed.md) and no worse on joint CLUENER in the quick
#: comparison (results/truncation.md).
E5 = {
    "encoder": "e5-small",
    "max_length": 64,
    "trim_vocab": True,
    "keep_layers": 6,
    "latin_words": False,
}

#: Settings added after results were committed, with the value those results ran under: a page
#: that lacks one ran with this value (``benchmarks.run.committed_runs`` fills it in).
LEGACY: dict[str, Any] = {"model": {"latin_words": False}}


def stated(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every ``LEGACY`` setting it leaves out set to today's default, as a run
    of it reads them: the config a page records, so that a page lacking one is a legacy page."""
    from diancang.config import RunConfig

    now: dict[str, Any] = {}
    for section, keys in LEGACY.items():
        fields = RunConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        now[section] = {k: fields[k].default for k in keys}
    return merge(now, config)


#: lr 2e-4 beat 5e-5 by 5 macro-F1 points on quick joint CLUENER (results/truncation.md and
#: results/joint-cluener-quick-keep6*.md); 2 epochs a step keep a full run within an hour.
TRAIN_PRETRAINED = {"epochs": 2, "batch_size": 32, "lr": 2e-4, "head_lr": 1e-3}


def cluener_e5(fg: int, pg: int) -> Benchmark:
    """CLUENER with e5-small under FG-``fg``-PG-``pg``."""
    steps = 1 + (10 - fg) // pg
    return Benchmark(
        f"cluener-fg{fg}pg{pg}",
        f"CLUENER, 10 types, FG-{fg}-PG-{pg} ({steps} steps), e5-small",
        {
            "data": {"preset": "cluener2020"},
            "stream": {"fg": fg, "pg": pg},
            "model": E5,
            "train": TRAIN_PRETRAINED,
        },
        quick={"data": {"max_train": 3000, "max_test": 600}, "train": {"epochs": 1}},
        ceiling=True,
    )


BENCHMARKS = {
    b.name: b
    for b in [
        Benchmark(
            "cluener-fg2pg2-tiny",
            "CLUENER, 10 types, FG-2-PG-2 (5 steps), small random BERT + BiLSTM-CRF: the "
            "protocol's smoke benchmark (no pretrained encoder)",
            {
                "data": {"preset": "cluener2020"},
                "stream": {"fg": 2, "pg": 2},
                "model": TINY,
                "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "head_lr": 2e-3},
            },
            quick={"data": {"max_train": 3000}, "train": {"epochs": 1}},
        ),
        cluener_e5(fg=2, pg=2),
        cluener_e5(fg=1, pg=1),
        Benchmark(
            "conll03-fg1pg1",
            "CoNLL-2003, FG-1-PG-1 (4 steps), minilm-l6, scored like the CFNER papers "
            "(micro and macro F1 averaged over steps)",
            {
                "data": {"preset": "conll2003"},
                "stream": {"fg": 1, "pg": 1},
                "model": {"encoder": "minilm-l6", "max_length": 96, "trim_vocab": True},
                "train": TRAIN_PRETRAINED,
            },
            quick={"data": {"max_train": 3000, "max_test": 800}, "train": {"epochs": 1}},
            ceiling=True,
        ),
        Benchmark(
            "weibo-fg2pg2",
            "Weibo NER (2nd version), 8 types (names and nominal mentions), FG-2-PG-2 "
            "(4 steps), e5-small: noisy social-media posts",
            {
                "data": {"preset": "weibo_ner"},
                "stream": {"fg": 2, "pg": 2},
                # posts run longer than CLUENER's sentences (up to 175 characters)
                "model": {**E5, "max_length": 192},
                "train": TRAIN_PRETRAINED,
            },
            # a smoke of the pipeline only: 1 epoch (42 updates) leaves every F1 at 0.0
            quick={"train": {"epochs": 1}},
            ceiling=True,
        ),
        Benchmark(
            "joint-cluener",
            "Plain joint training of e5-small on all of CLUENER (one step, 10 types), dev F1 "
            "after every epoch: the ceiling for every continual method",
            {
                "data": {"preset": "cluener2020"},
                "stream": {"fg": 10, "pg": 1},
                "model": {**E5, "crf": True},
                "train": {**TRAIN_PRETRAINED, "epochs": 5, "eval_each_epoch": True},
            },
            strategies=["joint"],
            quick={
                "data": {"max_train": 3000, "max_dev": 500, "max_test": 600},
                "train": {"epochs": 2},
            },
        ),
    ]
}


#: One-line Chinese descriptions of the CLUENER types, read by the label-semantic and
#: prompt-span heads (``types:`` in a run config).
CLUENER_TYPES = {
    "address": "地址",
    "book": "书名",
    "company": "公司",
    "game": "游戏",
    "government": "政府部门",
    "movie": "电影",
    "name": "人名",
    "organization": "团体组织",
    "position": "职位",
    "scene": "景点",
}

#: cluener-fewshot (benchmarks/fewshot.py): the CLUENER e5 setting with a base step of 4 types;
#: the later steps' K (``stream.shots``) and head are set per run. Same data, model and
#: training as cluener-fg2pg2, so the joint ceiling model is shared with it.
FEWSHOT: dict[str, Any] = {
    "data": {"preset": "cluener2020"},
    "stream": {"fg": 4, "pg": 2},
    "model": E5,
    "train": TRAIN_PRETRAINED,
    "types": CLUENER_TYPES,
}
#: Training of the few-shot steps (a handful of sentences: more epochs, smaller batches).
FEWSHOT_TRAIN = {"epochs": 10, "batch_size": 8}
#: The best method on converged cluener-fg2pg2 (benchmarks/results/cluener-fg2pg2-converged.md),
#: with its parameters: the product default (the demo's strategies).
BEST = "cpfd+exemplars"
BEST_PARAMS: dict[str, Any] = {"exemplars": {"per_type": 30}}
#: Arm -> (strategies, head, overrides of FEWSHOT_TRAIN for this arm).
FEWSHOT_ARMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "finetune": ("finetune", "linear", {}),
    "distill": ("distill", "linear", {}),
    # The best of the fixed-budget comparison when the few-shot benchmark ran.
    "best": ("cpfd", "linear", {}),
    "synthetic_replay": ("distill+synthetic_replay", "linear", {}),
    "inversion_replay": ("distill+inversion_replay", "linear", {}),
    "review": ("distill+review", "linear", {}),
    "label_semantic": ("distill", "label_semantic", {}),
    "prompt_span": ("finetune", "prompt_span", {}),
    # The strategies comparison's best with the best few-shot replay.
    "cpfd+synthetic_replay": ("cpfd+synthetic_replay", "linear", {}),
    # The encoder at 1/20 of the base step's learning rate in the few-shot steps: does a
    # slower encoder keep the old types (the arms above train it at 2e-4)?
    "distill-lr1e-5": ("distill", "linear", {"lr": 1e-5}),
    "synthetic_replay-lr1e-5": ("distill+synthetic_replay", "linear", {"lr": 1e-5}),
    # ... and with the head ten times faster, can the new types still be learned?
    "distill-lr1e-5-head1e-2": ("distill", "linear", {"lr": 1e-5, "head_lr": 1e-2}),
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``extra`` wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
