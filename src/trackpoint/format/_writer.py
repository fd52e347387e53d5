"""`BundleWriter`: one TensorBundle written file by file (TF format doc §1, §5).

Streams each value from its own buffer into a data shard (crc32c computed on the same
buffer, no `tobytes()` copy), then writes the sorted `.index` last, both under temporary
names renamed into place when the bundle is complete, as TF's BundleWriter does.

Knows bytes and files, not objects or frameworks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from trackpoint.errors import InvalidValueError

from ._commit import fsync_dir as _fsync_dir
from ._crc32c import crc32c
from ._dtypes import DType, as_dtype
from ._encoding import (
    MAX_IO,
    MAX_SHARDS,
    check_key,
    encode_key,
    encode_value,
    entry_proto,
    write_index,
)
from ._names import data_file_name, index_file_name, temp_file_name
from ._slices import encode_slice_key, normalize_extents
from .protos import tensor_bundle_pb2 as bundle_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from numpy.typing import ArrayLike

    from trackpoint._typing import PathLike


def _shape_list(shape: Sequence[int]) -> list[int]:
    return [int(d) for d in shape]


@dataclass(slots=True)
class _Shard:
    final: str
    temp: str
    file: BinaryIO
    size: int = 0


class BundleWriter:
    """Writes one TensorBundle: data shards, then the index.

    Values are written to the data files as they are added; the index is written by
    `finish()` and renamed into place last, so a bundle whose `.index` exists is complete.

    Args:
        prefix: The checkpoint prefix (`runs/a/ckpt-3` → `runs/a/ckpt-3.index`, ...).
        num_shards: How many data files to write. Values go to the shard named in `add`,
            or else to the one with the fewest bytes so far.
        durable: fsync every file and the folder before returning from `finish()`.

    Example:
        >>> import tempfile, numpy as np
        >>> from trackpoint.format import BundleReader
        >>> prefix = tempfile.mkdtemp() + "/ckpt"
        >>> with BundleWriter(prefix) as writer:
        ...     writer.add("w", np.arange(3, dtype=np.float32))
        >>> BundleReader(prefix).get_tensor("w")
        array([0., 1., 2.], dtype=float32)
    """

    def __init__(self, prefix: PathLike, *, num_shards: int = 1, durable: bool = False) -> None:
        if num_shards < 1 or num_shards > MAX_SHARDS:
            raise InvalidValueError(
                f"num_shards must be between 1 and {MAX_SHARDS}, not {num_shards}"
            )
        self.prefix = os.fspath(prefix)
        self.num_shards = num_shards
        self._durable = durable
        self._entries: dict[bytes, bundle_pb2.BundleEntryProto] = {}
        self._sliced: dict[bytes, bundle_pb2.BundleEntryProto] = {}
        self._shards: list[_Shard] = []
        self._done = False
        folder = os.path.dirname(self.prefix)
        if folder:
            os.makedirs(folder, exist_ok=True)
        token = secrets.token_hex(8)
        try:
            for shard in range(num_shards):
                final = data_file_name(self.prefix, shard, num_shards)
                temp = temp_file_name(final, token)
                self._shards.append(_Shard(final, temp, open(temp, "wb")))  # noqa: SIM115
        except BaseException:
            self.abort()
            raise
        self._index_final = index_file_name(self.prefix)
        self._index_temp = temp_file_name(self._index_final, token)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def _check_key(self, key: str | bytes) -> bytes:
        raw = check_key(key)
        if raw in self._entries or raw in self._sliced:
            raise InvalidValueError(f"key {raw.decode('utf-8', 'replace')!r} was added twice")
        return raw

    def _pick_shard(self, shard: int | None) -> _Shard:
        if self._done:
            raise InvalidValueError(f"the bundle '{self.prefix}' is already finished")
        if shard is None:
            return min(self._shards, key=lambda s: s.size)
        if not 0 <= shard < self.num_shards:
            raise InvalidValueError(f"shard {shard} is out of range for {self.num_shards} shards")
        return self._shards[shard]

    def _write(self, shard: _Shard, view: memoryview | bytes) -> None:
        for start in range(0, len(view), MAX_IO):
            shard.file.write(view[start : start + MAX_IO])
        shard.size += len(view)

    def _write_value(
        self,
        entry: bundle_pb2.BundleEntryProto,
        value: ArrayLike,
        dtype: DType | str | None,
        shard: _Shard,
    ) -> None:
        encoded = encode_value(value, dtype)
        offset = shard.size
        crc = crc32c(encoded.data) if encoded.crc is None else encoded.crc
        self._write(shard, encoded.data)
        entry.CopyFrom(
            entry_proto(
                encoded.dtype,
                encoded.shape,
                self._shards.index(shard),
                offset,
                len(encoded.data),
                crc,
            )
        )

    def add(
        self,
        key: str | bytes,
        value: ArrayLike,
        *,
        dtype: DType | str | None = None,
        shard: int | None = None,
    ) -> None:
        """Write one tensor.

        Args:
            key: The tensor's name in the checkpoint.
            value: An array (any NumPy/ml_dtypes dtype TF knows; object/'S'/'U' arrays of
                bytes or str are strings). Its buffer is written as it is, without a copy,
                when it is C-contiguous and little-endian.
            dtype: Write under another TF dtype of the same width (e.g. "qint8" for int8).
            shard: Which data file to put it in (default: the smallest so far).

        Raises:
            InvalidValueError: a duplicate or reserved key, or a bad shard number.
            NotTrackableError: a dtype TF checkpoints cannot hold.
        """
        raw = self._check_key(key)
        target = self._pick_shard(shard)
        entry = bundle_pb2.BundleEntryProto()
        self._write_value(entry, value, dtype, target)
        self._entries[raw] = entry

    def add_slice(
        self,
        key: str,
        full_shape: Sequence[int],
        extents: Sequence[tuple[int, int | None]],
        value: ArrayLike,
        *,
        shard: int | None = None,
    ) -> None:
        """Write one slice of a partitioned tensor (as TF1 partitioned variables are saved).

        Args:
            key: The full tensor's name.
            full_shape: The full tensor's shape.
            extents: (start, length) per dimension; length None = the whole dimension.
            value: The slice's values; its shape must match the extents.
            shard: Which data file to put it in (default: the smallest so far).
        """
        raw = encode_key(key)
        if raw in self._entries or not raw or raw.startswith(b"\x00"):
            raise InvalidValueError(f"key {key!r} is reserved or was added as a whole tensor")
        array = np.asarray(value)
        try:
            resolved = normalize_extents(extents, _shape_list(full_shape))
        except ValueError as err:
            raise InvalidValueError(f"bad slice of {key!r}: {err}") from err
        if tuple(length for _, length in resolved) != array.shape:
            raise InvalidValueError(
                f"slice of {key!r} has shape {list(array.shape)} but its extents say "
                f"{[length for _, length in resolved]}"
            )
        # TF writes every length explicitly, a whole dimension included (tf1_saver fixture).
        stored = resolved
        full = self._sliced.get(raw)
        if full is None:
            full = bundle_pb2.BundleEntryProto()
            full.dtype = as_dtype(array.dtype).enum  # type: ignore[assignment]
            full.shape.SetInParent()
            for dim in full_shape:
                full.shape.dim.add().size = int(dim)
            self._sliced[raw] = full
        elif full.dtype != as_dtype(array.dtype).enum:
            raise InvalidValueError(f"slices of {key!r} have different dtypes")
        proto_slice = full.slices.add()
        for start, length in stored:
            extent = proto_slice.extent.add()
            extent.start = start
            if length is not None:
                extent.length = length
        entry = bundle_pb2.BundleEntryProto()
        self._write_value(entry, array, None, self._pick_shard(shard))
        slice_key = encode_slice_key(key, stored)
        if slice_key in self._entries:
            raise InvalidValueError(f"the same slice of {key!r} was added twice")
        self._entries[slice_key] = entry

    def finish(self) -> None:
        """Close the data files, write the index and move everything into place."""
        if self._done:
            return
        self._done = True
        try:
            for shard in self._shards:
                if self._durable:
                    shard.file.flush()
                    os.fsync(shard.file.fileno())
                shard.file.close()
            with open(self._index_temp, "wb") as out:
                write_index(out, self.num_shards, {**self._entries, **self._sliced})
                if self._durable:
                    out.flush()
                    os.fsync(out.fileno())
            # Data first, index last: a bundle whose .index exists is complete.
            for shard in self._shards:
                os.replace(shard.temp, shard.final)
            os.replace(self._index_temp, self._index_final)
            if self._durable:
                _fsync_dir(os.path.dirname(self.prefix) or ".")
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Close and delete the temporary files of an unfinished bundle."""
        self._done = True
        for shard in self._shards:
            shard.file.close()
        for path in [s.temp for s in self._shards] + [getattr(self, "_index_temp", "")]:
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
