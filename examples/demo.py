"""The main demo (`make demo`): the seed's workflow end to end, with NumPy only.

1. Build a model and an optimizer, train a few steps, save with a CheckpointManager.
2. Rebuild them from scratch (as a new process would), restore the latest checkpoint,
   and check everything matches: weights, optimizer slots, step counter.
3. Show what is on disk with `trackpoint inspect` and check every checksum with `verify`.
The folder is TensorFlow's format: `tf.train.load_checkpoint('demo-run')` reads it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

import trackpoint
from trackpoint.cli import main as cli_main
from trackpoint.optimizers import Adam

RUN = Path("demo-run")


class Dense(trackpoint.Module):
    def __init__(self, n_in: int, n_out: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.kernel = trackpoint.Variable(rng.standard_normal((n_in, n_out)).astype(np.float32))
        self.bias = trackpoint.Variable(np.zeros(n_out, np.float32))


class Net(trackpoint.Module):
    def __init__(self, seed: int = 0) -> None:
        self.dense_1 = Dense(4, 10, seed)
        self.dense_2 = Dense(10, 2, seed + 1)


def train(net: Net, optimizer: Adam, steps: int) -> None:
    rng = np.random.default_rng(42)
    for _ in range(steps):
        grads = [(rng.standard_normal(v.shape).astype(np.float32), v) for v in net.variables]
        optimizer.apply_gradients(grads)


def main() -> int:
    shutil.rmtree(RUN, ignore_errors=True)
    net, optimizer = Net(), Adam(0.01)
    ckpt = trackpoint.Checkpoint(model=net, optimizer=optimizer)
    manager = trackpoint.CheckpointManager(ckpt, RUN, max_to_keep=3)
    for _ in range(5):
        train(net, optimizer, steps=10)
        manager.save()
    print(f"saved {[p.split('/')[-1] for p in manager.checkpoints]} into {RUN}/\n")

    # A new process would do exactly this: rebuild from code, restore the latest.
    net2, optimizer2 = Net(seed=123), Adam(0.01)
    status = trackpoint.Checkpoint(model=net2, optimizer=optimizer2).restore(
        trackpoint.latest_checkpoint(RUN)
    )
    status.assert_consumed()
    for a, b in zip(net.variables, net2.variables, strict=True):
        same_slot = np.array_equal(
            np.asarray(optimizer.get_slot(a, "m")), np.asarray(optimizer2.get_slot(b, "m"))
        )
        if not (np.array_equal(a.numpy(), b.numpy()) and same_slot):
            print(f"mismatch after restore: {a.name}")
            return 1
    print(
        "restored into freshly built objects: assert_consumed() passed, weights and Adam "
        "slots identical\n"
    )

    code = cli_main(["inspect", str(RUN)])
    if code == 0:
        code = cli_main(["verify", str(RUN)])
    return code


if __name__ == "__main__":
    sys.exit(main())
