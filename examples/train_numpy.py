"""Train a small NumPy model with Adam, checkpointing with a manager; resume where it stopped.

    python examples/train_numpy.py RUN_DIR STEPS

Run it twice on the same folder and the second run continues from the first one's last
checkpoint: the result equals one uninterrupted run (tests/test_two_process.py checks it).
"""

from __future__ import annotations

import sys

import numpy as np

import trackpoint
from trackpoint.optimizers import Adam


class Linear(trackpoint.Module):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w = trackpoint.Variable(rng.standard_normal((8, 1)).astype(np.float32))
        self.b = trackpoint.Variable(np.zeros(1, np.float32))


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + step)  # the data of a step depends on the step only
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = x @ np.arange(8, dtype=np.float32).reshape(8, 1) + 0.5
    return x, y


def train(run_dir: str, steps: int) -> Linear:
    model, optimizer = Linear(), Adam(0.05)
    step = trackpoint.Variable(np.int64(0), name="step")
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    if manager.restore_or_initialize() is not None:
        print(f"resumed from {manager.latest_checkpoint} at step {int(step.numpy())}")
    while int(step.numpy()) < steps:
        x, y = batch(int(step.numpy()))
        err = x @ model.w.numpy() + model.b.numpy() - y
        grads = [(2 * x.T @ err / len(x), model.w), (2 * err.mean(0), model.b)]
        optimizer.apply_gradients(grads)
        step.assign(step.numpy() + 1)
        manager.save()
    return model


if __name__ == "__main__":
    trained = train(sys.argv[1], int(sys.argv[2]))
    print(np.array2string(trained.w.numpy().ravel(), precision=4))
