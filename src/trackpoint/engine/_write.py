"""Parallel shard writers: values stream from their own buffers into preallocated files.

`write_bundle` is the whole sync save of one TensorBundle: encode each value (a flat view
of its own buffer, no copy), plan the shards (`plan_save`), then a few threads write the
planned byte ranges with `os.pwrite`: a large value in pieces straight from its buffer,
runs of small values gathered into one reusable buffer and written at once. Each thread
computes crc32c on the bytes it writes, in C with the GIL released. The index is written
last, and every file goes in place by rename (temp names until then), so a bundle whose
`.index` exists is complete.

Takes host arrays; knows nothing of objects or frameworks. Safe to call from any thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trackpoint.errors import InvalidValueError
from trackpoint.format import (
    check_key,
    crc32c,
    data_file_name,
    encode_value,
    entry_proto,
    fsync_dir,
    index_file_name,
    write_index,
)

from ._buffers import borrow_buffer, run_jobs
from ._plan import (
    BATCH_BYTES,
    SMALL_VALUE_BYTES,
    WriteItem,
    default_num_shards,
    default_threads,
    plan_save,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import ArrayLike

    from trackpoint._typing import PathLike
    from trackpoint.format import EncodedValue
    from trackpoint.format.protos import tensor_bundle_pb2 as bundle_pb2

__all__ = ["write_bundle"]

#: A large value is checksummed and written in pieces of this size (bounded latency per
#: call, and the crc of a piece runs while the other thread's write holds the file).
_PIECE_BYTES = 16 << 20
# Linux transfers at most 0x7ffff000 bytes per read/write call.
_MAX_IO = 0x7FFFF000


@dataclass(slots=True)
class _Task:
    """One unit of work for a writer thread: a contiguous byte range of one shard."""

    fd: int
    offset: int
    items: list[WriteItem]
    size: int


def write_bundle(
    prefix: PathLike,
    items: Sequence[tuple[str | bytes, ArrayLike]],
    *,
    num_shards: int | None = None,
    threads: int | None = None,
    durable: bool = False,
    last_key: str | bytes | None = None,
) -> str:
    """Write a whole TensorBundle (`prefix.index` + data shards) from host arrays.

    The values must not change until this returns (it reads them from their own
    buffers; an async save passes a snapshot).

    Args:
        prefix: The checkpoint prefix.
        items: (key, value) pairs; values are arrays as `BundleWriter.add` takes them
            (strings: object/'S'/'U' arrays). With one shard the data file holds them in
            this order, byte for byte what `BundleWriter` writes.
        num_shards: How many data files (None: by size, see `default_num_shards`).
        threads: How many writer threads (None: the cores available, up to 8).
        durable: fsync every file, then the folder after the renames.
        last_key: A key whose value goes last into the last shard (TF puts the object
            graph there).

    Returns:
        The prefix written.

    Raises:
        InvalidValueError: a duplicate or reserved key, or bad counts.
        NotTrackableError: a value of a dtype TF checkpoints cannot hold.
        OSError: writing failed; no file of the bundle is left behind.

    Example:
        >>> import tempfile, numpy as np
        >>> from trackpoint.format import BundleReader
        >>> prefix = write_bundle(tempfile.mkdtemp() + "/ckpt", [("w", np.ones(2, np.int8))])
        >>> BundleReader(prefix).get_tensor("w")
        array([1, 1], dtype=int8)
    """
    prefix = os.fspath(prefix)
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise InvalidValueError(f"threads must be at least 1, not {threads}")
    keys: list[bytes] = []
    seen: set[bytes] = set()
    encoded: list[EncodedValue] = []
    for key, value in items:
        raw = check_key(key)
        if raw in seen:
            raise InvalidValueError(f"key {raw.decode('utf-8', 'replace')!r} was added twice")
        seen.add(raw)
        keys.append(raw)
        encoded.append(encode_value(value))
    last = None
    if last_key is not None:
        raw_last = check_key(last_key)
        last = next((i for i, k in enumerate(keys) if k == raw_last), None)
        if last is None:
            raise InvalidValueError(f"last_key {last_key!r} is not one of the items")
    sizes = [len(e.data) for e in encoded]
    if num_shards is None:
        num_shards = default_num_shards(sum(sizes), threads)
    plan = plan_save(sizes, num_shards, last=last)

    token = secrets.token_hex(8)
    finals = [data_file_name(prefix, s, num_shards) for s in range(num_shards)]
    temps = [f"{final}.tempstate{token}" for final in finals]
    index_final = index_file_name(prefix)
    index_temp = f"{index_final}.tempstate{token}"
    folder = os.path.dirname(prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fds: list[int] = []
    crcs: list[int] = [0] * len(encoded)
    try:
        for shard, temp in enumerate(temps):
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            fds.append(fd)
            _preallocate(fd, plan.shard_sizes[shard])
        tasks = _tasks(plan.shards, fds)
        run_jobs(
            [_writer(task, encoded, crcs) for task in tasks],
            threads,
        )
        if durable:
            run_jobs([_fsyncer(fd) for fd in fds], threads)
        entries: dict[bytes, bundle_pb2.BundleEntryProto | bytes] = {}
        for shard_items in plan.shards:
            for item in shard_items:
                done = encoded[item.index]
                crc = crcs[item.index] if done.crc is None else done.crc
                entries[keys[item.index]] = entry_proto(
                    done.dtype, done.shape, item.shard, item.offset, item.size, crc
                ).SerializeToString()
        with open(index_temp, "xb") as out:
            write_index(out, num_shards, entries)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        for fd in fds:
            os.close(fd)
        fds.clear()
        # Data first, index last: a bundle whose .index exists is complete.
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
        os.replace(index_temp, index_final)
        if durable:
            fsync_dir(folder or ".")
    except BaseException:
        for fd in fds:
            os.close(fd)
        for path in [*temps, index_temp]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    return prefix


def _tasks(shards: Sequence[Sequence[WriteItem]], fds: Sequence[int]) -> list[_Task]:
    """Cut each shard into writes: a large value alone, small neighbours together.

    Returned interleaved across shards, so that concurrent writers tend to work on
    different files (writes into one file serialize in the kernel).
    """
    per_shard: list[list[_Task]] = []
    for shard_items, fd in zip(shards, fds, strict=True):
        tasks: list[_Task] = []
        batch: _Task | None = None
        for item in shard_items:
            if item.size >= SMALL_VALUE_BYTES:
                tasks.append(_Task(fd, item.offset, [item], item.size))
                batch = None
                continue
            if batch is None or batch.size + item.size > BATCH_BYTES:
                batch = _Task(fd, item.offset, [], 0)
                tasks.append(batch)
            batch.items.append(item)
            batch.size += item.size
        per_shard.append(tasks)
    interleaved: list[_Task] = []
    for round_ in range(max((len(t) for t in per_shard), default=0)):
        interleaved.extend(tasks[round_] for tasks in per_shard if round_ < len(tasks))
    return interleaved


def _writer(task: _Task, encoded: Sequence[EncodedValue], crcs: list[int]) -> Callable[[], None]:
    def run() -> None:
        if len(task.items) == 1 and task.size >= SMALL_VALUE_BYTES:
            item = task.items[0]
            data = encoded[item.index].data
            crc = 0
            for start in range(0, item.size, _PIECE_BYTES):
                piece = data[start : start + _PIECE_BYTES]
                crc = crc32c(piece, crc)
                _pwrite_all(task.fd, piece, item.offset + start)
            crcs[item.index] = crc
            return
        with borrow_buffer(task.size) as buffer:
            pos = 0
            for item in task.items:
                end = pos + item.size
                written = buffer[pos:end]
                written[:] = encoded[item.index].data
                crcs[item.index] = crc32c(written)  # the bytes written, not the source
                pos = end
            _pwrite_all(task.fd, buffer, task.offset)

    return run


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done : done + _MAX_IO], offset + done)


def _fsyncer(fd: int) -> Callable[[], None]:
    return lambda: os.fsync(fd)


def _preallocate(fd: int, size: int) -> None:
    """Reserve the shard's space up front: fewer block allocations, and ENOSPC before writing."""
    if size <= 0:
        return
    fallocate: Any = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise  # a full disk must fail here; other file systems just cannot
        else:
            return
    os.ftruncate(fd, size)
