"""`BundleReader`: a TensorBundle written by TensorFlow or trackpoint, read and checked.

Reads and checks the whole `.index` when it opens (no data is read), then reads each
tensor straight into its destination buffer with `os.preadv`, verifying its checksum,
reassembling sliced tensors, or hands out zero-copy views of memory-mapped shards.

Knows bytes and files, not objects or frameworks.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.message import DecodeError

from trackpoint import storage
from trackpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    InvalidValueError,
    KeyNotFoundError,
    TrackpointError,
    UnsupportedCheckpointError,
)

from ._commit import finish_interrupted_overwrite
from ._crc32c import crc32c, unmask
from ._dtypes import DType, decode_strings, dtype_from_enum
from ._encoding import BUNDLE_VERSION, HEADER_KEY, MAX_SHARDS, as_bytes_view
from ._index import Entry as _Entry
from ._index import EntryIndex
from ._names import data_file_name, index_file_name
from ._slices import (
    Extents,
    encode_slice_key,
    find_tiling_problem,
    format_extents,
    normalize_extents,
)
from ._sstable import TableError, iter_table
from .protos import tensor_bundle_pb2 as bundle_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator

    from numpy.typing import NDArray

    from trackpoint._typing import PathLike

_LITTLE, _BIG = 0, 1
_MAX_RANK = 254  # TF's TensorShape limit
# Partitioned variables have tens or thousands of slices; each listed slice costs Python
# objects (~300 bytes) at open, so a list of millions would be a memory attack.
_MAX_SLICES = 1 << 16


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What the index says about one (visible) tensor.

    Attributes:
        key: The tensor's name.
        dtype: Its TF dtype.
        shape: Its full shape.
        size: Bytes it occupies in the data files (all slices together).
        shard: The data shard it is in (-1 for sliced tensors spread over slices).
        sliced: True when stored as several slices.
    """

    key: str
    dtype: DType
    shape: tuple[int, ...]
    size: int
    shard: int
    sliced: bool


@dataclass(frozen=True, slots=True)
class DataRange:
    """Where one tensor's bytes lie, for a reader that fetches them itself (the engine).

    Attributes:
        key: The tensor's name.
        file: The data file's path.
        handle: That file, open through the storage seam, owned by the `BundleReader`.
        offset: The first byte of the tensor in the file.
        size: How many bytes it has.
        crc: Its unmasked crc32c, or None when the reader does not verify checksums.
    """

    key: str
    file: str
    handle: storage.ReadHandle
    offset: int
    size: int
    crc: int | None


def _size_problem(dtype: DType, shape: tuple[int, ...], size: int) -> str | None:
    """Why a whole (unsliced) entry of this dtype and shape cannot have `size` bytes."""
    itemsize = dtype.itemsize
    if itemsize is not None:
        numel = math.prod(shape)
        if numel * itemsize != size:
            return (
                f"its shape {list(shape)} of {dtype.name} needs {numel * itemsize} bytes "
                f"but the index says it has {size}"
            )
    elif dtype.is_string:
        numel = math.prod(shape)
        if size < 4 + numel:
            return f"its {numel} strings cannot fit in the {size} bytes the index gives it"
    return None


def _open_regular(path: str, key: str | None = None) -> storage.ReadHandle | None:
    """Open `path` through the storage seam if it is a regular file; None if it is absent.

    The storage refuses a FIFO, folder or device (it opens non-blocking and checks with
    fstat, so a FIFO put in a file's place can neither block the open nor be read). `key`
    names the tensor being read, for the error.
    """
    try:
        return storage.current().open_read(path)
    except FileNotFoundError:
        return None
    except storage.NotRegularFileError:
        reading = f" (reading tensor '{key}')" if key is not None else ""
        raise CorruptCheckpointError(
            f"'{path}' is not a regular file; a checkpoint file must be one{reading}",
            file=path,
            key=key,
        ) from None


class BundleReader:
    """Reads a TensorBundle written by TensorFlow or trackpoint.

    Opening reads and checks the whole `.index` file; no data is read until a tensor is
    asked for. Data shards are opened on first use.

    Args:
        prefix: The checkpoint prefix (the `.index` file's path without `.index`).
        verify_checksums: Check each tensor's crc32c when it is read (on by default).
        mmap: Return read-only zero-copy views of memory-mapped data files from
            `get_tensor` (local files only; numeric dtypes).

    Raises:
        CheckpointNotFoundError: there is no `.index` file for `prefix`.
        CorruptCheckpointError: the index is malformed or fails its checksums.
        UnsupportedCheckpointError: the bundle needs a newer reader.
    """

    def __init__(
        self, prefix: PathLike, *, verify_checksums: bool = True, mmap: bool = False
    ) -> None:
        self.prefix = os.fspath(prefix)
        self.index_path = index_file_name(self.prefix)
        self.verify_checksums = verify_checksums
        self._use_mmap = mmap
        self._handles: dict[int, storage.ReadHandle] = {}
        self._paths: dict[int, str] = {}
        finish_interrupted_overwrite(self.prefix)
        opened = _open_regular(self.index_path)
        if opened is None:
            raise CheckpointNotFoundError(
                f"no checkpoint at '{self.prefix}': "
                f"'{os.path.basename(self.index_path)}' is missing",
                file=self.index_path,
            )
        try:
            # Only the iteration holds the file's bytes: they go as soon as it has ended,
            # before the index is compacted (the peak of opening).
            items = iter_table(opened.read(0, opened.size))
        finally:
            opened.close()
        self.big_endian = False
        self.num_shards = 0
        self._entries: EntryIndex  # made by _parse once the header is read
        try:
            self._parse(items)
        except TableError as err:
            raise self._unreadable(err) from err
        except TrackpointError:
            # A malformed table is reported before any entry's meaning, as when the table
            # was checked whole first: the entries of a damaged table prove nothing.
            try:
                for _ in items:
                    pass
            except TableError as err:
                raise self._unreadable(err) from err
            raise

    # -- opening --------------------------------------------------------------------

    def _unreadable(self, err: TableError) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"'{self.index_path}' is not a readable checkpoint index: {err}; the file is "
            "damaged or is not a TensorFlow checkpoint",
            file=self.index_path,
        )

    def _corrupt(self, message: str, key: str | None = None) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"'{self.index_path}': {message}", file=self.index_path, key=key
        )

    def _parse(self, items: Iterator[tuple[bytes, bytes]]) -> None:
        first = next(items, None)
        if first is None or first[0] != HEADER_KEY:
            raise self._corrupt("the first entry is not the bundle header; the file is damaged")
        header = bundle_pb2.BundleHeaderProto()
        try:
            header.ParseFromString(first[1])
        except DecodeError as err:
            raise self._corrupt(f"the bundle header does not parse ({err})") from err
        version = header.version
        if version.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in version.bad_consumers:
            raise UnsupportedCheckpointError(
                f"'{self.index_path}' needs a reader of bundle version {version.min_consumer} "
                f"or newer (trackpoint reads version {BUNDLE_VERSION}); it was written by a "
                "newer TensorFlow",
                file=self.index_path,
            )
        if not 1 <= header.num_shards <= MAX_SHARDS:
            raise self._corrupt(f"the header declares {header.num_shards} data shards")
        if header.endianness not in (_LITTLE, _BIG):
            raise self._corrupt(f"unknown endianness {header.endianness} in the header")
        self.num_shards = header.num_shards
        self.big_endian = header.endianness == _BIG
        self._entries = index = EntryIndex(self.num_shards)
        slice_entries: dict[bytes, bundle_pb2.BundleEntryProto] = {}
        for raw_key, value in items:
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                key = raw_key.decode("utf-8", "backslashreplace")
            # A new message per entry: parsing into one message again and again is no
            # faster, and its arena (malloc, unseen by tracemalloc) keeps every parse.
            proto = bundle_pb2.BundleEntryProto()
            try:
                proto.ParseFromString(value)
            except DecodeError as err:
                raise self._corrupt(
                    f"the entry of {raw_key!r} does not parse ({err})", key=key
                ) from err
            if raw_key.startswith(b"\x00"):
                slice_entries[raw_key] = proto  # looked up once every entry is in
            elif proto.slices:
                index.append_whole(self._make_entry(key, proto))
            else:
                dtype, shape, shard, offset, size = self._checked_fields(key, proto)
                problem = _size_problem(dtype, shape, size)
                index.append(key, dtype, shape, shard, offset, size, unmask(proto.crc32c), problem)
        index.finish()
        for entry in index.whole_entries():
            self._attach_slices(entry.key, entry, slice_entries)

    def _checked_fields(
        self, key: str, proto: bundle_pb2.BundleEntryProto
    ) -> tuple[DType, tuple[int, ...], int, int, int]:
        """Check an entry's dtype, shape, shard and range: (dtype, shape, shard, offset, size)."""
        enum = proto.dtype
        dtype = dtype_from_enum(enum)
        if dtype is None:
            # A dtype from a newer TensorFlow: list the tensor, refuse only reading it, so
            # the rest of the checkpoint stays usable.
            dtype = DType(enum, f"unknown_dtype_{enum}", None)
        shape_proto = proto.shape
        dims = shape_proto.dim
        rank = len(dims)
        if shape_proto.unknown_rank or rank > _MAX_RANK:
            raise self._corrupt(f"tensor '{key}' has an invalid shape", key=key)
        # Indexing a repeated field is about twice as fast as iterating over it (upb).
        shape = (dims[0].size,) if rank == 1 else tuple([dims[i].size for i in range(rank)])
        if shape and min(shape) < 0:
            raise self._corrupt(f"tensor '{key}' has a negative dimension {list(shape)}", key=key)
        shard = proto.shard_id
        if not 0 <= shard < self.num_shards:
            raise self._corrupt(
                f"tensor '{key}' is in shard {shard} but the bundle has {self.num_shards} shards",
                key=key,
            )
        offset = proto.offset
        size = proto.size
        if offset < 0 or size < 0:
            raise self._corrupt(f"tensor '{key}' has a negative offset or size", key=key)
        return dtype, shape, shard, offset, size

    def _make_entry(self, key: str, proto: bundle_pb2.BundleEntryProto) -> _Entry:
        """The entry of a sliced tensor or of one slice of it, checked as in `_parse`."""
        dtype, shape, shard, offset, size = self._checked_fields(key, proto)
        entry = _Entry(key, dtype, shape, shard, offset, size, unmask(proto.crc32c))
        if len(proto.slices) > _MAX_SLICES:
            raise UnsupportedCheckpointError(
                f"tensor '{key}' in '{self.index_path}' lists {len(proto.slices)} slices, more "
                f"than trackpoint reads ({_MAX_SLICES}); the index is damaged or was not "
                "written by TensorFlow",
                file=self.index_path,
                key=key,
            )
        if proto.slices:
            entry.slices = []  # filled by _attach_slices
            for proto_slice in proto.slices:
                extents = tuple(
                    (e.start, e.length if e.HasField("length") else None)
                    for e in proto_slice.extent
                )
                try:
                    normalize_extents(extents, shape)
                except ValueError as err:
                    raise self._corrupt(f"tensor '{key}' has a bad slice: {err}", key=key) from err
                # The slice's own entry is looked up by _attach_slices once all are parsed.
                entry.slices.append((extents, entry))
        else:
            entry.problem = _size_problem(dtype, shape, size)
        return entry

    def _attach_slices(
        self,
        key: str,
        entry: _Entry,
        slice_entries: dict[bytes, bundle_pb2.BundleEntryProto],
    ) -> None:
        attached: list[tuple[Extents, _Entry]] = []
        for extents, _ in entry.slices:
            slice_key = encode_slice_key(key, extents)
            proto = slice_entries.get(slice_key)
            if proto is None:
                entry.problem = f"its slice {format_extents(extents)} has no entry in the index"
                attached.append((extents, entry))
                continue
            part = self._make_entry(f"{key}{format_extents(extents)}", proto)
            resolved = normalize_extents(extents, entry.shape)
            if part.shape != tuple(length for _, length in resolved) or part.dtype != entry.dtype:
                raise self._corrupt(
                    f"slice {format_extents(extents)} of '{key}' has shape {list(part.shape)} "
                    f"and dtype {part.dtype.name}, not what its extents say",
                    key=key,
                )
            attached.append((resolved, part))
        entry.slices = attached
        # A slice listed twice is stored once.
        entry.size = sum({e: p.size for e, p in attached if p is not entry}.values())

    # -- listing ----------------------------------------------------------------------

    def keys(self) -> list[str]:
        """All visible keys (hidden slice keys excluded), sorted as in the index."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def info(self, key: str) -> TensorInfo:
        """What the index says about `key` (no data is read)."""
        # The key in it is the index's own string: callers holding it add no copy.
        return TensorInfo(*self._entries.summary(self._row(key)))

    def find_info(self, key: str) -> TensorInfo | None:
        """`info(key)`, or None when the index has no such key (one lookup, no error)."""
        row = self._entries.find(key)
        return None if row is None else TensorInfo(*self._entries.summary(row))

    def infos(self) -> Iterator[TensorInfo]:
        """`info` of every visible key, in key order."""
        for summary in self._entries.summaries():
            yield TensorInfo(*summary)

    def _entry(self, key: str) -> _Entry:
        return self._entries.entry(self._row(key))

    def _row(self, key: str) -> int:
        row = self._entries.find(key)
        if row is None:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = (
                f"; did you mean {', '.join(repr(c) for c in close)}?"
                if close
                else ("; `trackpoint inspect` lists the keys it has")
            )
            raise KeyNotFoundError(
                f"key '{key}' not found in checkpoint '{self.prefix}'{hint}",
                file=self.index_path,
                key=key,
            )
        return row

    # -- data files ---------------------------------------------------------------------

    def data_path(self, shard: int) -> str:
        """The path of data shard `shard`."""
        path = self._paths.get(shard)
        if path is None:
            path = self._paths[shard] = data_file_name(self.prefix, shard, self.num_shards)
        return path

    def _handle(self, shard: int, key: str | None = None) -> storage.ReadHandle:
        """The open data shard; `key` is the tensor wanted (for errors)."""
        handle = self._handles.get(shard)
        if handle is None:
            path = self.data_path(shard)
            opened = _open_regular(path, key)
            if opened is None:
                base = os.path.basename(self.prefix)
                reading = f"reading tensor '{key}': " if key is not None else ""
                raise IncompleteCheckpointError(
                    f"{reading}'{os.path.basename(path)}' is missing from "
                    f"'{os.path.dirname(path) or '.'}'; all files that start with '{base}.' "
                    f"must stay together (the checkpoint has {self.num_shards} data "
                    f"file{'s' if self.num_shards > 1 else ''})",
                    file=path,
                    key=key,
                )
            handle = self._handles[shard] = opened
        return handle

    def data_files_complete(self) -> bool:
        """Whether every data file exists and holds every byte the index names (no data read).

        A structural check, cheap enough to pick a checkpoint by (`latest_checkpoint`'s
        scan); `verify` checks the bytes themselves.
        """
        ends = self._entries.data_ends()
        if ends is None:
            return False
        try:
            return all(self._handle(shard).size >= end for shard, end in ends.items())
        except TrackpointError:
            return False

    def _check_range(self, entry: _Entry) -> storage.ReadHandle:
        """Open the entry's shard and check its bytes lie inside it; return its handle."""
        if entry.problem is not None:
            raise CorruptCheckpointError(
                f"tensor '{entry.key}' in '{self.index_path}' cannot be read: {entry.problem}",
                file=self.index_path,
                key=entry.key,
            )
        handle = self._handle(entry.shard, entry.key)
        size = handle.size
        if entry.offset + entry.size > size:
            path = self.data_path(entry.shard)
            raise CorruptCheckpointError(
                f"tensor '{entry.key}' needs bytes {entry.offset}..{entry.offset + entry.size} of "
                f"'{path}', which has only {size} bytes: the data file is truncated (copy it "
                "again from where the checkpoint was written) or the index is damaged",
                file=path,
                key=entry.key,
            )
        return handle

    def _pread_into(
        self, handle: storage.ReadHandle, view: memoryview, offset: int, entry: _Entry
    ) -> None:
        if handle.read_into(view, offset) < len(view):
            raise truncated_error(entry.key, self.data_path(entry.shard))

    def _checksum_error(self, entry: _Entry, computed: int) -> CorruptCheckpointError:
        return checksum_error(entry.key, self.data_path(entry.shard), entry.crc, computed)

    def _require_decodable(self, entry: _Entry) -> None:
        if entry.dtype.name.startswith("unknown_dtype_"):
            raise UnsupportedCheckpointError(
                f"tensor '{entry.key}' in '{self.index_path}' has unknown dtype number "
                f"{entry.dtype.enum}; it was written by a newer TensorFlow than trackpoint "
                "knows — upgrade trackpoint, or skip this key",
                file=self.index_path,
                key=entry.key,
            )
        if entry.dtype.numpy is None:
            raise UnsupportedCheckpointError(
                f"tensor '{entry.key}' has dtype {entry.dtype.name}, which trackpoint lists but "
                "cannot decode (it holds TensorFlow runtime state such as a tf.data iterator); "
                "skip this key",
                file=self.index_path,
                key=entry.key,
            )

    # -- reading ------------------------------------------------------------------------

    def get_tensor(self, key: str) -> NDArray[Any]:
        """Read one tensor.

        Returns:
            A NumPy array (strings: an object array of `bytes`). With `mmap=True`, numeric
            tensors are read-only views of the mapped data file.

        Raises:
            KeyNotFoundError: no such key.
            IncompleteCheckpointError: its data file is missing.
            CorruptCheckpointError: its bytes fail their checksum or lie outside the file.
            UnsupportedCheckpointError: its dtype cannot be decoded (variant, resource).
        """
        entry = self._entry(key)
        self._require_decodable(entry)
        if entry.slices:
            return self._read_sliced(entry)
        if entry.dtype.is_string:
            return self._read_strings(entry)
        if self._use_mmap:
            return self._map_view(entry)
        assert entry.dtype.numpy is not None  # noqa: S101 - checked by _require_decodable
        self._check_range(entry)  # before allocating: the file must hold what the index says
        out = np.empty(entry.shape, entry.dtype.numpy)
        self._read_numeric_into(entry, out)
        return out

    def read_into(self, key: str, out: NDArray[Any]) -> None:
        """Read tensor `key` into the caller's array `out`, without another buffer.

        `out` must be writeable, C-contiguous and of the tensor's shape and dtype.

        Raises:
            InvalidValueError: `out` does not fit the tensor.
            (and as `get_tensor`)
        """
        entry = self._destination_entry(key, out)
        if entry.slices:
            self._read_parts_into(self._slice_parts(entry), out)
            return
        self._read_numeric_into(entry, out)

    def _destination_entry(self, key: str, out: NDArray[Any]) -> _Entry:
        """The entry of `key`, after checking `out` can take its values in place."""
        entry = self._entry(key)
        self._require_decodable(entry)
        if entry.dtype.is_string:
            raise InvalidValueError(f"tensor '{key}' holds strings; use get_tensor for it")
        if tuple(out.shape) != entry.shape or out.dtype != entry.dtype.numpy:
            raise InvalidValueError(
                f"tensor '{key}' is {entry.dtype.name} {list(entry.shape)} but the buffer is "
                f"{out.dtype} {list(out.shape)}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise InvalidValueError(
                f"the buffer for tensor '{key}' must be writeable and C-contiguous"
            )
        return entry

    def locate(self, key: str, out: NDArray[Any]) -> DataRange | None:
        """Check that tensor `key` can be read into `out`; say where its bytes are.

        For readers that move the bytes themselves (`trackpoint.engine` reads many tensors
        in parallel): the same checks as `read_into`, done before any data is read.

        Returns:
            The tensor's byte range, or None when its bytes cannot simply be copied into
            `out` (a sliced tensor, a big-endian bundle, a reader with `mmap=True`); read
            those with `read_into`.

        Raises:
            (as `read_into`, for what can be checked without reading data)
        """
        entry = self._destination_entry(key, out)
        if entry.slices or self.big_endian or self._use_mmap:
            return None
        handle = self._check_range(entry)
        return DataRange(
            entry.key,
            self.data_path(entry.shard),
            handle,
            entry.offset,
            entry.size,
            entry.crc if self.verify_checksums else None,
        )

    def _read_numeric_into(self, entry: _Entry, out: NDArray[Any]) -> None:
        handle = self._check_range(entry)
        view = as_bytes_view(out)
        self._pread_into(handle, view, entry.offset, entry)
        if self.verify_checksums:
            computed = crc32c(view)
            if computed != entry.crc:
                raise self._checksum_error(entry, computed)
        if self.big_endian:
            out.byteswap(inplace=True)

    def _map_view(self, entry: _Entry) -> NDArray[Any]:
        handle = self._check_range(entry)
        assert entry.dtype.numpy is not None  # noqa: S101 - checked by _require_decodable
        if entry.size == 0:
            return np.empty(entry.shape, entry.dtype.numpy)
        mapped = handle.map()
        assert mapped is not None  # noqa: S101 - the range check proved the file not empty
        view = mapped[entry.offset : entry.offset + entry.size]
        if self.verify_checksums:
            computed = crc32c(view)
            if computed != entry.crc:
                raise self._checksum_error(entry, computed)
        dtype = entry.dtype.numpy.newbyteorder(">") if self.big_endian else entry.dtype.numpy
        return np.frombuffer(view, dtype=dtype).reshape(entry.shape)

    def _read_strings(self, entry: _Entry) -> NDArray[Any]:
        handle = self._check_range(entry)
        buf = bytearray(entry.size)  # bounded: the range check proved the file holds it
        self._pread_into(handle, memoryview(buf), entry.offset, entry)
        elements, computed = decode_strings(
            buf,
            entry.numel,
            big_endian=self.big_endian,
            where=f"'{entry.key}' in '{os.path.basename(self.data_path(entry.shard))}'",
            key=entry.key,
            file=self.data_path(entry.shard),
        )
        if self.verify_checksums and computed != entry.crc:
            raise self._checksum_error(entry, computed)
        out = np.empty(len(elements), dtype=object)
        out[:] = elements
        return out.reshape(entry.shape)

    def _read_sliced(self, entry: _Entry) -> NDArray[Any]:
        assert entry.dtype.numpy is not None  # noqa: S101 - checked by _require_decodable
        parts = self._slice_parts(entry)  # checked before the tensor is allocated
        out = np.empty(entry.shape, entry.dtype.numpy)
        self._read_parts_into(parts, out)
        return out

    def _slice_parts(self, entry: _Entry) -> list[tuple[tuple[slice, ...], _Entry]]:
        """The parts of a sliced tensor, each once: (where in the tensor, its entry).

        Checked before any data is read: each part lies inside its file, the parts do not
        overlap (TF refuses that too, `TensorSliceSet::Register`: which of two values an
        element has would depend on the order of the list) and they cover the shape.
        """
        if entry.problem is not None:
            self._check_range(entry)  # raises with the problem
        for _, part in entry.slices:
            self._check_range(part)
        # A string element takes at least one length byte; a slice listed twice counts once.
        itemsize = entry.dtype.itemsize or 1
        stored = sum({extents: part.size for extents, part in entry.slices}.values())
        if entry.numel * itemsize > stored:
            raise CorruptCheckpointError(
                f"the stored slices of tensor '{entry.key}' hold fewer bytes than its shape "
                f"{list(entry.shape)} needs; the index is damaged",
                file=self.index_path,
                key=entry.key,
            )
        unique = dict(entry.slices)  # a slice listed twice is read once
        if entry.numel:
            self._check_tiling(entry, list(unique))
        return [
            (tuple(slice(start, start + (length or 0)) for start, length in extents), part)
            for extents, part in unique.items()
        ]

    def _check_tiling(self, entry: _Entry, extents: list[Extents]) -> None:
        """Raise unless the slices (inside the shape, resolved) tile it without overlap."""
        overlapping, complete = find_tiling_problem(entry.shape, extents)
        if overlapping is not None:
            raise CorruptCheckpointError(
                f"the stored slice {format_extents(extents[overlapping])} of tensor "
                f"'{entry.key}' overlaps another of its slices; the index is damaged",
                file=self.index_path,
                key=entry.key,
            )
        if not complete:
            raise CorruptCheckpointError(
                f"the stored slices of tensor '{entry.key}' do not cover its shape "
                f"{list(entry.shape)}; the checkpoint is incomplete",
                file=self.index_path,
                key=entry.key,
            )

    def _read_parts_into(
        self, parts: list[tuple[tuple[slice, ...], _Entry]], out: NDArray[Any]
    ) -> None:
        """Read each part into its place in `out`: straight into it when that is contiguous."""
        for index, part in parts:
            place = out[index]
            if part.dtype.is_string:
                place[...] = self._read_strings(part)
            elif place.flags.c_contiguous and place.size:
                self._read_numeric_into(part, place)  # a row block: no buffer in between
            else:
                place[...] = self._read_part(part)

    def locate_parts(
        self, key: str, out: NDArray[Any]
    ) -> list[tuple[DataRange, NDArray[Any]]] | None:
        """Where each part of sliced tensor `key` lies, and the view of `out` it fills.

        For the engine's parallel pass, like `locate`: given only when every part can be
        read straight into its place (numbers, little-endian, no `mmap`, each place a
        contiguous block of `out`, as for TF's partitioned variables split along the first
        axis). Otherwise None: read the tensor with `read_into`.

        Raises:
            (as `read_into`, for what can be checked without reading data)
        """
        entry = self._destination_entry(key, out)
        if not entry.slices or self.big_endian or self._use_mmap:
            return None
        parts = self._slice_parts(entry)
        places = [(out[index], part) for index, part in parts]
        if not all(place.flags.c_contiguous for place, _ in places):
            return None
        return [
            (
                DataRange(
                    part.key,
                    self.data_path(part.shard),
                    self._check_range(part),
                    part.offset,
                    part.size,
                    part.crc if self.verify_checksums else None,
                ),
                place,
            )
            for place, part in places
        ]

    def _read_part(self, part: _Entry) -> NDArray[Any]:
        assert part.dtype.numpy is not None  # noqa: S101 - same dtype as the full entry
        self._check_range(part)
        out = np.empty(part.shape, part.dtype.numpy)
        self._read_numeric_into(part, out)
        return out

    def verify(self) -> Iterator[tuple[str, Exception | None]]:
        """Read every tensor and check its checksum; yield (key, error or None) for each."""
        for entry in self._entries.entries():
            key = entry.key
            if entry.dtype.numpy is None:
                yield key, None  # listed but undecodable: nothing to check it against
                continue
            try:
                self.get_tensor(key)
            except (CorruptCheckpointError, IncompleteCheckpointError) as err:
                yield key, err
            else:
                yield key, None

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the data files (views from `mmap=True` stay valid until collected)."""
        for handle in self._handles.values():
            handle.close()  # views still alive keep their mapping open until they go
        self._handles.clear()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort: file descriptors of a reader that was never closed.
        try:
            for handle in getattr(self, "_handles", {}).values():
                handle.close()
        except OSError:
            pass


def checksum_error(key: str, file: str, stored: int, computed: int) -> CorruptCheckpointError:
    """The error for tensor `key` of data file `file` failing its (unmasked) checksum."""
    return CorruptCheckpointError(
        f"tensor '{key}' in '{os.path.basename(file)}' failed its checksum (stored "
        f"0x{stored:08x}, computed 0x{computed:08x}); the file is damaged: restore an "
        "earlier checkpoint or copy this one again",
        file=file,
        key=key,
    )


def truncated_error(key: str, file: str) -> CorruptCheckpointError:
    """The error for data file `file` ending inside tensor `key`."""
    return CorruptCheckpointError(
        f"'{file}' ended while reading tensor '{key}'; the file was truncated",
        file=file,
        key=key,
    )
