"""The service's upload checker never leaves its worker process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The parent makes the checker, has its worker report its pid, and dies without shutting the
# pool down (as a killed server does).
PARENT = """
import os
from diancang.service.checker import new_checker
pool = new_checker()
print(pool.submit(os.getpid).result(), flush=True)
os._exit(0)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init's reaping counts as ended)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_checker_worker_exits_when_the_service_process_dies(tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    # a file, not a pipe: a worker left behind holds the pipe open and run() would wait on it
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code = subprocess.run(
            [sys.executable, "-c", PARENT], stdout=out, stderr=err, timeout=120, env=env
        ).returncode
    assert code == 0, (tmp_path / "err").read_text()
    worker = int((tmp_path / "out").read_text().strip())
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, 9)  # leave no orphan behind even when failing
    assert not alive, f"the checker's worker {worker} outlived its parent"
