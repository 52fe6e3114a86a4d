"""Run by tests/test_distributed.py under ``accelerate launch`` (one copy per process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_strategy_contract import tiny_run


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    learner, _ = tiny_run(out, ["finetune"], epochs=2)
    matrix = learner.run()
    acc = learner.accelerator
    if acc.is_main_process:
        (out / "run" / "dist.json").write_text(
            json.dumps({"processes": acc.num_processes, "micro": matrix.micro})
        )


if __name__ == "__main__":
    main()
