"""TensorFlow's `DataType` numbers ⇄ NumPy / ml_dtypes dtypes, and TF's string encoding.

Every dtype TF writes into a bundle is here (TF format doc §4.4). bfloat16, the float8 kinds,
float4_e2m1fn and the sub-byte integers come from `ml_dtypes`, whose in-memory layout (one
byte per sub-byte element, value in the low bits) is exactly TF's on-disk layout. Importing
ml_dtypes takes most of a second, more than the rest of trackpoint: it is imported the first
time one of its dtypes is needed (a checkpoint holds one, or a value has one). Quantized
types read as their integer type but keep their TF name. `variant` and `resource` are
listed with their names but cannot be decoded.

Knows bytes and dtypes, not files.
"""

from __future__ import annotations

import functools
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import CorruptCheckpointError, NotTrackableError

from ._crc32c import crc32c, mask
from ._varint import VarintError, decode_varint, encode_varint

if TYPE_CHECKING:
    from collections.abc import Iterable

    from numpy.typing import DTypeLike, NDArray


@dataclass(frozen=True, slots=True)
class DType:
    """One TensorFlow dtype as it appears in a checkpoint.

    Compares equal to its TF name (`DType == "float32"`), like `tf.DType` does.

    Attributes:
        enum: TF's `DataType` number (1 = float32, 7 = string, 14 = bfloat16, ...).
        name: TF's name for it (`tf.as_dtype(n).name`).
        numpy: The NumPy dtype values are read as; `object` for strings; None when
            trackpoint cannot decode values of this dtype (variant, resource). For the
            `ml_dtypes` kinds, asking for it imports ml_dtypes.
    """

    enum: int
    name: str
    # A NumPy dtype, or the name of an ml_dtypes type (resolved when first asked for).
    _numpy: np.dtype[Any] | str | None = field(repr=False)

    @property
    def numpy(self) -> np.dtype[Any] | None:
        """The NumPy dtype values are read as (see the class's attributes)."""
        spec = self._numpy
        return _ml_dtype(spec) if isinstance(spec, str) else spec

    @property
    def is_string(self) -> bool:
        """True for TF's string dtype (variable-length bytes per element)."""
        return self.enum == STRING_ENUM

    @property
    def itemsize(self) -> int | None:
        """Bytes per element on disk; None for strings and undecodable dtypes."""
        if self.numpy is None or self.is_string:
            return None
        return self.numpy.itemsize

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.enum == other.enum
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.enum)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"trackpoint.DType({self.name!r})"


STRING_ENUM = 7
VARIANT_ENUM = 21
RESOURCE_ENUM = 20


@functools.cache
def _ml_dtype(name: str) -> np.dtype[Any]:
    """The NumPy dtype of ml_dtypes' type `name`, importing ml_dtypes the first time."""
    import ml_dtypes

    found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
    return found


# A str in the third column names an ml_dtypes type: imported only when needed.
_TABLE: tuple[tuple[int, str, DTypeLike | str | None], ...] = (
    (1, "float32", np.float32),
    (2, "float64", np.float64),
    (3, "int32", np.int32),
    (4, "uint8", np.uint8),
    (5, "int16", np.int16),
    (6, "int8", np.int8),
    (STRING_ENUM, "string", object),
    (8, "complex64", np.complex64),
    (9, "int64", np.int64),
    (10, "bool", np.bool_),
    (11, "qint8", np.int8),
    (12, "quint8", np.uint8),
    (13, "qint32", np.int32),
    (14, "bfloat16", "bfloat16"),
    (15, "qint16", np.int16),
    (16, "quint16", np.uint16),
    (17, "uint16", np.uint16),
    (18, "complex128", np.complex128),
    (19, "float16", np.float16),
    (RESOURCE_ENUM, "resource", None),
    (VARIANT_ENUM, "variant", None),
    (22, "uint32", np.uint32),
    (23, "uint64", np.uint64),
    (24, "float8_e5m2", "float8_e5m2"),
    (25, "float8_e4m3fn", "float8_e4m3fn"),
    (26, "float8_e4m3fnuz", "float8_e4m3fnuz"),
    (27, "float8_e4m3b11fnuz", "float8_e4m3b11fnuz"),
    (28, "float8_e5m2fnuz", "float8_e5m2fnuz"),
    (29, "int4", "int4"),
    (30, "uint4", "uint4"),
    (31, "int2", "int2"),
    (32, "uint2", "uint2"),
    (33, "float4_e2m1fn", "float4_e2m1fn"),
)

DTYPES_BY_ENUM: dict[int, DType] = {
    enum: DType(
        enum,
        name,
        np_dtype if np_dtype is None or isinstance(np_dtype, str) else np.dtype(np_dtype),
    )
    for enum, name, np_dtype in _TABLE
}
DTYPES_BY_NAME: dict[str, DType] = {d.name: d for d in DTYPES_BY_ENUM.values()}
_QUANTIZED = frozenset({11, 12, 13, 15, 16})
# The dtypes a NumPy array can be saved as: its own, never a quantized twin.
_SAVABLE = tuple(
    d
    for d in DTYPES_BY_ENUM.values()
    if d._numpy is not None and d.enum not in _QUANTIZED and not d.is_string
)
# NumPy dtype -> DType; the ml_dtypes kinds join once ml_dtypes is imported (`_by_numpy`).
_BY_NUMPY: dict[np.dtype[Any], DType] = {
    d._numpy: d for d in _SAVABLE if isinstance(d._numpy, np.dtype)
}


def _by_numpy(np_dtype: np.dtype[Any]) -> DType | None:
    found = _BY_NUMPY.get(np_dtype)
    if found is None and "ml_dtypes" in sys.modules:
        # An array can only have an ml_dtypes dtype once ml_dtypes is imported, so this
        # costs no import; the table is filled in place, once.
        for d in _SAVABLE:
            if isinstance(d._numpy, str):
                _BY_NUMPY.setdefault(_ml_dtype(d._numpy), d)
        found = _BY_NUMPY.get(np_dtype)
    return found


def dtype_from_enum(enum: int) -> DType | None:
    """The dtype with TF number `enum`, or None for a number TF never writes.

    Example:
        >>> dtype_from_enum(14).name
        'bfloat16'
    """
    return DTYPES_BY_ENUM.get(enum)


def as_dtype(value: DType | str | DTypeLike) -> DType:
    """Turn a TF dtype name, a `DType` or a NumPy dtype into a `DType`.

    Raises:
        NotTrackableError: the dtype has no TensorFlow equivalent.

    Example:
        >>> as_dtype("half").name, as_dtype(np.int64).name
        ('float16', 'int64')
    """
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        name = {"half": "float16", "float": "float32", "double": "float64"}.get(value, value)
        if name in DTYPES_BY_NAME:
            return DTYPES_BY_NAME[name]
    try:
        np_dtype = np.dtype(value)
    except TypeError as err:
        raise NotTrackableError(f"{value!r} is not a dtype TensorFlow checkpoints hold") from err
    if np_dtype.kind in "OSU":
        return DTYPES_BY_ENUM[STRING_ENUM]
    found = _by_numpy(np_dtype.newbyteorder("=") if np_dtype.byteorder == ">" else np_dtype)
    if found is None:
        raise NotTrackableError(
            f"NumPy dtype {np_dtype} has no TensorFlow equivalent; convert the value to one of: "
            + ", ".join(sorted(d.name for d in _SAVABLE))
        )
    return found


# ---------------------------------------------------------------------------------------
# Strings (TF format doc §5.3): varint lengths, a masked crc of the lengths, then the bytes.
# The entry's crc32c continues over the 4 stored checksum bytes and then every element.

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _element_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise NotTrackableError(
        f"a string tensor holds a {type(item).__name__}; only bytes and str can be saved"
    )


def string_elements(array: NDArray[np.generic]) -> list[bytes]:
    """The elements of a string-like array (object of bytes/str, 'S' or 'U') as bytes, C order."""
    return [_element_bytes(item) for item in array.reshape(-1).tolist()]


def _length_crc(lengths: Iterable[int], big_endian: bool) -> int:
    u32, u64 = (struct.Struct(">I"), struct.Struct(">Q")) if big_endian else (_U32, _U64)
    crc = 0
    for length in lengths:
        crc = crc32c(u32.pack(length) if length <= 0xFFFFFFFF else u64.pack(length), crc)
    return crc


def encode_strings(elements: list[bytes]) -> tuple[bytes, int]:
    """Encode string elements as TF stores them; return (header bytes, entry crc32c).

    The header is the varint lengths and the masked length checksum; the caller writes the
    elements after it. The crc is unmasked and covers header checksum and elements.

    Example:
        >>> header, crc = encode_strings([b"hello"])
        >>> (header + b"hello").hex()
        '05d9c69c4368656c6c6f'
    """
    lengths = [len(e) for e in elements]
    masked_len_crc = _U32.pack(mask(_length_crc(lengths, big_endian=False)))
    header = b"".join(encode_varint(n) for n in lengths) + masked_len_crc
    crc = crc32c(masked_len_crc, _length_crc(lengths, big_endian=False))
    for element in elements:
        crc = crc32c(element, crc)
    return header, crc


def decode_strings(
    data: bytes | bytearray | memoryview,
    count: int,
    *,
    big_endian: bool = False,
    where: str,
    key: str,
    file: str,
) -> tuple[list[bytes], int]:
    """Decode `count` string elements stored in `data`; return (elements, entry crc32c).

    Checks the length checksum and that the lengths account for `data` exactly before
    slicing anything out of it.

    Raises:
        CorruptCheckpointError: the lengths are malformed or disagree with the size.
    """
    view = memoryview(data)
    size = len(view)
    lengths: list[int] = []
    pos = 0
    try:
        for _ in range(count):
            length, pos = decode_varint(view, pos)
            lengths.append(length)
    except VarintError as err:
        raise CorruptCheckpointError(
            f"string tensor {where} has a malformed length ({err}); the file is damaged",
            file=file,
            key=key,
        ) from err
    if pos + 4 + sum(lengths) != size:
        raise CorruptCheckpointError(
            f"string tensor {where} declares {count} elements totalling {sum(lengths)} bytes, "
            f"which do not fit its stored size of {size} bytes; the index or data file is damaged",
            file=file,
            key=key,
        )
    (stored_len_crc,) = (struct.Struct(">I") if big_endian else _U32).unpack_from(view, pos)
    len_crc = _length_crc(lengths, big_endian)
    if stored_len_crc != mask(len_crc):
        raise CorruptCheckpointError(
            f"string tensor {where} failed its length checksum (stored 0x{stored_len_crc:08x}, "
            f"computed 0x{mask(len_crc):08x}); restore an earlier checkpoint",
            file=file,
            key=key,
        )
    crc = crc32c(view[pos : pos + 4], len_crc)
    pos += 4
    elements: list[bytes] = []
    for length in lengths:
        element = bytes(view[pos : pos + length])
        crc = crc32c(element, crc)
        elements.append(element)
        pos += length
    return elements, crc
