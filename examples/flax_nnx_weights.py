"""Flax NNX: `save_weights` / `load_weights` with the model as the checkpoint's root.

    python examples/flax_nnx_weights.py [PREFIX]

NNX variables are mutable, so the weights are restored in place: the model object, its
`nnx.Param`s and an optimizer holding them are the same objects after `load_weights`.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

import trackpoint


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.dense_1 = nnx.Linear(4, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.dense_2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.dense_2(nnx.relu(self.norm(self.dense_1(x))))


def main(prefix: str) -> None:
    x = jnp.ones((2, 4))
    model = MLP(nnx.Rngs(0))
    trackpoint.save_weights(model, prefix)
    print(f"saved {prefix}: {[name for name, _ in trackpoint.list_variables(prefix)][1:3]} ...")

    other = MLP(nnx.Rngs(1))  # different initial weights
    kernel = other.dense_1.kernel
    trackpoint.load_weights(other, prefix).assert_consumed()
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(model(x)))
    print(f"loaded: same predictions; same Param objects: {other.dense_1.kernel is kernel}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "weights/mlp")
