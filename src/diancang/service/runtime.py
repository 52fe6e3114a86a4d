"""What the service holds while it runs: the live model and a request batcher.

- :class:`LiveModel` holds ``(version id, tagger)`` as one tuple and swaps it with one assignment,
  so a request reads either the old pair or the new one, never a mix; work already running on the
  old tagger finishes on it.
- :class:`Batcher` gathers concurrent ``recognize`` calls for up to ``max_wait_ms`` (or until
  ``max_batch`` texts) and tags them in one forward pass on one worker thread: throughput grows
  with concurrency and torch's threads are not oversubscribed.

Learning jobs run in :mod:`diancang.service.jobs`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from diancang.errors import DiancangError
from diancang.model.tagger import Tagger
from diancang.predict import recognize


class LiveModel:
    """The version being served; :meth:`swap` replaces it atomically."""

    def __init__(self) -> None:
        self._current: tuple[int, Tagger] | None = None

    @property
    def current(self) -> tuple[int, Tagger] | None:
        """``(version id, tagger)`` or None before the first version."""
        return self._current

    def swap(self, version: int, tagger: Tagger) -> None:
        """Serve ``tagger`` from now on (one reference assignment: atomic for readers)."""
        tagger.eval()
        self._current = (version, tagger)


@dataclass
class _Pending:
    """A request in the batcher: its texts, the version it is pinned to, results so far."""

    texts: list[str]
    future: asyncio.Future[tuple[int, list[dict[str, Any]]]]
    types: list[str] | None = None  # task-incremental: the only types asked for
    version: int = -1
    tagger: Tagger | None = None
    sent: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)


def _cost(text: str, tagger: Tagger) -> int:
    """A text's share of a batch: the windows it takes (about one per ``max_length`` chars)."""
    return max(1, -(-len(text) // max(1, tagger.spec.max_length - 2)))


class Batcher:
    """Fair micro-batching of concurrent requests onto one inference thread.

    A forward pass holds up to ``max_batch`` windows, taken one text at a time from every
    waiting request in turn, so a request of 256 long texts is spread over many passes and a
    small request that arrives meanwhile rides in the next one. Each request is pinned to the
    live version when it is first taken up: all its texts are tagged by that version, even if
    a promotion happens halfway.
    """

    def __init__(self, live: LiveModel, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.live = live
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diancang-infer")
        self.batches = 0  # forward passes run (for the load report)
        self.requests = 0
        self.texts = 0

    async def start(self) -> None:
        """Start the gathering loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and the inference thread."""
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def recognize(
        self, texts: list[str], types: list[str] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Entities of ``texts`` (only of ``types`` when given) and the version that tagged
        them."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        future: asyncio.Future[tuple[int, list[dict[str, Any]]]] = (
            asyncio.get_running_loop().create_future()
        )
        await self._queue.put(_Pending(texts, future, types))
        return await future

    async def _gather(self, active: list[_Pending]) -> None:
        """Take new requests: when idle, wait for one and then up to ``max_wait`` for company;
        otherwise take whatever has arrived."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        if not active:
            active.append(await self._queue.get())
            deadline = loop.time() + self.max_wait
            while sum(len(p.texts) for p in active) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    active.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
        while not self._queue.empty():
            active.append(self._queue.get_nowait())
        current = self.live.current
        for item in active:
            if item.tagger is not None or item.future.done():
                continue
            if current is None:
                item.future.set_exception(DiancangError("no live version to serve"))
            elif item.types and not set(item.types) <= set(current[1].types):
                unknown = sorted(set(item.types) - set(current[1].types))
                item.future.set_exception(
                    DiancangError(f"version {current[0]} has no types {unknown}")
                )
            else:
                item.version, item.tagger = current

    def _pick(self, active: list[_Pending]) -> tuple[Tagger, list[tuple[_Pending, int]]]:
        """One text at a time from each request pinned to the first one's version (the first
        request rotates after every pass, so requests pinned to another version after a
        promotion wait one pass, not for the old version's whole backlog), in turn,
        until the batch holds ``max_batch`` windows (at least one text): that version's
        tagger and the ``(request, text index)`` pairs."""
        tagger = active[0].tagger
        assert tagger is not None
        group = [p for p in active if p.tagger is tagger]
        picks: list[tuple[_Pending, int]] = []
        units = 0
        while units < self.max_batch:
            before = len(picks)
            for item in group:
                if item.sent < len(item.texts) and (units < self.max_batch or not picks):
                    units += _cost(item.texts[item.sent], tagger)
                    picks.append((item, item.sent))
                    item.sent += 1
            if len(picks) == before:
                break
        return tagger, picks

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        active: list[_Pending] = []
        while True:
            await self._gather(active)
            active[:] = [p for p in active if not p.future.done()]
            if not active:
                continue
            tagger, picks = self._pick(active)
            texts = [p.texts[i] for p, i in picks]
            types = [p.types for p, _ in picks]
            task = partial(recognize, tagger, texts, types=types if any(types) else None)
            try:
                results = await loop.run_in_executor(self._pool, task)
            except Exception as err:  # a model failure fails these requests, not the loop
                for p, _ in picks:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self.batches += 1
            self.texts += len(texts)
            for (p, _), result in zip(picks, results, strict=True):
                p.results.append(result)
            for p in {id(p): p for p, _ in picks}.values():
                if len(p.results) == len(p.texts) and not p.future.done():
                    p.future.set_result((p.version, p.results))
                    self.requests += 1
            active.append(active.pop(0))  # the next pass starts from the next request's version
