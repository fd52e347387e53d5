"""JAX + Optax: parameters and optimizer state in a `Checkpoint`, saved by a manager.

    python examples/jax_checkpoint.py [RUN_DIR]

JAX arrays are immutable: each step makes new ones, so the loop keeps them on the
checkpoint (`ckpt.params = ...`) and the manager saves the current values.
`examples/jax_restore.py` picks the run up in a new process.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import trackpoint

Params = dict[str, dict[str, jax.Array]]

tx = optax.adam(1e-2)


def init_params(seed: int) -> Params:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "dense_1": {"kernel": jax.random.normal(k1, (4, 8)), "bias": jnp.zeros(8)},
        "dense_2": {"kernel": jax.random.normal(k2, (8, 1)), "bias": jnp.zeros(1)},
    }


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["dense_1"]["kernel"] + params["dense_1"]["bias"])
    out = hidden @ params["dense_2"]["kernel"] + params["dense_2"]["bias"]
    return jnp.mean((out - y) ** 2)


@jax.jit
def train_step(
    params: Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array
) -> tuple[Params, optax.OptState]:
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def data() -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x.sum(axis=1, keepdims=True))


def main(run_dir: str) -> None:
    params = init_params(seed=0)
    ckpt = trackpoint.Checkpoint(params=params, opt_state=tx.init(params))
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    x, y = data()
    for _ in range(5):
        ckpt.params, ckpt.opt_state = train_step(ckpt.params, ckpt.opt_state, x, y)
        manager.save()
    print(f"saved {manager.latest_checkpoint}")
    print(f"loss {float(loss_fn(ckpt.params, x, y)):.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
