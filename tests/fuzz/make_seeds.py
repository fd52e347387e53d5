"""Write the seed corpus of `fuzz_bundle.py`: real single-shard bundles, framed.

    .venv/bin/python -m tests.fuzz.make_seeds /tmp/seeds

Seeds: every single-shard checkpoint TensorFlow 2.21 wrote in tests/fixtures/tf-2.21, and
bundles trackpoint writes (every dtype family, strings, a sliced tensor, an object graph).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import tempfile

import ml_dtypes
import numpy as np

import trackpoint
from trackpoint.format import BundleWriter

from .fuzz_bundle import frame

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "tf-2.21")


def _framed(prefix: str) -> bytes | None:
    shards = glob.glob(glob.escape(prefix) + ".data-*")
    if len(shards) > 1:
        return None
    with open(prefix + ".index", "rb") as f:
        index = f.read()
    shard = b""
    if shards:
        with open(shards[0], "rb") as f:
            shard = f.read()
    return frame(index, shard)


def _ours(folder: str) -> list[str]:
    prefixes = []
    mixed = os.path.join(folder, "mixed")
    with BundleWriter(mixed) as writer:
        writer.add("f32", np.arange(15, dtype=np.float32).reshape(3, 5))
        writer.add("bf16", np.ones(7, dtype=ml_dtypes.bfloat16))
        writer.add("i64", np.asarray(7, np.int64))
        writer.add("str", np.array([b"", "é".encode(), b"x" * 300], dtype=object))
        writer.add("bool", np.array([True, False]))
        writer.add_slice("part", (4, 2), ((0, 2), (0, 2)), np.ones((2, 2), np.float32))
        writer.add_slice("part", (4, 2), ((2, 2), (0, 2)), np.zeros((2, 2), np.float32))
    prefixes.append(mixed)
    ckpt = trackpoint.Checkpoint(w=trackpoint.Variable(np.ones((2, 3), np.float32)), n=[1.0])
    prefixes.append(ckpt.write(os.path.join(folder, "object")))
    return prefixes


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    prefixes = sorted(
        p[: -len(".index")] for p in glob.glob(f"{FIXTURES}/**/*.index", recursive=True)
    )
    with tempfile.TemporaryDirectory() as tmp:
        prefixes += _ours(tmp)
        written = 0
        for prefix in prefixes:
            data = _framed(prefix)
            if data is None:
                continue
            name = hashlib.sha1(data).hexdigest()  # noqa: S324 - a file name, not security
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            written += 1
    print(f"{written} seeds in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
