"""Other processes for `test_concurrency.py`: a lock holder, a paced writer, an exiting saver.

Imports numpy and trackpoint only (and the standard library). Run as
`python _concurrency_child.py MODE FOLDER [ARG]`:

- `hold FOLDER`: save once with a `CheckpointManager` (which takes the folder's writer
  lock), print `holding PID`, then wait until stdin closes; close the manager, print
  `released`.
- `writer FOLDER N`: print `ready`, then save steps 1..N (`max_to_keep=2`, two data
  files, not durable), one per line read from stdin (so the test paces it against its reads),
  printing `saved K` after each.
- `exit FOLDER HOW`: save step 1 (128 MB), then start an async save of step 2 and end
  the process while it is in flight: `exit` calls `sys.exit(0)` at once; `sigterm` and
  `sigkill` hold the background write at its first byte (printing `in-flight`) until the
  test sends the signal; a SIGTERM handler calls `sys.exit(143)`.

`make_state`/`check_state` are shared with the test: every value is a function of the
step, so a restored state shows exactly which step it holds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

import trackpoint
from trackpoint import storage

if TYPE_CHECKING:
    from numpy.typing import NDArray

_DTYPES = (np.float32, np.int64, np.uint8, np.float64)


def values(step: int, i: int, words: int) -> NDArray[Any]:
    """Tensor `i`'s value at `step`: `words` 32-bit words, each depending on both."""
    base = np.arange(words, dtype=np.uint32)
    offset = np.uint32((step * 2654435761 + i * 40503) % (1 << 32))
    # Bit 30 clear: float views are finite, so every copy keeps the bits.
    return ((base * np.uint32(2 * i + 1) + offset) & np.uint32(0x3FFFFFFF)).view(
        _DTYPES[i % len(_DTYPES)]
    )


def make_state(step: int, tensors: int, words: int) -> trackpoint.Checkpoint:
    """A fresh state of `tensors` tensors of `words` words holding `step`'s values."""
    model = trackpoint.Module()
    for i in range(tensors):
        setattr(model, f"t{i:03d}", trackpoint.Variable(values(step, i, words)))
    return trackpoint.Checkpoint(model=model, step=trackpoint.Variable(np.int64(step)))


def set_state(ckpt: trackpoint.Checkpoint, step: int, tensors: int, words: int) -> None:
    """Change every value of `ckpt` to `step`'s, in place."""
    for i in range(tensors):
        getattr(ckpt.model, f"t{i:03d}").assign(values(step, i, words))
    ckpt.step.assign(np.int64(step))


def check_state(ckpt: trackpoint.Checkpoint, tensors: int, words: int) -> int:
    """The step `ckpt` holds, after checking every byte of it is that step's.

    Raises:
        AssertionError: a tensor holds bytes of another step.
    """
    step = int(ckpt.step.numpy())
    for i in range(tensors):
        got = getattr(ckpt.model, f"t{i:03d}").numpy()
        if got.tobytes() != values(step, i, words).tobytes():
            raise AssertionError(f"tensor t{i:03d} does not hold step {step}'s bytes")
    return step


#: The writer's state: 16 tensors of 64 KB (1 MB).
WRITER = (16, 16_384)
#: The exiting saver's state: 4 tensors of 32 MB (128 MB).
EXITING = (4, 8 << 20)


def _hold(folder: str) -> None:
    manager = trackpoint.CheckpointManager(make_state(1, 2, 16), folder, max_to_keep=2)
    manager.save()
    print(f"holding {os.getpid()}", flush=True)
    sys.stdin.read()
    manager.close()
    print("released", flush=True)


def _writer(folder: str, saves: int) -> None:
    tensors, words = WRITER
    ckpt = make_state(0, tensors, words)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2)
    # Not durable: without fsyncs saves outpace the reader, so deletions hit its reads.
    options = trackpoint.CheckpointOptions(num_shards=2, durable=False)
    print("ready", flush=True)
    for step in range(1, saves + 1):
        if not sys.stdin.readline():
            break
        set_state(ckpt, step, tensors, words)
        manager.save(options=options)
        print(f"saved {step}", flush=True)
    manager.close()


class _HoldFirstWrite(storage.Storage):
    """The local file system, except that the first data write waits for `release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._first = threading.Lock()

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        if self._first.acquire(blocking=False):  # never released: only the first write
            print("in-flight", flush=True)
            self.release.wait()
        return super().pwrite(fd, data, offset)


def _exit(folder: str, how: str) -> None:
    tensors, words = EXITING
    ckpt = make_state(1, tensors, words)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2)
    manager.save()
    set_state(ckpt, 2, tensors, words)
    hold = _HoldFirstWrite()

    def on_sigterm(signum: int, frame: object) -> None:
        hold.release.set()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    if how == "exit":
        manager.save(options=trackpoint.CheckpointOptions(enable_async=True))
        saver = ckpt._async_saver
        print(f"returned in-flight={saver is not None and saver.in_flight}", flush=True)
        sys.exit(0)
    with storage.use(hold):
        manager.save(options=trackpoint.CheckpointOptions(enable_async=True))
        while True:
            signal.pause()  # until the test's signal


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    if mode == "hold":
        _hold(folder)
    elif mode == "writer":
        _writer(folder, int(sys.argv[3]))
    elif mode == "exit":
        _exit(folder, sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
