"""Restore the latest checkpoint of `keras_checkpoint.py` in a new process (the seed's second).

    KERAS_BACKEND=jax python examples/keras_restore.py [RUN_DIR]    # default: runs/a

The model and optimizer are rebuilt from their code. The model is built by a first call;
the optimizer is built after `restore`, as with `tf.train.Checkpoint`: its state is kept
by position (`optimizer/_variables/N`) and restored the moment `build` creates it.
`assert_consumed()` then checks that everything matched.
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
    model, optimizer = Net(), keras.optimizers.Adam(0.001)  # fresh weights, no state
    model(np.zeros((1, 4), np.float32))
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    latest = trackpoint.latest_checkpoint(run_dir)
    status = ckpt.restore(latest)
    optimizer.build(model.trainable_variables)
    status.assert_consumed()
    print(f"restored {latest}: Adam at iteration {int(optimizer.iterations.numpy())}")
    print(f"kernel sum {float(np.sum(model.dense_1.kernel.numpy()))!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
