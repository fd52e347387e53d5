"""TF DataType numbers ⇄ NumPy/ml_dtypes and TF's string encoding (format doc §4.4, §5.3)."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackpoint.errors import CorruptCheckpointError, NotTrackableError
from trackpoint.format._crc32c import crc32c, mask
from trackpoint.format._dtypes import (
    DTYPES_BY_ENUM,
    DType,
    _length_crc,
    as_dtype,
    decode_strings,
    dtype_from_enum,
    encode_strings,
    string_elements,
)

# (TF number, TF name, NumPy dtype or None, bytes per element) — the table of §4.4.
DTYPE_TABLE = [
    (1, "float32", np.float32, 4),
    (2, "float64", np.float64, 8),
    (3, "int32", np.int32, 4),
    (4, "uint8", np.uint8, 1),
    (5, "int16", np.int16, 2),
    (6, "int8", np.int8, 1),
    (7, "string", object, None),
    (8, "complex64", np.complex64, 8),
    (9, "int64", np.int64, 8),
    (10, "bool", np.bool_, 1),
    (11, "qint8", np.int8, 1),
    (12, "quint8", np.uint8, 1),
    (13, "qint32", np.int32, 4),
    (14, "bfloat16", ml_dtypes.bfloat16, 2),
    (15, "qint16", np.int16, 2),
    (16, "quint16", np.uint16, 2),
    (17, "uint16", np.uint16, 2),
    (18, "complex128", np.complex128, 16),
    (19, "float16", np.float16, 2),
    (20, "resource", None, None),
    (21, "variant", None, None),
    (22, "uint32", np.uint32, 4),
    (23, "uint64", np.uint64, 8),
    (24, "float8_e5m2", ml_dtypes.float8_e5m2, 1),
    (25, "float8_e4m3fn", ml_dtypes.float8_e4m3fn, 1),
    (26, "float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz, 1),
    (27, "float8_e4m3b11fnuz", ml_dtypes.float8_e4m3b11fnuz, 1),
    (28, "float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz, 1),
    (29, "int4", ml_dtypes.int4, 1),
    (30, "uint4", ml_dtypes.uint4, 1),
    (31, "int2", ml_dtypes.int2, 1),
    (32, "uint2", ml_dtypes.uint2, 1),
    (33, "float4_e2m1fn", ml_dtypes.float4_e2m1fn, 1),
]
QUANTIZED = {"qint8", "quint8", "qint32", "qint16", "quint16"}
NUMERIC = [row for row in DTYPE_TABLE if row[2] not in (None, object) and row[1] not in QUANTIZED]


def test_table_covers_every_dtype_tf_writes():
    assert sorted(DTYPES_BY_ENUM) == list(range(1, 34))


@pytest.mark.parametrize(
    ("enum", "name", "np_dtype", "itemsize"), DTYPE_TABLE, ids=[row[1] for row in DTYPE_TABLE]
)
def test_dtype_by_name_and_number(enum, name, np_dtype, itemsize):
    dtype = as_dtype(name)
    assert dtype.enum == enum
    assert dtype.name == name
    assert dtype == name
    assert dtype_from_enum(enum) is dtype
    assert dtype.itemsize == itemsize
    assert dtype.is_string == (name == "string")
    if np_dtype is None:
        assert dtype.numpy is None
    else:
        assert dtype.numpy == np.dtype(np_dtype)


@pytest.mark.parametrize(
    ("enum", "name", "np_dtype", "itemsize"), NUMERIC, ids=[row[1] for row in NUMERIC]
)
def test_dtype_from_numpy_dtype(enum, name, np_dtype, itemsize):
    dtype = as_dtype(np.dtype(np_dtype))
    assert dtype.enum == enum
    assert dtype == name
    assert as_dtype(np_dtype) is dtype  # the scalar type works as well
    assert np.dtype(np_dtype).itemsize == itemsize


@pytest.mark.parametrize(
    ("enum", "name", "np_dtype", "itemsize"),
    [row for row in NUMERIC if np.dtype(row[2]).itemsize > 1 and np.dtype(row[2]).kind in "iufc"],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_big_endian_numpy_dtype_maps_to_the_same_tf_dtype(enum, name, np_dtype, itemsize):
    assert as_dtype(np.dtype(np_dtype).newbyteorder(">")).enum == enum


@pytest.mark.parametrize(
    ("alias", "name"),
    [("half", "float16"), ("float", "float32"), ("double", "float64")],
    ids=["half", "float", "double"],
)
def test_tf_aliases_name_their_dtype(alias, name):
    assert as_dtype(alias) == name


@pytest.mark.parametrize(
    "value", [np.dtype("S3"), np.dtype("U2"), np.dtype(object)], ids=["bytes", "unicode", "object"]
)
def test_string_like_numpy_dtypes_are_tf_strings(value):
    assert as_dtype(value) == "string"


@pytest.mark.parametrize(
    "value",
    [np.dtype("datetime64[s]"), np.dtype("V4"), "no_such_dtype", 3.5],
    ids=["datetime", "void", "unknown-name", "not-a-dtype"],
)
def test_as_dtype_refuses_dtypes_tf_cannot_hold(value):
    with pytest.raises(NotTrackableError, match="TensorFlow"):
        as_dtype(value)


def test_as_dtype_passes_dtype_objects_through():
    dtype = as_dtype("int4")
    assert as_dtype(dtype) is dtype


def test_dtype_equality_hash_and_text():
    a = as_dtype("float32")
    assert a == as_dtype(np.float32)
    assert a != as_dtype("float64")
    assert a != "float64"
    assert a != 1  # a number is not a dtype name
    assert len({a, as_dtype("float32"), DType(1, "float32", np.dtype(np.float32))}) == 1
    assert str(a) == "float32"
    assert repr(a) == "trackpoint.DType('float32')"


def test_unknown_dtype_numbers_are_none():
    assert dtype_from_enum(0) is None
    assert dtype_from_enum(101) is None  # a _REF twin is never stored
    assert dtype_from_enum(34) is None


@pytest.mark.parametrize(
    ("np_dtype", "values", "stored"),
    [
        (ml_dtypes.int4, [-2, 7, -8], "0e 07 08"),
        (ml_dtypes.int2, [-1, 1, -2], "03 01 02"),
        (ml_dtypes.uint4, [15, 0], "0f 00"),
    ],
    ids=["int4", "int2", "uint4"],
)
def test_sub_byte_types_are_one_value_per_byte_in_the_low_bits(np_dtype, values, stored):
    array = np.array(values, dtype=np_dtype)
    assert array.view(np.uint8).tobytes().hex(" ") == stored


# -- strings ----------------------------------------------------------------------------


def encoded(elements: list[bytes]) -> tuple[bytes, int]:
    header, crc = encode_strings(elements)
    return header + b"".join(elements), crc


def decode(data: bytes, count: int, **kwargs: bool) -> tuple[list[bytes], int]:
    return decode_strings(data, count, where="'s'", key="s", file="t.data", **kwargs)


def test_string_scalar_encoding_matches_tf():
    data, _ = encoded([b"hello"])
    assert data.hex(" ") == "05 d9 c6 9c 43 68 65 6c 6c 6f"
    assert decode(data, 1)[0] == [b"hello"]


def test_empty_string_tensor_is_just_the_masked_zero_crc():
    data, crc = encoded([])
    assert data.hex(" ") == "d8 ea 82 a2"
    assert decode(data, 0) == ([], crc)


def test_string_worked_example_of_the_format_doc():
    # §3.4: string ["hi", ""] is stored as 02 00 | 78 27 0b 34 | 68 69, entry crc 0xed489e9e.
    data, crc = encoded([b"hi", b""])
    assert data.hex(" ") == "02 00 78 27 0b 34 68 69"
    assert mask(crc) == 0xED489E9E


def test_long_string_has_a_two_byte_length():
    data, _ = encoded([b"x" * 200])
    assert data[:2].hex(" ") == "c8 01"
    assert len(data) == 2 + 4 + 200


def test_string_entry_crc_continues_over_the_length_crc_and_the_elements():
    elements = [b"ab", b"", b"\x00\xff"]
    data, crc = encoded(elements)
    lengths_crc = crc32c(struct.pack("<III", 2, 0, 2))
    assert data[3:7] == struct.pack("<I", mask(lengths_crc))
    assert crc == crc32c(b"ab\x00\xff", crc32c(data[3:7], lengths_crc))


def test_length_crc_hashes_huge_lengths_as_u64():
    assert _length_crc([2**32], big_endian=False) == crc32c(struct.pack("<Q", 2**32))
    assert _length_crc([5], big_endian=True) == crc32c(struct.pack(">I", 5))


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_strings_round_trip(elements):
    data, crc = encoded(elements)
    assert decode(data, len(elements)) == (elements, crc)


def test_big_endian_strings_hash_lengths_big_endian():
    elements = [b"abc", b"de"]
    lengths_crc = crc32c(struct.pack(">II", 3, 2))
    data = b"\x03\x02" + struct.pack(">I", mask(lengths_crc)) + b"abcde"
    got, _ = decode(data, 2, big_endian=True)
    assert got == elements
    with pytest.raises(CorruptCheckpointError, match="length checksum"):
        decode(data, 2)


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (encoded([b"hello"])[0] + b"!", 1),
        (encoded([b"hello"])[0][:-1], 1),
        (encoded([b"ab", b"cd"])[0], 1),
        (b"\x05" + struct.pack("<I", mask(crc32c(struct.pack("<I", 5)))) + b"hi", 1),
        (b"\xff\xff\xff\xff\x0f" + b"\x00" * 4, 1),
    ],
    ids=["extra-byte", "missing-byte", "fewer-elements", "length-past-size", "huge-length"],
)
def test_decode_rejects_lengths_that_do_not_sum_to_the_size(data, count):
    with pytest.raises(CorruptCheckpointError, match="do not fit its stored size") as info:
        decode(data, count)
    assert info.value.file == "t.data"
    assert info.value.key == "s"


def test_decode_rejects_more_elements_than_lengths():
    data, _ = encoded([b"ab"])
    with pytest.raises(CorruptCheckpointError) as info:
        decode(data, 5)
    assert info.value.key == "s"


def test_decode_rejects_a_bad_length_crc():
    data = bytearray(encoded([b"hello"])[0])
    data[2] ^= 0x01  # inside the masked length checksum
    with pytest.raises(CorruptCheckpointError, match="failed its length checksum") as info:
        decode(bytes(data), 1)
    assert (info.value.file, info.value.key) == ("t.data", "s")


def test_decode_rejects_a_truncated_length_varint():
    with pytest.raises(CorruptCheckpointError, match="malformed length") as info:
        decode(b"\x80\x80", 1)
    assert info.value.key == "s"


def test_decode_reports_a_damaged_element_through_its_crc():
    data, crc = encoded([b"hello"])
    damaged = data[:-1] + b"O"
    elements, computed = decode(damaged, 1)
    assert elements == [b"hellO"]
    assert computed != crc


def object_array(*items: object) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array(["a", "é"], dtype=object), [b"a", "é".encode()]),
        (np.array([b"x\x00", b""], dtype=object), [b"x\x00", b""]),
        (np.array([[b"a", b"b"], [b"c", b"d"]], dtype="S1"), [b"a", b"b", b"c", b"d"]),
        (np.array(["ü"], dtype="U1"), ["ü".encode()]),
        (object_array(bytearray(b"z"), memoryview(b"y")), [b"z", b"y"]),
    ],
    ids=["str-objects", "bytes-objects", "S-2d", "U", "bytearray-memoryview"],
)
def test_string_elements_are_bytes_in_c_order(array, expected):
    assert string_elements(array) == expected


def test_string_elements_refuse_other_objects():
    with pytest.raises(NotTrackableError, match="holds a int"):
        string_elements(np.array([b"a", 3], dtype=object))
