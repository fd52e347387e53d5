"""Parallel shard writers: values stream from their own buffers into preallocated files.

`write_bundle` is the whole sync save of one TensorBundle: check each key and prepare each
value (the array itself, read from its own buffer: no copy), plan the shards
(`plan_save`), then a few threads write the planned byte ranges with `os.pwrite`: a large
value in pieces straight from its buffer, runs of small values gathered into one reusable
buffer and written at once. Each thread computes crc32c on the bytes it writes, in C with
the GIL released. The index is written last, its entries streamed into the table in key
order, and every file goes in place by rename (temp names until then), so a bundle whose
`.index` exists is complete.

A save of many small tensors holds its bookkeeping for every tensor from start to end,
so it is kept to a few dozen bytes per tensor: the caller's keys and arrays as they are,
and the plan, checksums and key order in arrays.

Takes host arrays; knows nothing of objects or frameworks. Safe to call from any thread.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import secrets
from array import array
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from trackpoint import storage
from trackpoint.errors import InsufficientSpaceError, InvalidValueError
from trackpoint.format import (
    check_key,
    crc32c,
    data_file_name,
    existing_files,
    index_file_name,
    prepare_value,
    prepared_bytes,
    prepared_entry,
    prepared_size,
    roll_forward,
    staging_prefix,
    temp_file_name,
    write_sorted_index,
)

from ._buffers import borrow_buffer, run_jobs
from ._plan import (
    BATCH_BYTES,
    SMALL_VALUE_BYTES,
    SavePlan,
    default_num_shards,
    default_threads,
    plan_save,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from numpy.typing import ArrayLike

    from trackpoint._typing import PathLike
    from trackpoint.format import PreparedValue

__all__ = ["write_bundle"]

#: A large value is checksummed and written in pieces of this size (bounded latency per
#: call, and the crc of a piece runs while the other thread's write holds the file).
_PIECE_BYTES = 16 << 20
_T = TypeVar("_T")


@dataclass(slots=True)
class _Task:
    """One unit of work for a writer thread: a contiguous byte range of one shard.

    Its values are `plan.order[start:stop]`, laid out from `offset` of the file `fd`.
    """

    fd: int
    offset: int
    start: int
    stop: int
    size: int


def write_bundle(
    prefix: PathLike,
    items: Iterable[tuple[str | bytes, ArrayLike]],
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
        items: (key, value) pairs, read once (an iterator will do: no list of pairs need
            exist); values are arrays as `BundleWriter.add` takes them (strings:
            object/'S'/'U' arrays). With one shard the data file holds them in this
            order, byte for byte what `BundleWriter` writes.
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
    keys, values = _prepare(items)
    key_order = _key_order(keys)
    last = None
    if last_key is not None:
        wanted = check_key(last_key)
        # Searched from the end: callers put it last.
        last = next((i for i in reversed(range(len(keys))) if _raw(keys[i]) == wanted), None)
        if last is None:
            raise InvalidValueError(f"last_key {last_key!r} is not one of the items")
    sizes = np.fromiter(map(prepared_size, values), dtype=np.int64, count=len(values))
    total = int(sizes.sum())
    if num_shards is None:
        num_shards = default_num_shards(total, threads)
    plan = plan_save(sizes, num_shards, last=last)
    del sizes

    token = secrets.token_hex(8)
    folder = os.path.dirname(prefix)
    store = storage.current()
    try:
        store.makedirs(folder or ".")
    except OSError as err:
        raise storage.save_error(err, "creating the folder", folder or ".") from None
    _check_space(store, folder or ".", total, len(keys))
    job = _Bundle(store, values, keys, key_order, plan, num_shards, threads, durable, token)
    # A prefix that has files already is replaced through a staged copy (format._commit):
    # renaming new files over old ones one by one would pair an old index with new data.
    try:
        roll_forward(prefix, durable=durable, clean=True)
    except OSError as err:
        raise storage.save_error(err, "finishing an earlier save of", prefix) from None
    if not existing_files(prefix):
        job.write(prefix)
        return prefix
    staged = staging_prefix(prefix, token)
    job.write(staged)
    try:
        roll_forward(prefix, durable=durable)
    except OSError as err:
        # The new bundle is complete under the staging prefix; the next reader or writer
        # of the prefix finishes moving it into place.
        raise storage.save_error(
            err,
            "moving the new checkpoint into place at",
            prefix,
            previous="the new checkpoint (complete, staged beside it)",
        ) from None
    return prefix


def _prepare(
    items: Iterable[tuple[str | bytes, ArrayLike]],
) -> tuple[list[str | bytes], list[PreparedValue]]:
    """Check each key and prepare each value; keep nothing of an item but these two.

    The caller's keys and arrays themselves: no copy, and no object per value. A value
    that had to be encoded (a string: the object graph) is held only as its encoding
    once the items are consumed.
    """
    keys: list[str | bytes] = []
    values: list[PreparedValue] = []
    for key, value in items:
        raw = check_key(key)  # refuses reserved and unencodable keys before any I/O
        keys.append(key if isinstance(key, str) else raw)
        values.append(prepare_value(value))
    return _one_kind(keys), values


def _one_kind(keys: list[str | bytes]) -> list[str | bytes]:
    """`keys` all str or all bytes, so that they sort together.

    str keys sort as their UTF-8 bytes do (UTF-8 keeps code point order), so the index's
    byte order needs no bytes copy of each key; only a mix is turned into bytes.
    """
    if len({type(key) for key in keys}) <= 1:
        return keys
    return [_raw(key) for key in keys]


def _raw(key: str | bytes) -> bytes:
    """A key as the index stores it (already checked by `check_key`)."""
    return key.encode("utf-8") if isinstance(key, str) else key


def _key_order(keys: list[str | bytes]) -> array[int]:
    """The indices of `keys` in the index's (bytewise) order; refuses a key given twice."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    for before, after in itertools.pairwise(order):
        if keys[before] == keys[after]:
            raw = check_key(keys[after])
            raise InvalidValueError(f"key {raw.decode('utf-8', 'replace')!r} was added twice")
    return array("q", order)


@dataclass(slots=True)
class _Bundle:
    """One bundle's write: the values, their keys and plan, and where the files go."""

    store: storage.Storage
    values: list[PreparedValue]
    keys: list[str | bytes]
    key_order: array[int]
    plan: SavePlan
    num_shards: int
    threads: int
    durable: bool
    token: str

    def write(self, prefix: str) -> None:
        """Write every file of the bundle at `prefix`, by the commit protocol.

        Each data file: temp name, preallocate, write, fsync (durable), close (its error
        checked), rename. The index likewise, only after every data file is in place: a
        bundle whose `.index` exists is complete. Then the folder is synced (durable).
        On any failure every file this call created is removed.
        """
        store = self.store
        finals = [data_file_name(prefix, s, self.num_shards) for s in range(self.num_shards)]
        temps = [temp_file_name(final, self.token) for final in finals]
        created: list[str] = []  # every path this call made, to remove on failure
        fds: dict[int, int] = {}
        # Each value's crc32c, as its writer thread computed it (4 bytes per value).
        crcs = array("I", [0]) * len(self.values)
        try:
            for shard, temp in enumerate(temps):
                fds[shard] = _do(store.create, "creating", finals[shard], temp)
                created.append(temp)
                _do(
                    store.preallocate,
                    "reserving space for",
                    finals[shard],
                    fds[shard],
                    self.plan.shard_sizes[shard],
                )
            tasks = _tasks(self.plan, [fds[s] for s in range(self.num_shards)])
            paths = {fds[s]: finals[s] for s in fds}
            run_jobs(
                [_writer(store, task, self.plan, self.values, crcs, paths) for task in tasks],
                self.threads,
            )
            if self.durable:
                run_jobs(
                    [partial(_do, store.fsync, "syncing", finals[s], fds[s]) for s in fds],
                    self.threads,
                )
            for shard in sorted(fds):
                fd = fds.pop(shard)
                _do(store.close, "closing", finals[shard], fd)
            for temp, final in zip(temps, finals, strict=True):
                _do(store.replace, "renaming", final, temp, final)
                created.append(final)
            index = self._index_bytes(crcs)
            index_final = index_file_name(prefix)
            # Removed first if anything fails, even the folder's fsync after its rename: a
            # failed save must leave no index (an index marks a complete checkpoint).
            created.insert(0, index_final)
            try:
                store.write_file(index_final, index, durable=self.durable, token=self.token)
            except OSError as err:
                raise storage.save_error(err, "writing", index_final) from None
        except BaseException:
            for fd in fds.values():
                with contextlib.suppress(OSError):
                    store.close(fd)
            for path in created:
                with contextlib.suppress(OSError):
                    store.unlink(path)
            raise

    def _index_bytes(self, crcs: array[int]) -> bytes:
        out = io.BytesIO()
        write_sorted_index(out, self.num_shards, self._entries(crcs))
        return out.getvalue()

    def _entries(self, crcs: array[int]) -> Iterator[tuple[bytes, bytes]]:
        """Each value's index entry, serialized as it is needed, in key order."""
        # Through memoryviews: plain ints, one at a time (numpy scalars are slower to make).
        shards, offsets = self.plan.shard_of.data, self.plan.offsets.data
        for index in self.key_order:
            entry = prepared_entry(self.values[index], shards[index], offsets[index], crcs[index])
            yield _raw(self.keys[index]), entry


def _do(operation: Callable[..., _T], action: str, path: str, *args: Any) -> _T:
    """Run a storage operation; an OSError becomes a `SaveError` naming `path` and the fix."""
    try:
        return operation(*args)
    except OSError as err:
        raise storage.save_error(err, action, path) from None


def _check_space(store: storage.Storage, folder: str, data_bytes: int, count: int) -> None:
    """Refuse at once, with a clear error, a save the disk cannot hold."""
    free = store.free_bytes(folder)
    if free is None:
        return
    # The index holds ~50 bytes per tensor plus its key; 1% and 1 MiB of slack for blocks.
    needed = data_bytes + count * 160 + data_bytes // 100 + (1 << 20)
    if free < needed:
        raise InsufficientSpaceError(
            f"not enough free space in '{folder}' for this checkpoint: it needs about "
            f"{_mib(needed)} and {_mib(free)} are free; free space on that disk or save "
            "elsewhere (nothing was written, the previous checkpoint is intact)",
            file=folder,
            needed=needed,
            available=free,
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _tasks(plan: SavePlan, fds: Sequence[int]) -> list[_Task]:
    """Cut each shard into writes: a large value alone, small neighbours together.

    Returned interleaved across shards, so that concurrent writers tend to work on
    different files (writes into one file serialize in the kernel).
    """
    order, sizes, offsets = plan.order.data, plan.sizes.data, plan.offsets.data
    per_shard: list[list[_Task]] = []
    for shard, fd in enumerate(fds):
        tasks: list[_Task] = []
        batch: _Task | None = None
        for at in range(plan.bounds[shard], plan.bounds[shard + 1]):
            index = order[at]
            size = sizes[index]
            if size >= SMALL_VALUE_BYTES:
                tasks.append(_Task(fd, offsets[index], at, at + 1, size))
                batch = None
                continue
            if batch is None or batch.size + size > BATCH_BYTES:
                batch = _Task(fd, offsets[index], at, at, 0)
                tasks.append(batch)
            batch.stop = at + 1
            batch.size += size
        per_shard.append(tasks)
    interleaved: list[_Task] = []
    for round_ in range(max((len(t) for t in per_shard), default=0)):
        interleaved.extend(tasks[round_] for tasks in per_shard if round_ < len(tasks))
    return interleaved


def _writer(
    store: storage.Storage,
    task: _Task,
    plan: SavePlan,
    values: Sequence[PreparedValue],
    crcs: array[int],
    paths: dict[int, str],
) -> Callable[[], None]:
    def write(data: memoryview, offset: int) -> None:
        try:
            store.write_all(task.fd, data, offset)
        except OSError as err:
            raise storage.save_error(err, "writing", paths[task.fd]) from None

    def run() -> None:
        order = plan.order.data
        if task.stop - task.start == 1 and task.size >= SMALL_VALUE_BYTES:
            index = order[task.start]
            # The byte view is made here, for the write only: kept for the whole save,
            # one per value would cost ~500 bytes each.
            data = prepared_bytes(values[index])
            crc = 0
            for start in range(0, task.size, _PIECE_BYTES):
                piece = data[start : start + _PIECE_BYTES]
                crc = crc32c(piece, crc)
                write(piece, task.offset + start)
            crcs[index] = crc
            return
        with borrow_buffer(task.size) as buffer:
            pos = 0
            for at in range(task.start, task.stop):
                index = order[at]
                data = prepared_bytes(values[index])
                end = pos + len(data)
                written = buffer[pos:end]
                written[:] = data
                crcs[index] = crc32c(written)  # the bytes written, not the source
                pos = end
            write(buffer, task.offset)

    return run
