"""JAX + Optax: a new process rebuilds the model and optimizer and restores the latest save.

    python examples/jax_checkpoint.py runs/a && python examples/jax_restore.py runs/a

The tree passed to the `Checkpoint` gives the structure, dtypes and shardings; after
`restore`, `ckpt.params` and `ckpt.opt_state` hold new arrays with the saved values.
"""

from __future__ import annotations

import sys

from jax_checkpoint import data, init_params, loss_fn, tx

import trackpoint


def main(run_dir: str) -> None:
    params = init_params(seed=1)  # any values: the checkpoint's replace them
    ckpt = trackpoint.Checkpoint(params=params, opt_state=tx.init(params))
    ckpt.restore(trackpoint.latest_checkpoint(run_dir)).assert_consumed()
    x, y = data()
    print(f"restored step {int(ckpt.opt_state[0].count)}")
    print(f"loss {float(loss_fn(ckpt.params, x, y)):.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/a")
