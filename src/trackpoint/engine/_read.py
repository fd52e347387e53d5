"""Parallel restores straight into the destination buffers, checksums verified on the way.

`read_into_many` takes (key, destination array) requests: each large value is read
through the storage seam's handle (`preadv` locally) directly into its destination's
memory and checksummed piece by piece as it arrives; runs of small neighbouring values
are fetched with one large read into a reusable buffer, then checksummed and copied
out. Files and runs are spread over a few threads; crc32c and the reads release the GIL.

Knows byte ranges and arrays, not objects or frameworks.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.format import checksum_error, crc32c, truncated_error

from ._buffers import borrow_buffer, run_jobs
from ._plan import BATCH_BYTES, SMALL_VALUE_BYTES, default_threads

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from numpy.typing import NDArray

    from trackpoint.format import BundleReader, DataRange
    from trackpoint.storage import ReadHandle

__all__ = ["read_into_many"]

#: Small values further apart than this are not fetched by one read (the gap is wasted).
_MAX_GAP = 64 << 10
#: A large value is read and checksummed in pieces of this size (the piece is still in
#: the CPU's cache when its crc is computed).
_PIECE_BYTES = 4 << 20
#: Below this many bytes in total, threads cost more than they save.
_PARALLEL_BYTES = 8 << 20


@dataclass(slots=True)
class _Requests:
    """Every request of one restore as flat columns, one row per tensor.

    About 45 bytes a tensor (the key is the index's own string), where a range object and
    a tuple per tensor cost ~350: a restore of 60,000 small tensors must not add much more
    than 5% of the state. Destinations are viewed as bytes only while being read.
    """

    keys: list[str]
    outs: list[NDArray[Any]]
    sources: array[int]  # index into `handles`
    offsets: array[int]
    sizes: array[int]
    crcs: array[int]  # -1: not verified
    handles: list[ReadHandle]  # each data file once, open through the storage seam
    files: list[str]  # their paths (for errors)
    numbers: dict[int, int]  # id(handle) → its index in `handles`

    def add(self, where: DataRange, out: NDArray[Any]) -> int:
        """Add a request: `where`'s bytes into `out`; return its size."""
        self.keys.append(where.key)
        self.outs.append(out)
        source = self.numbers.get(id(where.handle))
        if source is None:
            source = self.numbers[id(where.handle)] = len(self.handles)
            self.handles.append(where.handle)
            self.files.append(where.file)
        self.sources.append(source)
        self.offsets.append(where.offset)
        self.sizes.append(where.size)
        self.crcs.append(-1 if where.crc is None else where.crc)
        return where.size

    def check(self, row: int, computed: int) -> None:
        expected = self.crcs[row]
        if expected >= 0 and computed != expected:
            raise checksum_error(self.keys[row], self.files[self.sources[row]], expected, computed)


def _bytes(out: NDArray[Any]) -> memoryview:
    return out.reshape(-1).view(np.uint8).data


def read_into_many(
    reader: BundleReader,
    requests: Iterable[tuple[str, NDArray[Any]]],
    *,
    threads: int | None = None,
) -> None:
    """Read each tensor `key` into its array `out`, in parallel, verifying checksums.

    Every request is checked (key, dtype, shape, writeable and C-contiguous, bytes inside
    the file) before any data is read. All reads finish before an error is raised.

    Args:
        reader: The open bundle.
        requests: (key, out) pairs; `out` is filled in place.
        threads: How many reader threads (None: the cores available, up to 8).

    Raises:
        KeyNotFoundError: a key is not in the checkpoint.
        InvalidValueError: an `out` does not fit its tensor.
        IncompleteCheckpointError: a data file is missing.
        CorruptCheckpointError: a tensor fails its checksum or its file is truncated
            (the error names the key and the file).

    Example:
        >>> import tempfile, numpy as np
        >>> from trackpoint.format import BundleReader, BundleWriter
        >>> prefix = tempfile.mkdtemp() + "/ckpt"
        >>> with BundleWriter(prefix) as writer:
        ...     writer.add("a", np.arange(3.0))
        >>> out = np.zeros(3)
        >>> read_into_many(BundleReader(prefix), [("a", out)])
        >>> out
        array([0., 1., 2.])
    """
    table = _Requests([], [], array("i"), array("q"), array("q"), array("q"), [], [], {})
    fallback: list[tuple[str, NDArray[Any]]] = []
    total = 0
    for key, out in requests:
        where = reader.locate(key, out)
        if where is not None:
            total += table.add(where, out)
            continue
        # A partitioned variable: its parts join the pass when each fills a contiguous
        # block of `out` (split along the first axis, as TF's partitioners do).
        parts = reader.locate_parts(key, out)
        if parts is None:
            fallback.append((key, out))
            continue
        for part, place in parts:
            total += table.add(part, place)
    for key, out in fallback:  # big-endian, mapped, or slices it must reassemble
        reader.read_into(key, out)
    sources = np.frombuffer(table.sources, np.int32) if table.keys else np.empty(0, np.int32)
    offsets = np.frombuffer(table.offsets, np.int64) if table.keys else np.empty(0, np.int64)
    order = np.lexsort((offsets, sources))  # by file, then by offset within it
    jobs: list[Callable[[], None]] = []
    bounds = np.flatnonzero(np.diff(sources[order])) + 1
    for rows in np.split(order, bounds) if len(order) else []:
        jobs.extend(_jobs_for_file(table, rows))
    if threads is None:
        threads = default_threads() if total >= _PARALLEL_BYTES else 1
    run_jobs(jobs, threads)


def _jobs_for_file(table: _Requests, rows: NDArray[np.intp]) -> list[Callable[[], None]]:
    """The reads of one file's rows (sorted by offset): large ones alone, small batched."""
    jobs: list[Callable[[], None]] = []
    offsets, sizes = table.offsets, table.sizes
    first = 0  # the batch is rows[first:at]
    batch_start = batch_end = 0
    for at, row in enumerate(rows.tolist()):
        offset, size = offsets[row], sizes[row]
        if size >= SMALL_VALUE_BYTES:
            if at > first:
                jobs.append(_batched(table, rows[first:at], batch_start, batch_end))
            jobs.append(_direct(table, row))
            first = at + 1
            continue
        end = offset + size
        if at > first and (
            offset - batch_end > _MAX_GAP or max(end, batch_end) - batch_start > BATCH_BYTES
        ):
            jobs.append(_batched(table, rows[first:at], batch_start, batch_end))
            first = at
        if at == first:
            batch_start = batch_end = offset
        batch_end = max(batch_end, end)
    if len(rows) > first:
        jobs.append(_batched(table, rows[first:], batch_start, batch_end))
    return jobs


def _direct(table: _Requests, row: int) -> Callable[[], None]:
    """A large value: read straight into its destination, checksummed piece by piece."""

    def run() -> None:
        out = _bytes(table.outs[row])
        source, offset, size = table.sources[row], table.offsets[row], table.sizes[row]
        verify = table.crcs[row] >= 0
        crc = 0
        for start in range(0, size, _PIECE_BYTES):
            piece = out[start : start + _PIECE_BYTES]
            _pread_all(source, piece, offset + start, table, [row])
            if verify:
                crc = crc32c(piece, crc)
        if verify:
            table.check(row, crc)

    return run


def _batched(table: _Requests, rows: NDArray[np.intp], start: int, end: int) -> Callable[[], None]:
    """Small neighbours: one read into a reusable buffer, then checksum and copy out each."""

    def run() -> None:
        with borrow_buffer(end - start) as buffer:
            listed = rows.tolist()
            _pread_all(table.sources[listed[0]], buffer, start, table, listed)
            for row in listed:
                at = table.offsets[row] - start
                data = buffer[at : at + table.sizes[row]]
                if table.crcs[row] >= 0:
                    table.check(row, crc32c(data))  # the bytes just read
                _bytes(table.outs[row])[:] = data

    return run


def _pread_all(
    source: int, view: memoryview, offset: int, table: _Requests, rows: Sequence[int]
) -> None:
    done = table.handles[source].read_into(view, offset)
    if done < len(view):
        # Name the tensor whose bytes are missing (the file shrank after it was opened).
        missing = offset + done
        row = next((r for r in rows if table.offsets[r] + table.sizes[r] > missing), rows[0])
        raise truncated_error(table.keys[row], table.files[table.sources[row]])
