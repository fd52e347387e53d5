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
import dataclasses
import io
import os
import secrets
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from trackpoint import storage
from trackpoint.errors import InsufficientSpaceError, InvalidValueError
from trackpoint.format import (
    TEMP_MARK,
    check_key,
    crc32c,
    data_file_name,
    encode_value,
    entry_proto,
    existing_files,
    index_file_name,
    roll_forward,
    staging_prefix,
    write_index,
)

from ._buffers import borrow_buffer, run_jobs
from ._plan import (
    BATCH_BYTES,
    SMALL_VALUE_BYTES,
    SavePlan,
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
_T = TypeVar("_T")


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
    folder = os.path.dirname(prefix)
    store = storage.current()
    try:
        store.makedirs(folder or ".")
    except OSError as err:
        raise storage.save_error(err, "creating the folder", folder or ".") from None
    _check_space(store, folder or ".", sum(sizes), len(keys))
    job = _Bundle(store, encoded, keys, plan, num_shards, threads, durable, token)
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


@dataclass(slots=True)
class _Bundle:
    """One bundle's write: the encoded values, their plan, and where the files go."""

    store: storage.Storage
    encoded: list[EncodedValue]
    keys: list[bytes]
    plan: SavePlan
    num_shards: int
    threads: int
    durable: bool
    token: str
    _crcs: list[int] = dataclasses.field(default_factory=list)

    def write(self, prefix: str) -> None:
        """Write every file of the bundle at `prefix`, by the commit protocol.

        Each data file: temp name, preallocate, write, fsync (durable), close (its error
        checked), rename. The index likewise, only after every data file is in place: a
        bundle whose `.index` exists is complete. Then the folder is synced (durable).
        On any failure every file this call created is removed.
        """
        store = self.store
        finals = [data_file_name(prefix, s, self.num_shards) for s in range(self.num_shards)]
        temps = [f"{final}{TEMP_MARK}{self.token}" for final in finals]
        created: list[str] = []  # every path this call made, to remove on failure
        fds: dict[int, int] = {}
        crcs = self._crcs = [0] * len(self.encoded)
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
            tasks = _tasks(self.plan.shards, [fds[s] for s in range(self.num_shards)])
            paths = {fds[s]: finals[s] for s in fds}
            run_jobs(
                [_writer(store, task, self.encoded, crcs, paths) for task in tasks], self.threads
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
            index = self._index_bytes()
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

    def _index_bytes(self) -> bytes:
        entries: dict[bytes, bundle_pb2.BundleEntryProto | bytes] = {}
        for shard_items in self.plan.shards:
            for item in shard_items:
                done = self.encoded[item.index]
                crc = self._crcs[item.index] if done.crc is None else done.crc
                entries[self.keys[item.index]] = entry_proto(
                    done.dtype, done.shape, item.shard, item.offset, item.size, crc
                ).SerializeToString()
        out = io.BytesIO()
        write_index(out, self.num_shards, entries)
        return out.getvalue()


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


def _writer(
    store: storage.Storage,
    task: _Task,
    encoded: Sequence[EncodedValue],
    crcs: list[int],
    paths: dict[int, str],
) -> Callable[[], None]:
    def write(data: memoryview, offset: int) -> None:
        try:
            store.write_all(task.fd, data, offset)
        except OSError as err:
            raise storage.save_error(err, "writing", paths[task.fd]) from None

    def run() -> None:
        if len(task.items) == 1 and task.size >= SMALL_VALUE_BYTES:
            item = task.items[0]
            data = encoded[item.index].data
            crc = 0
            for start in range(0, item.size, _PIECE_BYTES):
                piece = data[start : start + _PIECE_BYTES]
                crc = crc32c(piece, crc)
                write(piece, item.offset + start)
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
            write(buffer, task.offset)

    return run
