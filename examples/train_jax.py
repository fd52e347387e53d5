"""Train with JAX, checkpointing with a manager; a second run resumes where the first stopped.

    python examples/train_jax.py RUN_DIR STEPS [--nnx]

Without `--nnx`: a pytree of parameters and an Optax state, immutable, kept on the
checkpoint (`ckpt.params = ...`) after each step. With `--nnx`: a Flax NNX model with
dropout and batch norm and an `nnx.Optimizer`, restored in place (RNG state included).
Run it twice on one folder and the result equals one uninterrupted run bit for bit
(tests/adapters/test_jax.py checks it).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import trackpoint

Params = dict[str, jax.Array]

tx = optax.adam(0.05)


def batch(step: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(1000 + step)  # the data of a step depends on the step only
    x = rng.standard_normal((16, 8)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x @ np.arange(8, dtype=np.float32).reshape(8, 1) + 0.5)


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


@jax.jit
def train_step(
    params: Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array
) -> tuple[Params, optax.OptState]:
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def train_pytree(run_dir: str, steps: int) -> None:
    params = {"w": jax.random.normal(jax.random.key(0), (8, 1)), "b": jnp.zeros(1)}
    ckpt = trackpoint.Checkpoint(
        params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32)
    )
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    if manager.restore_or_initialize() is not None:
        print(f"resumed from {manager.latest_checkpoint} at step {int(ckpt.step)}")
    while int(ckpt.step) < steps:
        ckpt.params, ckpt.opt_state = train_step(
            ckpt.params, ckpt.opt_state, *batch(int(ckpt.step))
        )
        ckpt.step = ckpt.step + 1
        manager.save()


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.dense_1 = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.dense_2 = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dense_2(self.dropout(nnx.relu(self.norm(self.dense_1(x)))))


@nnx.jit
def nnx_train_step(model: Net, optimizer: nnx.Optimizer[Net], x: jax.Array, y: jax.Array) -> None:
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)


def train_nnx(run_dir: str, steps: int) -> None:
    model = Net(nnx.Rngs(0))
    optimizer: nnx.Optimizer[Net] = nnx.Optimizer(model, tx, wrt=nnx.Param)
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    if manager.restore_or_initialize() is not None:
        print(f"resumed from {manager.latest_checkpoint} at step {int(optimizer.step[...])}")
    while int(optimizer.step[...]) < steps:
        nnx_train_step(model, optimizer, *batch(int(optimizer.step[...])))
        manager.save()


if __name__ == "__main__":
    train = train_nnx if "--nnx" in sys.argv[3:] else train_pytree
    train(sys.argv[1], int(sys.argv[2]))
