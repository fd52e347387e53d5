"""Save a Keras model and its optimizer with a CheckpointManager (the seed's first example).

    KERAS_BACKEND=jax python examples/keras_checkpoint.py [RUN_DIR]    # default: runs/a

Any Keras backend works (jax, torch, tensorflow); the files are TensorFlow's own, with the
keys TF+Keras writes (`model/dense_1/_kernel/...`, `optimizer/_variables/N/...`).
`examples/keras_restore.py` then restores it in a new process.
"""

from __future__ import annotations

import sys
from typing import Any

import keras
import numpy as np

import trackpoint


class Net(keras.Model):  # type: ignore[misc]  # keras ships no type hints
    def __init__(self) -> None:
        super().__init__()
        self.dense_1 = keras.layers.Dense(10, activation="relu")
        self.dense_2 = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.dense_2(self.dense_1(x))


def main(run_dir: str) -> None:
    keras.utils.set_random_seed(0)
    model, optimizer = Net(), keras.optimizers.Adam(0.001)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    for _ in range(5):
        model.train_on_batch(x, y)

    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    path = manager.save()
    print(f"saved {path}")
    print(f"kernel sum {float(np.sum(model.dense_1.kernel.numpy()))!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
