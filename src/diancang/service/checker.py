"""The upload checker: uploads are parsed in a worker process, so a large one never stalls the
service's event loop, and that worker never outlives the service.

The service shuts the pool down at the end of its lifespan; a server that is killed, or an app
whose lifespan never ends cleanly, would leave the worker (and the ``spawn`` context's resource
tracker it holds open) running under init. :func:`die_with_parent`, the worker's initializer,
ends it as soon as its parent is gone, whatever way the parent ended.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor


def new_checker() -> ProcessPoolExecutor:
    """A one-worker ``spawn`` pool whose worker exits when the process that made it does."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
    )


def die_with_parent() -> None:
    """In a worker: watch the parent process from a daemon thread and exit when it is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child: nothing to follow
        return

    def watch() -> None:
        parent.join()  # returns when the parent's sentinel closes: it has exited
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
