"""A deterministic toy NER corpus (Chinese characters, 4 types) for fast tests."""

from __future__ import annotations

import random

from diancang.data.record import Sentence, Span

NAMES = {
    "PER": ["张三", "李四", "王五", "赵六", "孙悟空"],
    "LOC": ["北京", "上海", "杭州", "成都"],
    "ORG": ["清华大学", "新华社", "腾讯公司"],
    "PRO": ["手机", "电脑", "相机"],
}
TEMPLATES = [
    ("{PER}在{LOC}工作", ["PER", "LOC"]),
    ("{PER}加入了{ORG}", ["PER", "ORG"]),
    ("{ORG}位于{LOC}", ["ORG", "LOC"]),
    ("{PER}买了{PRO}", ["PER", "PRO"]),
    ("{LOC}很美", ["LOC"]),
    ("{ORG}发布了新{PRO}", ["ORG", "PRO"]),
    ("今天天气很好", []),
]


def toy_sentences(n: int = 40, seed: int = 0) -> list[Sentence]:
    """``n`` sentences built from templates; every type appears in several sentences."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        template, types = TEMPLATES[i % len(TEMPLATES)]
        text, spans, rest = "", [], template
        for t in types:
            pre, rest = rest.split("{" + t + "}", 1)
            text += pre
            mention = rng.choice(NAMES[t])
            spans.append(Span(len(text), len(text) + len(mention), t))
            text += mention
        text += rest
        out.append(Sentence(tokens=list(text), spans=spans))
    return out
