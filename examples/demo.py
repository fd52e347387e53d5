"""The main demo: write a checkpoint in TensorFlow's format with NumPy only, then inspect it.

Run with `make demo`. Writes into ./demo-run (removed first).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

import trackpoint
from trackpoint.cli import main as cli_main
from trackpoint.format import BundleWriter, write_checkpoint_state

RUN = Path("demo-run")


def build() -> str:
    shutil.rmtree(RUN, ignore_errors=True)
    rng = np.random.default_rng(0)
    prefix = str(RUN / "ckpt-1")
    # Two data shards, as a bigger model would have; TensorFlow reads this folder as it is.
    with BundleWriter(prefix, num_shards=2) as writer:
        writer.add("model/dense/kernel", rng.standard_normal((784, 128), dtype=np.float32))
        writer.add("model/dense/bias", np.zeros(128, np.float32))
        writer.add("model/embedding", rng.standard_normal((1000, 64)).astype(ml_dtypes.bfloat16))
        writer.add("global_step", np.int64(1200))
        writer.add("vocab", np.array(["<pad>", "héllo", "wörld"], dtype=object))
    write_checkpoint_state(RUN, prefix)
    return prefix


def main() -> int:
    prefix = build()
    print(f"wrote {prefix} (TensorFlow's TensorBundle format, 2 data shards)\n")
    latest = trackpoint.latest_checkpoint(RUN)
    reader = trackpoint.load_checkpoint(RUN)
    print(f"latest_checkpoint('{RUN}') = {latest!r}")
    print(f"global_step = {reader.get_tensor('global_step')}")
    print(f"vocab = {reader.get_tensor('vocab').tolist()}\n")
    code = cli_main(["inspect", str(RUN)])
    if code == 0:
        code = cli_main(["verify", str(RUN)])
    return code


if __name__ == "__main__":
    sys.exit(main())
