"""`assert_bitwise_equal`: two arrays hold the same dtype, shape and bytes.

`np.testing.assert_array_equal` compares values: it passes float32 against float64,
-0.0 against 0.0 and any NaN against any other NaN, so a test that claims "bit for bit"
with it cannot see a cast, a lost sign or a rewritten NaN payload. This compares what a
checkpoint stores: the dtype (ml_dtypes included), the shape and the element bytes; for
object arrays (TF's strings), each element's type and value.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_bitwise_equal(actual: Any, expected: Any, what: str) -> None:
    """Fail unless `actual` and `expected` have the same dtype, shape and bytes.

    Args:
        actual: A NumPy array or scalar (convert tensors of other libraries first, so that
            no conversion here can hide a dtype difference).
        expected: The same.
        what: What is compared (a key, a path), for the message.

    Raises:
        AssertionError: naming `what`, the first differing element and its bit patterns.
        TypeError: an argument is not a NumPy array or scalar.
    """
    a, b = _array(actual, "actual", what), _array(expected, "expected", what)
    if a.dtype != b.dtype:
        raise AssertionError(f"{what}: dtype {a.dtype} != expected {b.dtype}")
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {b.shape}")
    if a.dtype.hasobject:
        _assert_same_objects(a, b, what)
        return
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.tobytes() == b.tobytes():
        return
    # Equal sizes, so a nonzero item size: compare element by element for the message.
    width = a.dtype.itemsize
    a_bytes = a.reshape(-1).view(np.uint8).reshape(-1, width)
    b_bytes = b.reshape(-1).view(np.uint8).reshape(-1, width)
    differs = np.flatnonzero((a_bytes != b_bytes).any(axis=1))
    first = int(differs[0])
    index = np.unravel_index(first, a.shape) if a.shape else ()
    raise AssertionError(
        f"{what}: {differs.size} of {a.size} elements differ in their bytes; first at "
        f"{tuple(int(i) for i in index)}: {a.reshape(-1)[first]!r} "
        f"(0x{a_bytes[first].tobytes().hex()}) != expected {b.reshape(-1)[first]!r} "
        f"(0x{b_bytes[first].tobytes().hex()})"
    )


def _array(value: Any, name: str, what: str) -> np.ndarray[Any, Any]:
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(
            f"{what}: {name} is a {type(value).__qualname__}, not a NumPy array; convert it "
            "first (tensor.numpy()), so that the dtype compared is the one it has"
        )
    return np.asarray(value)


def _assert_same_objects(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], what: str) -> None:
    for i, (x, y) in enumerate(zip(a.reshape(-1), b.reshape(-1), strict=True)):
        if not _same_object(x, y):
            index = np.unravel_index(i, a.shape) if a.shape else ()
            raise AssertionError(
                f"{what}: element {tuple(int(j) for j in index)} is {x!r} "
                f"({type(x).__qualname__}) != expected {y!r} ({type(y).__qualname__})"
            )


def _same_object(x: object, y: object) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, (np.ndarray, np.generic, float, complex)):
        # Floats by their bits: -0.0 == 0.0 and NaN != NaN as values.
        try:
            assert_bitwise_equal(np.asarray(x), np.asarray(y), "")
        except AssertionError:
            return False
        return True
    return bool(x == y)
