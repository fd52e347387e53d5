"""Save and load a Keras model's weights alone (the seed's third example).

    KERAS_BACKEND=jax python examples/keras_weights.py [PREFIX]    # default: weights/model

`save_weights` makes the model itself the root, as `tf.train.Checkpoint(root=model)` does:
the keys are the model's own paths (`dense_1/_kernel/.ATTRIBUTES/VARIABLE_VALUE`).
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


def build(seed: int) -> Net:
    keras.utils.set_random_seed(seed)
    model = Net()
    model(np.zeros((1, 4), np.float32))
    return model


def main(prefix: str) -> None:
    model = build(0)
    trackpoint.save_weights(model, prefix)
    print(f"saved {prefix}: {[key for key, _ in trackpoint.list_variables(prefix)]}")

    other = build(1)  # different initial weights
    trackpoint.load_weights(other, prefix).assert_consumed()
    pairs = zip(model.weights, other.weights, strict=True)
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
    print(f"loaded into a new model: weights equal = {same}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "weights/model")
