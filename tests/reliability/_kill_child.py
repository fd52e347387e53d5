"""A training job that saves checkpoints, to be killed by `test_kill.py`.

Imports numpy and trackpoint only (and the standard library), as a real job would. Run as
`python _kill_child.py MODE FOLDER [ARG]`:

- `loop FOLDER`: resume from the folder's latest checkpoint (`restore_or_initialize`),
  then save steps latest+1, latest+2, ... until killed, with a `CheckpointManager`
  (`max_to_keep=3`, durable by default; 1 to 3 data files, varying with the step and the
  process, so a restarted job may save over what a killed one left with another
  count). Before each save it prints `saving K`, after it
  `saved K SECONDS`; both are flushed, so the parent knows what was in flight when it
  killed the process.
- `fsize FOLDER CASE`: save step 1, then set `RLIMIT_FSIZE` below what the next save
  writes (SIGXFSZ ignored, so the kernel fails the write with EFBIG instead of killing
  the process) and save again; print what that save raised as one JSON line, then lift
  the limit and save once more (`recovered PREFIX`).

The state is about 20 MB: 200 tensors of 100 KB in four dtypes, whose bytes are a
function of the step, so a restored checkpoint shows exactly which step it holds.
The test imports this module for `make_checkpoint` and `read_step`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

import trackpoint
from trackpoint.engine import write_bundle
from trackpoint.format import BundleReader
from trackpoint.storage import LOCK_NAME

if TYPE_CHECKING:
    from numpy.typing import NDArray

TENSORS = 200
#: 32-bit words per tensor: 100 KB each, 20 MB in all.
WORDS = 25_000
MAX_TO_KEEP = 3
NAME = "ckpt"
_DTYPES = (np.float32, np.int32, np.float64, np.int16)
_BASE = np.arange(WORDS, dtype=np.uint32)
#: Bit 30 clear: every float32/float64 view is finite (no NaN whose bits a copy may change).
_MASK = np.uint32(0x3FFFFFFF)


def values(step: int, i: int) -> NDArray[Any]:
    """Tensor `i`'s value at `step`: 100 KB whose every word depends on both."""
    offset = np.uint32((step * 2654435761 + i * 40503) % (1 << 32))
    words = (_BASE * np.uint32(2 * i + 1) + offset) & _MASK
    return words.view(_DTYPES[i % len(_DTYPES)])


def make_checkpoint(step: int, tensors: int = TENSORS) -> trackpoint.Checkpoint:
    """A fresh state holding `step`'s values."""
    model = trackpoint.Module()
    for i in range(tensors):
        setattr(model, f"t{i:03d}", trackpoint.Variable(values(step, i)))
    return trackpoint.Checkpoint(model=model, step=trackpoint.Variable(np.int64(step)))


def set_step(ckpt: trackpoint.Checkpoint, step: int, tensors: int = TENSORS) -> None:
    """Change every value of `ckpt` to `step`'s, in place (as a training step does)."""
    for i in range(tensors):
        getattr(ckpt.model, f"t{i:03d}").assign(values(step, i))
    ckpt.step.assign(np.int64(step))


def check_step(ckpt: trackpoint.Checkpoint, tensors: int = TENSORS) -> int:
    """The step `ckpt` holds, after checking every byte of every tensor is that step's.

    Raises:
        AssertionError: a tensor holds bytes of another step (a mixed or damaged state).
    """
    step = int(ckpt.step.numpy())
    for i in range(tensors):
        got = getattr(ckpt.model, f"t{i:03d}").numpy()
        want = values(step, i)
        if got.dtype != want.dtype or got.tobytes() != want.tobytes():
            raise AssertionError(f"tensor t{i:03d} does not hold step {step}'s bytes")
    return step


def read_step(prefix: str, tensors: int = TENSORS) -> int:
    """Verify every checksum of `prefix`, restore it into a fresh state, return its step.

    Raises:
        AssertionError: a checksum failed, the restore did not match the state, or the
            values are not exactly one step's (and that step's save counter).
    """
    with BundleReader(prefix) as reader:
        bad = [(key, err) for key, err in reader.verify() if err is not None]
    if bad:
        raise AssertionError(f"'{prefix}' fails verify: {bad[:3]}")
    target = make_checkpoint(-1, tensors)
    target.restore(prefix).assert_consumed()
    step = check_step(target, tensors)
    counter = int(target.save_counter.numpy())
    if counter != step:
        raise AssertionError(f"'{prefix}' holds step {step} but save_counter {counter}")
    return step


def _loop(folder: str) -> None:
    ckpt = make_checkpoint(0)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=MAX_TO_KEEP)
    manager.restore_or_initialize()
    step = int(ckpt.save_counter.numpy())
    if int(ckpt.step.numpy()) != step:
        raise AssertionError(f"restored step {int(ckpt.step.numpy())} with save_counter {step}")
    print(f"resumed {step}", flush=True)
    while True:
        step += 1
        set_step(ckpt, step)
        print(f"saving {step}", flush=True)
        start = time.perf_counter()
        path = manager.save(
            options=trackpoint.CheckpointOptions(num_shards=1 + (step + os.getpid()) % 3)
        )
        took = time.perf_counter() - start
        if path != os.path.join(folder, f"{NAME}-{step}"):
            raise AssertionError(f"step {step} was saved as {path}")
        print(f"saved {step} {took:.6f}", flush=True)


def _error_facts(err: BaseException) -> dict[str, Any]:
    cause = err.__cause__ if isinstance(err, trackpoint.AsyncSaveError) else err
    return {
        "type": type(err).__name__,
        "cause_type": type(cause).__name__,
        "trackpoint": isinstance(cause, trackpoint.TrackpointError),
        "oserror": isinstance(cause, OSError),
        "errno": getattr(cause, "errno", None),
        "file": getattr(cause, "file", None),
        "message": str(cause),
    }


def _fsize(folder: str, case: str) -> None:
    """Save step 1, then a save that crosses RLIMIT_FSIZE; print what it raised."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    tensors = 8  # 800 KB of data: below every limit used
    ckpt = make_checkpoint(1, tensors)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=MAX_TO_KEEP)
    manager.save()
    limit = int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    result: dict[str, Any] = {"case": case, "limit": limit}
    try:
        if case == "index":
            # Many tiny values: the data file stays small, the index crosses the limit,
            # and it is not preallocated, so the kernel does a short write, then EFBIG.
            items = [(f"k{i:06d}/" + "x" * 40, np.full(1, i % 100, np.int8)) for i in range(20_000)]
            write_bundle(os.path.join(folder, "bulk"), items)
        else:
            # One more tensor of 4 MB: its data file's preallocation crosses the limit.
            ckpt.model.big = trackpoint.Variable(np.ones(1 << 20, np.float32))
            set_step(ckpt, 2, tensors)
            if case == "async":
                manager.save(options=trackpoint.CheckpointOptions(enable_async=True))
                manager.sync()
            else:
                manager.save(options=trackpoint.CheckpointOptions(num_shards=int(case)))
    except (trackpoint.TrackpointError, OSError) as err:
        result.update(_error_facts(err))
    else:
        result["type"] = None
    result["counter"] = int(ckpt.save_counter.numpy())
    result["latest_after"] = trackpoint.latest_checkpoint(folder)
    result["files_after"] = sorted(n for n in os.listdir(folder) if n != LOCK_NAME)
    print(json.dumps(result), flush=True)
    # The manager stays usable: with the limit lifted, the next save works.
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(f"recovered {manager.save()}", flush=True)
    manager.close()


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    if mode == "loop":
        _loop(folder)
    elif mode == "fsize":
        _fsize(folder, sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
