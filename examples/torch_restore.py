"""Restore the latest checkpoint of `torch_checkpoint.py` in a new process (the seed's second).

    python examples/torch_restore.py [RUN_DIR]    # default: runs/a

The model and optimizer are rebuilt from their code; `restore` fills them in place and
creates the optimizer's state, and `assert_consumed()` checks that everything matched.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import trackpoint


def build() -> tuple[nn.Sequential, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, optimizer


def main(run_dir: str) -> None:
    model, optimizer = build()  # fresh weights, empty optimizer state
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    latest = trackpoint.latest_checkpoint(run_dir)
    ckpt.restore(latest).assert_consumed()
    step = int(optimizer.state[model.get_parameter("0.weight")]["step"])
    print(f"restored {latest}: Adam state at step {step}")
    print(f"weight sum {model.get_parameter('0.weight').sum().item()!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
