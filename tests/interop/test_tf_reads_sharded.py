"""TensorFlow reads and restores checkpoints that trackpoint's engine splits into data shards.

`write_bundle` (the engine behind every `Checkpoint.save`) spreads values over several
`.data-0000N-of-0000M` files, one per writer thread once a save is large. TensorFlow must
find every value in its shard at its offset: `tf.train.load_checkpoint` reads each one
with its dtype, shape and bytes (float32 values cover every bit pattern: NaN payloads,
-0.0, subnormals), and `tf.train.Checkpoint.restore` restores a sharded `Checkpoint.save`
into `tf.Variable`s. Each test first checks that the files really are several shards,
each holding data.
"""

from __future__ import annotations

import os
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import trackpoint
from tests._compare import assert_bitwise_equal
from tests.interop._values import DTYPE_SAMPLES, SHAPE_SAMPLES
from trackpoint.engine import write_bundle

pytestmark = pytest.mark.tf

MiB = 1 << 20


def _bit_patterns(count: int, seed: int) -> np.ndarray[Any, Any]:
    """float32 values whose bits run over the whole 32-bit space (NaNs, infs, -0.0 too)."""
    i = np.arange(seed, seed + count, dtype=np.uint64)
    bits = (i * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    values = bits.astype(np.uint32).view(np.float32)
    values[:4] = np.array([0x80000000, 0x7FC00001, 0xFF800000, 0x00000001], np.uint32).view(
        np.float32
    )  # -0.0, a NaN with a payload, -inf, the smallest subnormal
    return values


def _large_values(count: int) -> dict[str, np.ndarray[Any, Any]]:
    """Three values over the planner's small-value size, so each can fill its own shard."""
    return {
        "large/float32": _bit_patterns(count, 1).reshape(-1, 64),
        "large/int64": np.arange(count // 2, dtype=np.int64) * -(2**40),
        "large/bfloat16": _bit_patterns(count // 2, 7).view(np.uint16).view(ml_dtypes.bfloat16),
    }


def _data_files(prefix: str) -> list[str]:
    folder, name = os.path.split(prefix)
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(f"{name}.data-")
    )


def _assert_sharded(prefix: str, shards: int) -> None:
    files = _data_files(prefix)
    assert [f[-len("00000-of-00003") :] for f in files] == [
        f"{i:05d}-of-{shards:05d}" for i in range(shards)
    ]
    sizes = [os.path.getsize(f) for f in files]
    assert all(size > 0 for size in sizes), sizes  # every shard holds values


def _tf_value(value: Any) -> Any:
    # TF hands out a scalar string as `bytes`; everything else as a NumPy array or scalar.
    return np.array(value, dtype=object) if isinstance(value, bytes) else value


def _assert_tf_reads(tf: Any, prefix: str, expected: dict[str, Any]) -> None:
    reader = tf.train.load_checkpoint(prefix)
    listed = reader.get_variable_to_shape_map()
    assert set(expected) <= set(listed)
    for key, value in expected.items():
        assert listed[key] == list(np.shape(value)), key
        assert_bitwise_equal(_tf_value(reader.get_tensor(key)), value, key)


def test_tensorflow_reads_every_dtype_of_a_three_shard_write_bundle(tf, tmp_path):
    values = {sample.key: sample.value for sample in DTYPE_SAMPLES + SHAPE_SAMPLES}
    values.update(_large_values(MiB // 2))
    prefix = write_bundle(tmp_path / "bundle", list(values.items()), num_shards=3, threads=2)
    _assert_sharded(prefix, 3)
    _assert_tf_reads(tf, prefix, values)
    assert len(tf.train.load_checkpoint(prefix).get_variable_to_shape_map()) == len(values)


def _tf_module(tf: Any, values: dict[str, Any]) -> Any:
    """A tf.Module whose attributes are tf.Variables of each value's dtype and shape (zeros)."""
    module = tf.Module()
    for name, value in values.items():
        if value.dtype == object:
            initial = tf.constant(np.full(value.shape, b"", dtype=object), tf.string)
        else:
            initial = tf.zeros(value.shape, tf.as_dtype(value.dtype))
        setattr(module, name, tf.Variable(initial))
    return module


def _model_values(count: int) -> dict[str, Any]:
    values: dict[str, Any] = {
        name.replace("/", "_"): value for name, value in _large_values(count).items()
    }
    values["words"] = np.array([b"", "日本".encode(), b"\x00\xff"], dtype=object)
    values["flags"] = np.array([True, False, True])
    values["small"] = np.array([-0.0, 1.5], np.float64)
    values["step"] = np.array(12, np.int64)
    return values


@pytest.mark.parametrize(
    ("options", "shards", "count"),
    [
        (trackpoint.CheckpointOptions(num_shards=3), 3, MiB // 2),
        # The default policy: one shard per writer thread once a save is large (> 64 MiB).
        pytest.param(trackpoint.CheckpointOptions(threads=2), 2, 8 * MiB, marks=pytest.mark.slow),
    ],
    ids=["three_shards", "default_policy_two_threads"],
)
def test_tensorflow_restores_a_sharded_checkpoint_save_into_variables(
    tf, tmp_path, options, shards, count
):
    values = _model_values(count)
    model = trackpoint.Module()
    for name, value in values.items():
        setattr(model, name, trackpoint.Variable(value.copy()))
    prefix = trackpoint.Checkpoint(model=model).save(tmp_path / "ckpt", options)
    _assert_sharded(prefix, shards)
    _assert_tf_reads(
        tf, prefix, {f"model/{name}/.ATTRIBUTES/VARIABLE_VALUE": v for name, v in values.items()}
    )

    theirs = _tf_module(tf, values)
    tf_ckpt = tf.train.Checkpoint(model=theirs)
    status = tf_ckpt.restore(prefix)
    status.assert_consumed()
    status.assert_existing_objects_matched()
    assert int(tf_ckpt.save_counter.numpy()) == 1
    for name, value in values.items():
        assert_bitwise_equal(_tf_value(getattr(theirs, name).numpy()), value, name)
