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
from dataclasses import dataclass
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
    texts: list[str]
    future: asyncio.Future[tuple[int, list[dict[str, Any]]]]


class Batcher:
    """Micro-batching of concurrent requests onto one inference thread."""

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

    async def recognize(self, texts: list[str]) -> tuple[int, list[dict[str, Any]]]:
        """Entities of ``texts`` and the version that tagged them."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        future: asyncio.Future[tuple[int, list[dict[str, Any]]]] = (
            asyncio.get_running_loop().create_future()
        )
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            n = len(batch[0].texts)
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                n += len(item.texts)
            current = self.live.current  # one snapshot for the whole batch
            if current is None:
                for item in batch:
                    item.future.set_exception(DiancangError("no live version to serve"))
                continue
            version, tagger = current
            texts = [t for item in batch for t in item.texts]
            try:
                results = await loop.run_in_executor(self._pool, recognize, tagger, texts)
            except Exception as err:  # a model failure fails this batch's requests, not the loop
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self.batches += 1
            self.requests += len(batch)
            self.texts += len(texts)
            start = 0
            for item in batch:
                part = results[start : start + len(item.texts)]
                start += len(item.texts)
                if not item.future.done():
                    item.future.set_result((version, part))
