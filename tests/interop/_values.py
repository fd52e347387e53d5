"""Sample tensors of every dtype TF checkpoints hold, and TF-vs-trackpoint value comparison.

Shared by the interop tests. Nothing here imports TensorFlow: TF readers are passed in.
Values of exotic dtypes are compared by their bytes, since TF hands out ml_dtypes arrays
(and plain integer arrays for the quantized dtypes).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ml_dtypes
import numpy as np


class Sample(NamedTuple):
    """One tensor to write: its key, value and (for quantized dtypes) the TF dtype name."""

    key: str
    value: Any
    dtype: str | None = None

    @property
    def dtype_name(self) -> str:
        if self.dtype is not None:
            return self.dtype
        if self.value.dtype == object:
            return "string"
        return str(self.value.dtype)


def _ml(name: str, values: list[float]) -> Any:
    return np.array(values, np.float32).astype(getattr(ml_dtypes, name))


def strings(*items: bytes | str, shape: tuple[int, ...] | None = None) -> Any:
    """An object array of bytes (str items are UTF-8 encoded)."""
    out = np.empty(len(items), dtype=object)
    out[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in items]
    return out.reshape(shape if shape is not None else (len(items),))


#: One tensor per dtype (key = TF's dtype name), with edge values of each.
DTYPE_SAMPLES = [
    Sample("float16", np.array([1.0, -2.5, 65504.0, np.inf, -0.0, 6e-8], np.float16)),
    Sample("bfloat16", _ml("bfloat16", [1.0, -2.5, 3.140625, -np.inf, 1e38])),
    Sample("float32", np.array([[1.5, -2.0], [3.25, 1e-8], [np.nan, -np.inf]], np.float32)),
    Sample("float64", np.array([np.pi, -np.e, 5e-324, np.nan])),
    Sample("float8_e5m2", _ml("float8_e5m2", [1, -2, 0.5, 0, 57344, -np.inf])),
    Sample("float8_e4m3fn", _ml("float8_e4m3fn", [1, -2, 0.5, 0, 448, -448])),
    Sample("float8_e4m3fnuz", _ml("float8_e4m3fnuz", [1, -2, 0.5, 0, 240])),
    Sample("float8_e4m3b11fnuz", _ml("float8_e4m3b11fnuz", [1, -2, 0.5, 0, 30])),
    Sample("float8_e5m2fnuz", _ml("float8_e5m2fnuz", [1, -2, 0.5, 0, 57344])),
    Sample("float4_e2m1fn", _ml("float4_e2m1fn", [1, -2, 0.5, 0, 6, -6])),
    Sample("int4", np.array([-8, -2, -1, 0, 1, 7]).astype(ml_dtypes.int4)),
    Sample("uint4", np.array([0, 1, 9, 15]).astype(ml_dtypes.uint4)),
    Sample("int2", np.array([-2, -1, 0, 1]).astype(ml_dtypes.int2)),
    Sample("uint2", np.array([0, 1, 2, 3]).astype(ml_dtypes.uint2)),
    Sample("int8", np.array([-128, -1, 0, 127], np.int8)),
    Sample("int16", np.array([-32768, 1, 32767], np.int16)),
    Sample("int32", np.array([-(2**31), 7, 2**31 - 1], np.int32)),
    Sample("int64", np.array([-(2**63), 42, 2**63 - 1], np.int64)),
    Sample("uint8", np.array([0, 1, 255], np.uint8)),
    Sample("uint16", np.array([0, 65535], np.uint16)),
    Sample("uint32", np.array([0, 2**32 - 1], np.uint32)),
    Sample("uint64", np.array([0, 2**64 - 1], np.uint64)),
    Sample("bool", np.array([[True, False], [False, True]])),
    Sample("complex64", np.array([1 + 2j, -3.5 - 0.5j], np.complex64)),
    Sample("complex128", np.array([1e-300 + 1j, complex(-np.inf, np.nan)])),
    Sample(
        "string",
        strings("", "héllo wörld", "日本語", "x" * 200, b"ab\x00", b"\x00\x00", b"\xff\xfe"),
    ),
]

#: The quantized dtypes: integer arrays written under TF's quantized names.
QUANTIZED_SAMPLES = [
    Sample("qint8", np.array([-128, 0, 127], np.int8), "qint8"),
    Sample("quint8", np.array([0, 1, 255], np.uint8), "quint8"),
    Sample("qint16", np.array([-32768, 0, 32767], np.int16), "qint16"),
    Sample("quint16", np.array([0, 1, 65535], np.uint16), "quint16"),
    Sample("qint32", np.array([-(2**31), 0, 2**31 - 1], np.int32), "qint32"),
]

#: Scalars, zero-size and high-rank tensors, and awkward strings.
SHAPE_SAMPLES = [
    Sample("scalar/float32", np.array(3.5, np.float32)),
    Sample("scalar/int64", np.array(-7, np.int64)),
    Sample("scalar/bool", np.array(True)),
    Sample("scalar/bfloat16", np.array(1.5, ml_dtypes.bfloat16)),
    Sample("scalar/string", strings("hello", shape=())),
    Sample("scalar/empty_string", strings(b"", shape=())),
    Sample("zero_size/float32", np.zeros((0, 3), np.float32)),
    Sample("zero_size/int8", np.zeros((2, 0, 4), np.int8)),
    Sample("zero_size/string", strings()),
    Sample("six_d/int32", np.arange(64, dtype=np.int32).reshape(2, 2, 2, 2, 2, 2)),
    Sample("six_d/float16", np.arange(64, dtype=np.float16).reshape(1, 2, 4, 2, 4, 1)),
    Sample("strings/2d", strings("a", "", "日本", b"\x00", shape=(2, 2))),
    Sample("strings/nul_endings", strings(b"\x00", b"a\x00", b"a\x00\x00", b"\x00b\x00")),
    Sample("strings/one_mb", strings(bytes(range(256)) * 4096, shape=())),
]


def value_bytes(value: Any) -> bytes:
    """A numeric value's bytes in row-major order (any dtype, scalars included)."""
    return np.ascontiguousarray(value).reshape(-1).view(np.uint8).tobytes()


def string_items(value: Any) -> list[bytes]:
    """A string value's elements in row-major order (TF gives `bytes` for a scalar)."""
    return [bytes(item) for item in np.asarray(value, dtype=object).reshape(-1)]


def same_value(a: Any, b: Any, dtype_name: str) -> bool:
    """Whether two values hold the same elements (strings) or the same bytes (the rest)."""
    if dtype_name == "string":
        return string_items(a) == string_items(b)
    return value_bytes(a) == value_bytes(b)


def reader_mismatches(tf_reader: Any, ours: Any) -> list[str]:
    """Differences between TF's `CheckpointReader` and trackpoint's over TF's listing."""
    problems: list[str] = []
    tf_shapes = tf_reader.get_variable_to_shape_map()
    tf_dtypes = tf_reader.get_variable_to_dtype_map()
    our_shapes = ours.get_variable_to_shape_map()
    our_dtypes = ours.get_variable_to_dtype_map()
    if not tf_shapes:
        problems.append("TF lists no keys: nothing was compared")
    if set(tf_shapes) != set(our_shapes):
        problems.append(f"keys: TF {sorted(tf_shapes)} != trackpoint {sorted(our_shapes)}")
    for key in sorted(set(tf_shapes) & set(our_shapes)):
        name = tf_dtypes[key].name
        if str(our_dtypes[key]) != name:
            problems.append(f"{key}: dtype {our_dtypes[key]} != TF's {name}")
        if list(our_shapes[key]) != list(tf_shapes[key]):
            problems.append(f"{key}: shape {our_shapes[key]} != TF's {tf_shapes[key]}")
        if name == "variant":
            continue
        ours_value = ours.get_tensor(key)
        if list(ours_value.shape) != list(tf_shapes[key]):
            problems.append(f"{key}: array shape {list(ours_value.shape)}")
        if not same_value(tf_reader.get_tensor(key), ours_value, name):
            problems.append(f"{key}: values differ from TF's")
    return problems
