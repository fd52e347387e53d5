"""JAX + Optax: a new process rebuilds the model and optimizer and restores the latest save.

    python examples/jax_checkpoint.py runs/a && python examples/jax_restore.py runs/a

The tree passed to the `Checkpoint` gives the structure, dtypes and shardings. JAX arrays
are immutable, so the restore builds new trees: `restore_trees` hands them back (and
checks that everything matched), so the names below hold the restored values.
"""

from __future__ import annotations

import sys

from jax_checkpoint import data, init_params, loss_fn, tx

import trackpoint


def main(run_dir: str) -> None:
    params = init_params(seed=1)  # any values: the checkpoint's replace them
    ckpt = trackpoint.Checkpoint(params=params, opt_state=tx.init(params))
    params, opt_state = ckpt.restore_trees(
        trackpoint.latest_checkpoint(run_dir), "params", "opt_state"
    )
    x, y = data()
    print(f"restored step {int(opt_state[0].count)}")
    print(f"loss {float(loss_fn(params, x, y)):.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
