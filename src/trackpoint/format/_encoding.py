"""A TensorBundle's encoding: values as data-file bytes, entries and the `.index` table.

How a value is laid out in a data file (TF format doc §5: a numeric tensor's own
little-endian buffer; strings as varint lengths, their crc32c, then their bytes), the
`BundleEntryProto` that describes it, and the `.index` table of header plus entries.
The writer and the engine's parallel save both encode through here, so every save lays
out the same bytes.

Knows bytes, not files, objects or frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

import numpy as np

from trackpoint.errors import InvalidValueError, NotTrackableError

from ._crc32c import mask
from ._dtypes import DType, as_dtype, encode_strings, string_elements
from ._sstable import TableBuilder
from .protos import tensor_bundle_pb2 as bundle_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numpy.typing import ArrayLike, NDArray

#: The bundle format version TF 2.21 writes and reads (tensor_bundle.h kTensorBundleVersion).
BUNDLE_VERSION = 1
HEADER_KEY = b""
#: The most data shards a bundle may have (written or read).
MAX_SHARDS = 1 << 20
# Linux transfers at most 0x7ffff000 bytes per read/write call.
MAX_IO = 0x7FFFF000


def encode_key(key: str | bytes) -> bytes:
    """`key` as stored: its UTF-8 bytes.

    Raises:
        InvalidValueError: the key cannot be encoded.
    """
    try:
        return key.encode("utf-8") if isinstance(key, str) else bytes(key)
    except UnicodeEncodeError as err:
        raise InvalidValueError(f"key {key!r} cannot be encoded as UTF-8: {err}") from err


def as_bytes_view(array: NDArray[Any]) -> memoryview:
    """A flat byte view of a C-contiguous array, whatever its dtype (ml_dtypes included)."""
    return array.reshape(-1).view(np.uint8).data


@dataclass(frozen=True, slots=True)
class EncodedValue:
    """One value as it goes into a data file: its TF dtype, shape and bytes.

    Attributes:
        dtype: The TF dtype it is stored as.
        shape: Its shape.
        data: Its bytes: a flat view of the array's own buffer for numbers (no copy when
            the array is C-contiguous and little-endian), the encoded bytes for strings.
        crc: The entry's unmasked crc32c when already known (strings, whose checksum also
            covers their lengths); None for numbers, whose crc is that of `data`.
    """

    dtype: DType
    shape: tuple[int, ...]
    data: memoryview
    crc: int | None


def encode_value(value: ArrayLike, dtype: DType | str | None = None) -> EncodedValue:
    """Prepare `value` for writing as TF stores it (as `BundleWriter.add` does).

    Args:
        value: An array (strings: object/'S'/'U' arrays of bytes or str).
        dtype: Store under another TF dtype of the same width (e.g. "qint8" for int8).

    Raises:
        NotTrackableError: a dtype TF checkpoints cannot hold.

    Example:
        >>> import numpy as np
        >>> encoded = encode_value(np.arange(2, dtype=np.int32))
        >>> encoded.dtype.name, encoded.shape, bytes(encoded.data).hex()
        ('int32', (2,), '0000000001000000')
    """
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    tf_dtype = as_dtype(array.dtype) if dtype is None else as_dtype(dtype)
    if tf_dtype.numpy is None:
        raise NotTrackableError(f"values of dtype {tf_dtype.name} cannot be written")
    shape = tuple(int(d) for d in array.shape)
    if tf_dtype.is_string:
        elements = string_elements(array)
        header, crc = encode_strings(elements)
        return EncodedValue(tf_dtype, shape, memoryview(b"".join([header, *elements])), crc)
    return EncodedValue(tf_dtype, shape, as_bytes_view(_stored_array(array, tf_dtype)), None)


def _stored_array(array: NDArray[Any], tf_dtype: DType) -> NDArray[Any]:
    """`array` with a buffer that holds its bytes as TF stores them: itself when it does."""
    assert tf_dtype.numpy is not None  # noqa: S101 - the callers refused undecodable dtypes
    if array.dtype != tf_dtype.numpy:
        if array.dtype.kind in "OSU" or array.dtype.itemsize != tf_dtype.numpy.itemsize:
            raise NotTrackableError(f"cannot write a {array.dtype} array as {tf_dtype.name}")
        # Same width (byte order, or an int array written as its quantized twin).
        array = array.astype(tf_dtype.numpy.newbyteorder("<"), copy=False)
    if not array.flags.c_contiguous or array.dtype.byteorder == ">":
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return array


#: A value ready to be written (`prepare_value`): a numeric array whose buffer holds the
#: bytes TF stores, or the `EncodedValue` of a string tensor.
PreparedValue: TypeAlias = "NDArray[Any] | EncodedValue"


def prepare_value(value: ArrayLike) -> PreparedValue:
    """`value` as a save holds it until it is written: for most values, itself.

    A save of many small tensors holds every value from the start of the save to its
    end. A numeric array whose buffer already holds TF's bytes (C-contiguous and
    little-endian, as nearly all are) is returned as it is: no copy and no object per
    value; its byte view is made only while it is written (`prepared_bytes`). Other
    numeric arrays come back converted; strings as their `EncodedValue` (bytes built).

    Raises:
        NotTrackableError: a dtype TF checkpoints cannot hold.

    Example:
        >>> import numpy as np
        >>> a = np.arange(2, dtype=np.int32)
        >>> prepare_value(a) is a, bytes(prepared_bytes(prepare_value(a))).hex()
        (True, '0000000001000000')
    """
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    tf_dtype = as_dtype(array.dtype)
    if tf_dtype.is_string or tf_dtype.numpy is None:
        return encode_value(array)
    return _stored_array(array, tf_dtype)


def prepared_size(value: PreparedValue) -> int:
    """How many bytes a prepared value takes in its data file."""
    return len(value.data) if isinstance(value, EncodedValue) else int(value.nbytes)


def prepared_bytes(value: PreparedValue) -> memoryview:
    """The bytes of a prepared value, as written: a view of its own buffer (no copy)."""
    return value.data if isinstance(value, EncodedValue) else as_bytes_view(value)


def prepared_entry(value: PreparedValue, shard: int, offset: int, crc: int) -> bytes:
    """The serialized index entry of a prepared value written at `offset` of `shard`.

    `crc` is the unmasked crc32c of the bytes written; a string tensor's entry uses its
    own (which covers the element lengths too).
    """
    if isinstance(value, EncodedValue):
        dtype, shape = value.dtype, value.shape
        crc = crc if value.crc is None else value.crc
    else:
        dtype, shape = as_dtype(value.dtype), value.shape
    size = prepared_size(value)
    return entry_proto(dtype, shape, shard, offset, size, crc).SerializeToString()


def entry_proto(
    dtype: DType, shape: Sequence[int], shard: int, offset: int, size: int, crc: int
) -> bundle_pb2.BundleEntryProto:
    """The index entry of one whole tensor; `crc` is unmasked (it is stored masked)."""
    entry = bundle_pb2.BundleEntryProto(
        dtype=dtype.enum,  # type: ignore[arg-type]
        shard_id=shard,
        offset=offset,
        size=size,
        crc32c=mask(crc),
    )
    entry.shape.SetInParent()  # TF always writes the shape, even for scalars
    for dim in shape:
        entry.shape.dim.add().size = int(dim)
    return entry


def write_index(
    out: BinaryIO, num_shards: int, entries: dict[bytes, bundle_pb2.BundleEntryProto | bytes]
) -> None:
    """Write a bundle's `.index` table: the header, then `entries` sorted by key.

    An entry may be given already serialized: a message object costs hundreds of bytes,
    its bytes a few dozen, which counts when a checkpoint has 100,000 tensors.
    """
    write_sorted_index(
        out,
        num_shards,
        (
            (key, entry if isinstance(entry, bytes) else entry.SerializeToString())
            for key, entry in sorted(entries.items())
        ),
    )


def write_sorted_index(
    out: BinaryIO, num_shards: int, entries: Iterable[tuple[bytes, bytes]]
) -> None:
    """Write a bundle's `.index` table from serialized entries already in key order.

    Each entry goes into the table as it comes, so a save of many tensors never holds
    them all (`write_index` sorts a dict of them first).

    Raises:
        ValueError: the keys are not strictly increasing (or one is empty).
    """
    header = bundle_pb2.BundleHeaderProto(num_shards=num_shards)
    header.version.producer = BUNDLE_VERSION
    table = TableBuilder(out)
    table.add(HEADER_KEY, header.SerializeToString())
    for key, entry in entries:
        table.add(key, entry)
    table.finish()


def check_key(key: str | bytes) -> bytes:
    """`key` as stored (UTF-8), refusing the empty key and keys starting with NUL.

    Raises:
        InvalidValueError: the key is reserved or cannot be encoded.
    """
    raw = encode_key(key)
    if not raw:
        raise InvalidValueError("the empty key is reserved for the bundle header")
    if raw.startswith(b"\x00"):
        raise InvalidValueError(f"keys starting with a NUL byte are reserved: {raw!r}")
    return raw
