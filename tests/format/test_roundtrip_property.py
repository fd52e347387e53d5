"""Property: any values under any keys in any number of shards read back bit for bit.

Reliability doc §4.5, property 1: dtypes of every family, shapes including scalars and
zero-size, unicode keys with long shared prefixes, 1 to 4 shards, both writers (the streaming
`BundleWriter` and the engine's parallel `write_bundle`).
"""

from __future__ import annotations

import tempfile
from typing import Any

import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trackpoint.engine import write_bundle
from trackpoint.format import BundleReader, BundleWriter

NUMERIC = [
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.int8),
    np.dtype(np.int16),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.uint32),
    np.dtype(np.uint64),
    np.dtype(np.bool_),
    np.dtype(np.complex64),
    np.dtype(np.complex128),
]
BITS = [np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn)]

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def values(draw: st.DrawFn) -> np.ndarray:
    kind = draw(st.sampled_from(["numeric", "bits", "string"]))
    shape = draw(shapes)
    if kind == "numeric":
        numeric: np.dtype[Any] = draw(st.sampled_from(NUMERIC))
        return draw(hnp.arrays(numeric, shape))
    if kind == "bits":
        # Any bit pattern, NaNs and all: the bytes must survive, not only the numbers.
        dtype = draw(st.sampled_from(BITS))
        raw = draw(hnp.arrays(np.dtype(f"u{dtype.itemsize}"), shape))
        return raw.view(dtype)
    count = int(np.prod(shape))
    items = draw(st.lists(st.binary(max_size=40), min_size=count, max_size=count))
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


# Keys share long prefixes (as `model/layer_3/kernel/.ATTRIBUTES/...` do) and use any
# characters but a leading NUL (reserved for the header).
key_parts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
keys = st.builds(lambda a, b: f"model/{a}/.ATTRIBUTES/{b}", key_parts, key_parts)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if want.dtype == object:
        return got.shape == want.shape and list(got.reshape(-1)) == list(want.reshape(-1))
    return (
        got.dtype == want.dtype
        and got.shape == want.shape
        and got.tobytes() == np.ascontiguousarray(want).tobytes()
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.dictionaries(keys, values(), min_size=1, max_size=12),
    num_shards=st.integers(1, 4),
    engine=st.booleans(),
)
def test_any_values_round_trip_bit_for_bit(items, num_shards, engine):
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/ckpt"
        if engine:
            write_bundle(prefix, list(items.items()), num_shards=num_shards, threads=2)
        else:
            with BundleWriter(prefix, num_shards=num_shards) as writer:
                for key, value in items.items():
                    writer.add(key, value)
        with BundleReader(prefix) as reader:
            assert sorted(info.key for info in reader.infos()) == sorted(items)
            for key, want in items.items():
                got = reader.get_tensor(key)
                assert _same(got, want), key
            assert all(error is None for _, error in reader.verify())
