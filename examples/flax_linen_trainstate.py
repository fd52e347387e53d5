"""Flax linen + Optax: a `TrainState` checkpointed by a manager, resumed in a new process.

    python examples/flax_linen_trainstate.py RUN_DIR STEPS

Run it twice on one folder: the second run restores the latest checkpoint into a fresh
`TrainState.create(...)` (its `step`, a Python int there, and the jitted run's array
step restore into each other) and trains on to STEPS. `restore_trees` hands back the
restored state: a `TrainState` is immutable, so the restore builds a new one.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen
from flax.training.train_state import TrainState

import trackpoint


class MLP(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.Dense(1)(linen.relu(linen.Dense(16)(x)))


def batch(step: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(1000 + step)  # the data of a step depends on the step only
    x = rng.standard_normal((16, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x.sum(axis=1, keepdims=True))


@jax.jit
def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> TrainState:
    def loss(params: dict[str, object]) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    grads = jax.grad(loss)(state.params)
    new: TrainState = state.apply_gradients(grads=grads)  # type: ignore[no-untyped-call]
    return new


def main(run_dir: str, steps: int) -> None:
    model = MLP()
    params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    tx = optax.adam(1e-2)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)  # type: ignore[no-untyped-call]
    ckpt = trackpoint.Checkpoint(state=state)
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    # Nothing saved yet: the fresh state comes back as it is.
    state = ckpt.restore_trees(manager.latest_checkpoint, "state")
    if manager.latest_checkpoint:
        print(f"resumed from {manager.latest_checkpoint} at step {int(state.step)}")
    while int(state.step) < steps:
        state = train_step(state, *batch(int(state.step)))
        ckpt.state = state  # the checkpoint saves the current (new) arrays
        manager.save()
    x, y = batch(0)
    loss = jnp.mean((state.apply_fn({"params": state.params}, x) - y) ** 2)
    print(f"step {int(state.step)} loss {float(loss):.6f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
