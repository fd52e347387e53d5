"""Parallel restores straight into the destination buffers, checksums verified on the way.

`read_into_many` takes (key, destination array) requests: each large value is read with
`preadv` directly into its destination's memory and checksummed piece by piece as it
arrives; runs of small neighbouring values are fetched with one large read into a
reusable buffer, then checksummed and copied out. Files and runs are spread over a few
threads; crc32c and the reads release the GIL.

Knows byte ranges and arrays, not objects or frameworks.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.format import checksum_error, crc32c, truncated_error

from ._buffers import borrow_buffer, run_jobs
from ._plan import BATCH_BYTES, SMALL_VALUE_BYTES, default_threads

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

    from trackpoint.format import BundleReader, DataRange

__all__ = ["read_into_many"]

#: Small values further apart than this are not fetched by one read (the gap is wasted).
_MAX_GAP = 64 << 10
#: A large value is read and checksummed in pieces of this size (the piece is still in
#: the CPU's cache when its crc is computed).
_PIECE_BYTES = 4 << 20
#: Below this many bytes in total, threads cost more than they save.
_PARALLEL_BYTES = 8 << 20
_MAX_IO = 0x7FFFF000

#: A tensor's byte range and its destination array (viewed as bytes only when read: a
#: byte view per tensor, made up front, would cost more than the rest of a request).
_Request = tuple["DataRange", "NDArray[Any]"]


def _bytes(out: NDArray[Any]) -> memoryview:
    return out.reshape(-1).view(np.uint8).data


def read_into_many(
    reader: BundleReader,
    requests: Sequence[tuple[str, NDArray[Any]]],
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
    ranges: dict[int, list[_Request]] = defaultdict(list)
    fallback: list[tuple[str, NDArray[Any]]] = []
    total = 0
    for key, out in requests:
        where = reader.locate(key, out)
        if where is None:
            fallback.append((key, out))
            continue
        ranges[where.fd].append((where, out))
        total += where.size
    for key, out in fallback:  # sliced or big-endian: the reader reassembles them
        reader.read_into(key, out)
    jobs: list[Callable[[], None]] = []
    for file_requests in ranges.values():
        file_requests.sort(key=lambda r: r[0].offset)
        jobs.extend(_jobs_for_file(file_requests))
    if threads is None:
        threads = default_threads() if total >= _PARALLEL_BYTES else 1
    run_jobs(jobs, threads)


def _jobs_for_file(requests: list[_Request]) -> list[Callable[[], None]]:
    jobs: list[Callable[[], None]] = []
    batch: list[_Request] = []
    batch_start = batch_end = 0
    for request in requests:
        where = request[0]
        if where.size >= SMALL_VALUE_BYTES:
            jobs.append(_direct(request))
            continue
        end = where.offset + where.size
        if batch and (
            where.offset - batch_end > _MAX_GAP or max(end, batch_end) - batch_start > BATCH_BYTES
        ):
            jobs.append(_batched(batch, batch_start, batch_end))
            batch = []
        if not batch:
            batch_start = batch_end = where.offset
        batch.append(request)
        batch_end = max(batch_end, end)
    if batch:
        jobs.append(_batched(batch, batch_start, batch_end))
    return jobs


def _direct(request: _Request) -> Callable[[], None]:
    """A large value: read straight into its destination, checksummed piece by piece."""
    where, array = request

    def run() -> None:
        out = _bytes(array)
        crc = 0
        for start in range(0, where.size, _PIECE_BYTES):
            piece = out[start : start + _PIECE_BYTES]
            _pread_all(where.fd, piece, where.offset + start, [request])
            if where.crc is not None:
                crc = crc32c(piece, crc)
        if where.crc is not None and crc != where.crc:
            raise checksum_error(where.key, where.file, where.crc, crc)

    return run


def _batched(batch: list[_Request], start: int, end: int) -> Callable[[], None]:
    """Small neighbours: one read into a reusable buffer, then checksum and copy out each."""

    def run() -> None:
        with borrow_buffer(end - start) as buffer:
            _pread_all(batch[0][0].fd, buffer, start, batch)
            for where, out in batch:
                data = buffer[where.offset - start : where.offset - start + where.size]
                if where.crc is not None:
                    computed = crc32c(data)  # the bytes just read
                    if computed != where.crc:
                        raise checksum_error(where.key, where.file, where.crc, computed)
                _bytes(out)[:] = data

    return run


def _pread_all(fd: int, view: memoryview, offset: int, requests: Sequence[_Request]) -> None:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done : done + _MAX_IO]], offset + done)
        if n == 0:
            # Name the tensor whose bytes are missing (the file shrank after it was opened).
            missing = offset + done
            where = next((r[0] for r in requests if r[0].offset + r[0].size > missing), None)
            where = where or requests[0][0]
            raise truncated_error(where.key, where.file)
        done += n
