"""Save a PyTorch model and its optimizer with a CheckpointManager (the seed's first example).

    python examples/torch_checkpoint.py [RUN_DIR]    # default: runs/a

`examples/torch_restore.py` then restores it in a new process.
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
    torch.manual_seed(0)
    model, optimizer = build()
    for _ in range(20):
        x = torch.randn(32, 4)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    path = manager.save()
    print(f"saved {path}")
    print(f"weight sum {model.get_parameter('0.weight').sum().item()!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
