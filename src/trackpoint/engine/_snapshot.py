"""Asynchronous saves: a host snapshot now, the write and the commit in a background thread.

`Checkpoint.save`/`write` and `CheckpointManager.save` with
`CheckpointOptions(enable_async=True)` copy every value into host buffers owned by the
checkpoint's `AsyncSaver` (reused from save to save, since fresh memory is slow), hand the
write to a background thread and return. The rules (reliability doc §0 rule 10, §5.4):

- At most one save in flight: the next save, and `sync()`, first wait for it. The snapshot
  buffers are therefore free again whenever a new snapshot is taken.
- A failure in the background is kept and raised by the next `save`/`sync` as
  `AsyncSaveError` (the original as `__cause__`). "Latest" and deletions move only in the
  commit step, which runs only after the bundle is complete, so the previous checkpoint
  stays the latest.
- The thread is not a daemon: the interpreter waits for it at exit (threading joins
  non-daemon threads before `atexit` runs). A failure nobody collected by then is printed
  to stderr by an `atexit` hook, since no later call can raise it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import AsyncSaveError

from ._buffers import aligned_empty, run_jobs
from ._plan import default_threads

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from numpy.typing import NDArray

__all__ = ["AsyncSaver"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """One background save.

    Attributes:
        prefix: The prefix being written (for messages).
        write: Writes the complete bundle (data and index in place) from the snapshot.
        commit: Makes the checkpoint the latest (state file, deletions); None for `write`.
        on_failure: Undoes the caller's bookkeeping for a save that did not happen (the
            counter bump), run in the background thread before the failure is reported.
        previous: The checkpoint that is the latest while this one is written, or None.
    """

    prefix: str
    write: Callable[[], None]
    commit: Callable[[], None] | None
    on_failure: Callable[[], None] | None
    previous: str | None


class AsyncSaver:
    """One checkpoint's background writer and snapshot buffers.

    Not for saves started from several threads at once (neither are sync saves); the one
    thread it starts per save is the only other party.

    Attributes:
        buffers: The snapshot buffers of the last save, by checkpoint key.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, NDArray[Any]] = {}
        self._thread: threading.Thread | None = None
        self._error: AsyncSaveError | None = None

    # -- the snapshot -----------------------------------------------------------------------

    def snapshot(self, items: Iterable[tuple[str, NDArray[Any]]]) -> list[tuple[str, NDArray[Any]]]:
        """Copy each `(key, array)` into this saver's buffer for the key; return the copies.

        A key whose shape and dtype did not change keeps its buffer from the last save, so
        after the first save a snapshot is a plain memcpy into memory already touched.

        Args:
            items: Each value's key and a host array of it (which may be the live memory).

        Returns:
            `(key, buffer)` pairs in the same order; the buffers are C-contiguous and owned
            by the saver until the next snapshot.
        """
        # A write in flight reads the buffers: never overwrite them under it.
        self.wait()
        kept: dict[str, NDArray[Any]] = {}
        copies: list[tuple[str, NDArray[Any]]] = []
        pairs: list[tuple[NDArray[Any], NDArray[Any]]] = []
        for key, array in items:
            buffer = self.buffers.get(key)
            if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
                buffer = aligned_empty(array.shape, array.dtype)
            pairs.append((buffer, array))
            kept[key] = buffer
            copies.append((key, buffer))
        _copy_all(pairs)
        # Buffers of keys that disappeared are dropped, not kept forever.
        self.buffers = kept
        return copies

    # -- the background write ---------------------------------------------------------------

    def submit(
        self,
        prefix: str,
        write: Callable[[], None],
        *,
        commit: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        previous: str | None = None,
    ) -> None:
        """Start writing `prefix` in a background thread (after any save in flight).

        Args:
            prefix: The prefix the job writes (named by errors).
            write: Writes the bundle from already-snapshotted arrays.
            commit: Run after `write` succeeded: records the checkpoint as the latest.
            on_failure: Run when `write` or `commit` failed, before the error is reported.
            previous: The latest checkpoint while this one is written (named by errors).
        """
        self.wait()
        job = _Job(
            prefix=prefix, write=write, commit=commit, on_failure=on_failure, previous=previous
        )
        # Not a daemon: the interpreter waits for the write at exit.
        thread = threading.Thread(
            target=self._run, args=(job,), name="trackpoint-async-save", daemon=False
        )
        self._thread = thread
        thread.start()

    def _run(self, job: _Job) -> None:
        written = False
        try:
            job.write()
            written = True
            if job.commit is not None:
                job.commit()
        except BaseException as err:  # noqa: BLE001 - kept and re-raised by the next call
            if job.on_failure is not None:
                try:
                    job.on_failure()
                except BaseException as undo_err:  # noqa: BLE001 - the first error matters more
                    err.add_note(f"undoing the save failed too: {undo_err!r}")
            error = _error(job, err, written=written)
            self._error = error
            _UNREPORTED[id(self)] = error

    # -- waiting ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """True while a background save is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wait(self) -> None:
        """Wait for the save in flight, if any, without raising its failure."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def check(self) -> None:
        """Raise the failure of a finished background save, without waiting for one running.

        Raises:
            AsyncSaveError: A background save failed since the last check.
        """
        if self.in_flight:
            return
        error, self._error = self._error, None
        if error is not None:
            _UNREPORTED.pop(id(self), None)
            raise error

    def sync(self) -> None:
        """Wait for the save in flight; raise its failure (or an earlier one not yet raised).

        Raises:
            AsyncSaveError: A background save failed.
        """
        self.wait()
        self.check()


#: Large arrays are copied in pieces of this size, so that both threads stay busy to the
#: end whatever the sizes of the arrays.
_CHUNK_BYTES = 8 << 20
#: Below this much data one thread copies: starting threads would cost more than it saves.
_PARALLEL_BYTES = 32 << 20


def _copy_all(pairs: list[tuple[NDArray[Any], NDArray[Any]]]) -> None:
    """Copy each `(destination, source)` pair, on several threads when there is much data.

    The copy is what an async save blocks on, so it runs at the memory bandwidth of all
    cores: copyto releases the GIL for plain dtypes. Object arrays (strings) copy
    references; the str/bytes they hold are immutable.
    """
    jobs: list[Callable[[], None]] = []
    small: list[tuple[NDArray[Any], NDArray[Any]]] = []
    total = 0
    for dst, src in pairs:
        total += dst.nbytes
        if dst.nbytes < 2 * _CHUNK_BYTES or dst.dtype.kind == "O" or not src.flags.c_contiguous:
            small.append((dst, src))
            continue
        flat_dst, flat_src = dst.reshape(-1), src.reshape(-1)
        step = max(1, _CHUNK_BYTES // dst.itemsize)
        for start in range(0, flat_dst.size, step):
            jobs.append(
                partial(_copy, flat_dst[start : start + step], flat_src[start : start + step])
            )
    # Small arrays go in groups of about one chunk: one job per array would cost more in
    # scheduling than the copy.
    group: list[tuple[NDArray[Any], NDArray[Any]]] = []
    group_bytes = 0
    for dst, src in small:
        group.append((dst, src))
        group_bytes += dst.nbytes
        if group_bytes >= _CHUNK_BYTES:
            jobs.append(partial(_copy_group, group))
            group, group_bytes = [], 0
    if group:
        jobs.append(partial(_copy_group, group))
    run_jobs(jobs, default_threads() if total >= _PARALLEL_BYTES else 1)


def _copy(dst: NDArray[Any], src: NDArray[Any]) -> None:
    np.copyto(dst, src, casting="no")


def _copy_group(pairs: list[tuple[NDArray[Any], NDArray[Any]]]) -> None:
    for dst, src in pairs:
        np.copyto(dst, src, casting="no")


def _name(path: str, beside: str) -> str:
    """`path` as the message names it: its base name when it sits beside `beside`."""
    if os.path.dirname(path) == os.path.dirname(beside):
        return os.path.basename(path)
    return path


def _error(job: _Job, err: BaseException, *, written: bool) -> AsyncSaveError:
    what = f"{type(err).__name__}: {err}"
    if written:
        # The bundle is complete but recording it (state file, deletions) failed.
        message = (
            f"background save of '{job.prefix}' was written but recording it as the latest "
            f"failed ({what}); the checkpoint is complete and can be restored by its prefix"
        )
    elif job.commit is None:
        message = (
            f"background write of '{job.prefix}' failed ({what}); no other checkpoint was changed"
        )
    elif job.previous is not None:
        message = (
            f"background save of '{job.prefix}' failed ({what}); "
            f"'{_name(job.previous, job.prefix)}' is intact and still the latest"
        )
    else:
        message = (
            f"background save of '{job.prefix}' failed ({what}); no checkpoint was recorded "
            "before it, and none is now"
        )
    error = AsyncSaveError(message, prefix=job.prefix, previous=job.previous)
    error.__cause__ = err
    return error


#: Failures no later call has raised yet, by saver id; reported at exit if still here.
_UNREPORTED: dict[int, AsyncSaveError] = {}


@atexit.register
def _report_at_exit() -> None:
    # Non-daemon writer threads have been joined before atexit hooks run, so every
    # background save has finished; one that failed unnoticed must not pass silently.
    for error in list(_UNREPORTED.values()):
        print(f"trackpoint: {error}", file=sys.stderr)  # no caller is left to raise it to
    _UNREPORTED.clear()
