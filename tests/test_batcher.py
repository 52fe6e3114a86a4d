"""The batcher: texts of waiting requests taken in turn, each request pinned to one version."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from diancang.service.runtime import Batcher, LiveModel


class Stub:
    """Stands in for a Tagger: tags every token ``O`` and records each forward pass."""

    def __init__(self, name: str, passes: list[tuple[str, list[str]]]) -> None:
        self.name = name
        self.passes = passes
        self.spec = SimpleNamespace(max_length=64)

    def eval(self) -> Stub:
        return self

    def tokenize(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        return list(text), [(i, i + 1) for i in range(len(text))]

    def predict_tags(self, sentences, batch_size=32, types=None):
        self.passes.append((self.name, ["".join(s) for s in sentences]))
        time.sleep(0.02)
        return [["O"] * len(s) for s in sentences], [[1.0] * len(s) for s in sentences]


def test_requests_share_passes_in_turn_and_keep_their_version():
    passes: list[tuple[str, list[str]]] = []

    async def scenario():
        live = LiveModel()
        live.swap(1, Stub("v1", passes))
        batcher = Batcher(live, max_batch=2, max_wait_ms=1)
        await batcher.start()
        big = asyncio.create_task(batcher.recognize([f"b{i}" for i in range(6)]))
        await asyncio.sleep(0.005)  # the big request is pinned to version 1 and running
        live.swap(2, Stub("v2", passes))
        small = await batcher.recognize(["s"])
        version, results = await big
        await batcher.stop()
        return small, version, results

    small, version, results = asyncio.run(scenario())
    assert version == 1 and [r["text"] for r in results] == [f"b{i}" for i in range(6)]
    assert small[0] == 2  # it arrived after the swap
    assert all(name == "v1" for name, texts in passes if any(t.startswith("b") for t in texts))
    first_small = next(i for i, (_, texts) in enumerate(passes) if "s" in texts)
    last_big = max(
        i for i, (_, texts) in enumerate(passes) if any(t.startswith("b") for t in texts)
    )
    assert first_small < last_big  # the small request did not wait for all six big texts
