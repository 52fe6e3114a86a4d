"""The README's commands: the test command is exactly what CI runs; torch comes CPU-only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_TORCH = "pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu"


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_the_readme_test_command_is_what_ci_runs_and_installs_cpu_torch():
    readme = (ROOT / "README.md").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    tests = next(b for b in _bash_blocks(readme) if b.endswith("&& pytest"))
    assert tests in ci.splitlines()
    assert CPU_TORCH in tests
    quick = _bash_blocks(readme)[0]
    assert quick.endswith("diancang run") and CPU_TORCH.replace(" -q", "") in quick
