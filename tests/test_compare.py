"""The tests' `assert_bitwise_equal` sees what `assert_array_equal` lets through."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from tests._compare import assert_bitwise_equal


def _with_nan(payload: int) -> np.ndarray[Any, Any]:
    bits = np.array([0x3F800000, 0x7FC00000 | payload], np.uint32)  # [1.0, NaN(payload)]
    return bits.view(np.float32)


#: Pairs that compare equal as values but differ in what a checkpoint stores.
VALUE_EQUAL_BIT_DIFFERENT = {
    "negative_zero": (np.array([1.0, -0.0], np.float32), np.array([1.0, 0.0], np.float32)),
    "nan_payload": (_with_nan(1), _with_nan(0)),
    "float32_vs_float64": (np.array([0.5, 2.0], np.float32), np.array([0.5, 2.0], np.float64)),
    "bfloat16_vs_float32": (
        np.array([0.5, 2.0], np.float32).astype(ml_dtypes.bfloat16),
        np.array([0.5, 2.0], np.float32),
    ),
    "bfloat16_negative_zero": (
        np.array([-0.0], np.float32).astype(ml_dtypes.bfloat16),
        np.array([0.0], np.float32).astype(ml_dtypes.bfloat16),
    ),
    "int64_vs_int32": (np.arange(3, dtype=np.int64), np.arange(3, dtype=np.int32)),
    "float_objects_negative_zero": (
        np.array([b"a", -0.0], dtype=object),
        np.array([b"a", 0.0], dtype=object),
    ),
}


@pytest.mark.parametrize("case", list(VALUE_EQUAL_BIT_DIFFERENT))
def test_values_equal_as_numbers_but_not_as_bits_fail(case: str) -> None:
    actual, expected = VALUE_EQUAL_BIT_DIFFERENT[case]
    np.testing.assert_array_equal(actual, expected)  # what the old checks accepted
    with pytest.raises(AssertionError, match=r"^w: "):
        assert_bitwise_equal(actual, expected, "w")


def test_a_lost_sign_names_the_element_and_its_bits() -> None:
    actual = np.array([[1.0, 2.0], [3.0, -0.0]], np.float32)
    expected = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    with pytest.raises(AssertionError) as info:
        assert_bitwise_equal(actual, expected, "model/w")
    message = str(info.value)
    assert message.startswith("model/w: 1 of 4 elements differ")
    assert "(1, 1)" in message
    assert "0x00000080" in message  # -0.0 as little-endian float32 bytes
    assert "0x00000000" in message


def test_dtype_and_shape_differences_are_named() -> None:
    with pytest.raises(AssertionError, match="dtype float32 != expected float64"):
        assert_bitwise_equal(np.zeros(2, np.float32), np.zeros(2), "k")
    with pytest.raises(AssertionError, match=r"shape \(1, 2\) != expected \(2,\)"):
        assert_bitwise_equal(np.zeros((1, 2)), np.zeros(2), "k")


def test_strings_compare_by_type_and_value() -> None:
    ours = np.array([b"x", b"yz"], dtype=object)
    assert_bitwise_equal(ours, np.array([b"x", b"yz"], dtype=object), "s")
    with pytest.raises(AssertionError, match=r"element \(1,\) is 'yz' \(str\)"):
        assert_bitwise_equal(np.array([b"x", "yz"], dtype=object), ours, "s")
    with pytest.raises(AssertionError, match=r"element \(0,\)"):
        assert_bitwise_equal(np.array([b"X", b"yz"], dtype=object), ours, "s")


def test_identical_bits_pass_including_nan_and_negative_zero() -> None:
    value = _with_nan(5).copy()
    value[0] = -0.0
    assert_bitwise_equal(value, value.copy(), "w")
    grid = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert_bitwise_equal(grid[:, ::2], np.ascontiguousarray(grid[:, ::2]), "strided")
    low = np.array([1, -2, 0.5], np.float32).astype(ml_dtypes.float8_e4m3fn)
    assert_bitwise_equal(low, low.copy(), "float8")
    assert_bitwise_equal(np.float32(-0.0), np.float32(-0.0), "scalar")


def test_anything_but_numpy_is_refused_rather_than_converted() -> None:
    with pytest.raises(TypeError, match="not a NumPy array"):
        assert_bitwise_equal([1.0], np.array([1.0]), "w")
