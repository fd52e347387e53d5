"""Reusable staging buffers for batched small values, and the engine's thread runs.

Fresh memory is slow on the machines we run on (a VM hands freed pages back to its host
and touching new ones runs at a tenth of memcpy speed), so the buffers that gather small
values into one write, or receive one large read, are kept and reused from call to call.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from numpy.typing import DTypeLike, NDArray

__all__ = ["ALIGNMENT", "aligned_empty", "borrow_buffer", "run_jobs"]

#: Host buffers the engine hands out start on this boundary: XLA's CPU client adopts
#: host memory aligned to 64 bytes without copying it (`jax.device_put`), and AVX-512
#: copies and checksums run fastest from there.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: DTypeLike) -> NDArray[Any]:
    """An uninitialised C-contiguous array whose data starts on an `ALIGNMENT` boundary.

    Example:
        >>> a = aligned_empty((3, 5), np.float32)
        >>> a.ctypes.data % ALIGNMENT, a.shape, a.flags.c_contiguous
        (0, (3, 5), True)
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:  # references, not bytes: nothing to align for
        return np.empty(shape, dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


_lock = threading.Lock()
_free: list[bytearray] = []
#: Buffers kept for reuse; more than the threads of one save or restore are rarely needed.
_KEEP = 8
#: The smallest buffer made. Batches of small values vary a little in size; buffers made
#: to each exact size would each be a byte too small for the next batch and pile up.
_MIN_BUFFER = 1 << 20


@contextlib.contextmanager
def borrow_buffer(size: int) -> Iterator[memoryview]:
    """Lend a writable buffer of at least `size` bytes (a view of exactly `size`)."""
    with _lock:
        found = next((i for i, b in enumerate(_free) if len(b) >= size), None)
        buffer = _free.pop(found) if found is not None else None
    if buffer is None:
        buffer = bytearray(max(size, _MIN_BUFFER))
    try:
        yield memoryview(buffer)[:size]
    finally:
        with _lock:
            if len(_free) < _KEEP:
                _free.append(buffer)


def run_jobs(jobs: list[Callable[[], None]], threads: int) -> None:
    """Run `jobs` on up to `threads` threads; all finish before the first error is raised.

    Waiting for every job matters: a job still running after an error could write into a
    buffer or file the caller is about to reuse or delete. The pool lives for one call
    (its threads are not daemons and end with it).

    Once the interpreter is exiting (an async save finishing after the main thread
    ended), `concurrent.futures` takes no new work, so the jobs run in this thread.
    """
    if threads <= 1 or len(jobs) <= 1 or _exiting():
        for job in jobs:
            job()
        return
    futures = []
    refused: list[Callable[[], None]] = []
    name = f"trackpoint-jobs-{next(_pools)}"
    pool = ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix=name)
    try:
        for i, job in enumerate(jobs):
            try:
                futures.append(pool.submit(job))
            except RuntimeError as err:  # noqa: PERF203 - raised once, and it ends the loop
                # The interpreter began exiting just now: concurrent.futures refuses new
                # work from the moment it does, a little before the main thread ends.
                if "interpreter shutdown" not in str(err):
                    raise
                refused = jobs[i:]
                break
    except BaseException:
        _shut_down(pool, name, cancel=True)
        raise
    _shut_down(pool, name, cancel=False)
    for future in futures:
        future.result()
    for job in refused:
        job()


def _shut_down(pool: ThreadPoolExecutor, name: str, *, cancel: bool) -> None:
    """Wait for every worker of `pool` (named `name_N`), even through a KeyboardInterrupt.

    A KeyboardInterrupt (Ctrl-C) can land between two joins, or in `submit` between a
    worker's start and the pool recording it; a job left running could then write into
    a file descriptor the caller closes next and a later save reuses. So the workers are
    found by name and joined, jobs not started yet are cancelled once interrupted, and
    the interrupt is raised after.
    """
    interrupt: BaseException | None = None
    while True:
        try:
            pool.shutdown(wait=True, cancel_futures=cancel)
            for thread in threading.enumerate():
                if thread.name.startswith(name + "_"):
                    thread.join()
        except BaseException as err:  # noqa: BLE001, PERF203 - raised below, once the jobs ended
            interrupt = interrupt or err
            cancel = True
        else:
            break
    if interrupt is not None:
        raise interrupt


_pools = itertools.count()


def _exiting() -> bool:
    """Whether the main thread has ended: the interpreter is waiting for its other threads."""
    return not threading.main_thread().is_alive()
