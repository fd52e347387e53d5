"""Atheris target: the TensorBundle reader over arbitrary (index, data) bytes.

Run by hand (atheris is not a test dependency), from the repository root:

    .venv/bin/pip install atheris
    python -m tests.fuzz.make_seeds /tmp/fz && cp tests/corpus/bundle/* /tmp/fz/
    PYTHONPATH=. .venv/bin/python -m tests.fuzz.fuzz_bundle /tmp/fz -max_total_time=960 \\
        -timeout=2 -rss_limit_mb=1024
    cp /tmp/fz/* tests/corpus/bundle/   # then commit what is new

Run of 2026-11-28 (atheris 3.0.0, ~5,500 inputs/s): 5,337,327 inputs in 961 s, no
finding; the 66 inputs of its corpus are in tests/corpus/bundle.

An input is a 4-byte little-endian index length, the index bytes, then the bytes of the
one data shard (`make_seeds.py` frames real checkpoints this way). Opening the bundle,
reading every tensor and verifying it may raise only `TrackpointError`s; anything else
(or a hang, or memory beyond the limit) is a finding. The corpus it builds is replayed by
`test_corpus_replay.py` in CI.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys
import tempfile
from typing import Any

import numpy as np

from trackpoint.errors import TrackpointError
from trackpoint.format import BundleReader

_PREFIX: list[str] = []  # made at the first input (in memory when /dev/shm exists)
#: Reading a tensor may allocate what the index declares only after validating it against
#: the file; this bounds what a valid-looking tiny input can make us allocate.
_MAX_READ_BYTES = 64 << 20


def split(data: bytes) -> tuple[bytes, bytes]:
    """An input's (index, data shard) bytes."""
    if len(data) < 4:
        return data, b""
    (length,) = struct.unpack_from("<I", data)
    return data[4 : 4 + length], data[4 + length :]


def frame(index: bytes, shard: bytes) -> bytes:
    """The input for an (index, data shard) pair."""
    return struct.pack("<I", len(index)) + index + shard


def one_input(data: bytes) -> None:
    """Open, read and verify the bundle; only `TrackpointError` may escape."""
    if not _PREFIX:
        # In memory: a fuzz run writes these files millions of times.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - our own dir
        _PREFIX.append(os.path.join(tempfile.mkdtemp(prefix="tp-fuzz-", dir=shm), "ckpt"))
    prefix = _PREFIX[0]
    index, shard = split(data)
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(shard)
    try:
        with BundleReader(prefix) as reader:
            for info in list(reader.infos()):
                if info.size <= _MAX_READ_BYTES:
                    value = reader.get_tensor(info.key)
                    assert isinstance(value, np.ndarray)
            for _key, error in reader.verify():
                assert error is None or isinstance(error, TrackpointError), repr(error)
    except TrackpointError:
        pass


def main() -> None:
    # Imported by name: atheris is installed only for runs by hand, not in CI.
    atheris: Any = importlib.import_module("atheris")

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
