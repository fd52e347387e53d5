"""TensorFlow reads what trackpoint's BundleWriter and state-file writer write.

Every dtype, awkward shapes and strings, several shards, sliced tensors that TF must
reassemble, and a folder whose `checkpoint` file trackpoint wrote (TF's
`latest_checkpoint`, `list_variables`, `get_checkpoint_state` and `CheckpointManager`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from tests.interop._values import (
    DTYPE_SAMPLES,
    QUANTIZED_SAMPLES,
    SHAPE_SAMPLES,
    same_value,
    strings,
)
from trackpoint.format import BundleWriter, write_checkpoint_state

pytestmark = pytest.mark.tf

SAMPLES = DTYPE_SAMPLES + QUANTIZED_SAMPLES + SHAPE_SAMPLES
BY_KEY = {sample.key: sample for sample in SAMPLES}

#: Partitioned tensors: full value, and the (start, length|None) extents and shard of each
#: slice, as TF1 partitioned variables and MaxShardSizePolicy write them.
SLICED: dict[str, tuple[Any, list[Any]]] = {
    "sliced/rows_and_pieces": (
        np.arange(24, dtype=np.float32).reshape(6, 4),
        [
            (((0, 2), (0, None)), 0),
            (((2, 2), (0, None)), 1),
            (((4, 2), (0, 1)), 1),
            (((4, 2), (1, 3)), 2),
        ],
    ),
    "sliced/vector": (
        np.arange(10, dtype=np.int64),
        [(((0, 2),), 2), (((2, 4),), 0), (((6, 1),), 1), (((7, 3),), 2)],
    ),
    "sliced/columns": (
        np.arange(12, dtype=np.float64).reshape(3, 4) - 5.5,
        [(((0, None), (0, 1)), 1), (((0, None), (1, 3)), 0)],
    ),
    "sliced/bfloat16": (
        np.arange(10, dtype=np.float32).reshape(5, 2).astype(ml_dtypes.bfloat16),
        [(((0, 3), (0, None)), 0), (((3, 2), (0, None)), 2)],
    ),
}
#: Plain tensors of the 3-shard bundle and the shard each goes to.
SHARDED_PLAIN = [
    ("a/float32", np.linspace(-1, 1, 7, dtype=np.float32), 2),
    ("b/strings", strings("zero", "", "二"), 1),
    ("c/int8", np.array([[1, -2], [3, -4]], np.int8), 0),
    ("d/float8", np.array([1, -2], np.float32).astype(ml_dtypes.float8_e4m3fn), 2),
]


@pytest.fixture(scope="module")
def all_dtypes_prefix(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("ours") / "all")
    with BundleWriter(prefix) as writer:
        for sample in SAMPLES:
            writer.add(sample.key, sample.value, dtype=sample.dtype)
    return prefix


@pytest.fixture(scope="module")
def tf_reader(tf, all_dtypes_prefix):
    return tf.train.load_checkpoint(all_dtypes_prefix)


@pytest.fixture(scope="module")
def sharded_prefix(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("ours") / "sharded")
    with BundleWriter(prefix, num_shards=3) as writer:
        for key, value, shard in SHARDED_PLAIN:
            writer.add(key, value, shard=shard)
        for key, (full, parts) in SLICED.items():
            for extents, shard in parts:
                index = tuple(
                    slice(start, None if length is None else start + length)
                    for start, length in extents
                )
                writer.add_slice(key, full.shape, extents, full[index], shard=shard)
    return prefix


def test_tensorflow_lists_our_keys_dtypes_and_shapes(tf_reader):
    dtypes = {key: dtype.name for key, dtype in tf_reader.get_variable_to_dtype_map().items()}
    shapes = {key: list(shape) for key, shape in tf_reader.get_variable_to_shape_map().items()}

    assert dtypes == {s.key: s.dtype_name for s in SAMPLES}
    assert shapes == {s.key: list(s.value.shape) for s in SAMPLES}


@pytest.mark.parametrize("key", list(BY_KEY), ids=list(BY_KEY))
def test_tensorflow_reads_our_value(tf_reader, key):
    sample = BY_KEY[key]

    value = tf_reader.get_tensor(key)

    assert np.shape(value) == sample.value.shape
    assert same_value(value, sample.value, sample.dtype_name)


def test_tensorflow_reads_quantized_values_as_their_integers(tf_reader):
    for sample in QUANTIZED_SAMPLES:
        assert np.asarray(tf_reader.get_tensor(sample.key)).tolist() == sample.value.tolist()


def test_tensorflow_reads_our_three_shards(tf, sharded_prefix):
    names = sorted(os.listdir(os.path.dirname(sharded_prefix)))
    assert [n for n in names if ".data-" in n] == [
        f"sharded.data-0000{i}-of-00003" for i in range(3)
    ]
    reader = tf.train.load_checkpoint(sharded_prefix)

    for key, value, _ in SHARDED_PLAIN:
        got = reader.get_tensor(key)
        assert np.shape(got) == value.shape
        assert same_value(got, value, "string" if value.dtype == object else "numeric"), key


@pytest.mark.parametrize("key", list(SLICED), ids=list(SLICED))
def test_tensorflow_reassembles_our_slices(tf, sharded_prefix, key):
    full, _ = SLICED[key]
    reader = tf.train.load_checkpoint(sharded_prefix)

    got = reader.get_tensor(key)

    assert reader.get_variable_to_shape_map()[key] == list(full.shape)
    assert reader.get_variable_to_dtype_map()[key].name == str(full.dtype)
    assert np.shape(got) == full.shape
    assert same_value(got, full, "numeric")


def test_tensorflow_lists_only_full_keys_of_our_slices(tf, sharded_prefix):
    listed = tf.train.list_variables(sharded_prefix)

    assert listed == sorted(
        [(key, list(value.shape)) for key, value, _ in SHARDED_PLAIN]
        + [(key, list(full.shape)) for key, (full, _) in SLICED.items()]
    )


@pytest.fixture
def managed_folder(tmp_path):
    """ckpt-1 and ckpt-2 written by trackpoint, and a state file with manager timestamps."""
    stamps = [time.time() - 60.0, time.time() - 30.0]
    preserved = stamps[0] - 1.0
    for n in (1, 2):
        with BundleWriter(tmp_path / f"ckpt-{n}") as writer:
            writer.add("w", np.full(3, n, np.float32))
            writer.add("step", np.array(n, np.int64))
    write_checkpoint_state(
        tmp_path,
        tmp_path / "ckpt-2",
        [tmp_path / "ckpt-1", tmp_path / "ckpt-2"],
        stamps,
        preserved,
    )
    return tmp_path, stamps, preserved


def test_tensorflow_follows_our_state_file(tf, managed_folder):
    folder, stamps, preserved = managed_folder

    state = tf.train.get_checkpoint_state(str(folder))

    assert tf.train.latest_checkpoint(str(folder)) == str(folder / "ckpt-2")
    assert tf.train.list_variables(str(folder)) == [("step", []), ("w", [3])]
    assert tf.train.load_checkpoint(str(folder)).get_tensor("step") == 2
    assert state.model_checkpoint_path == str(folder / "ckpt-2")
    assert list(state.all_model_checkpoint_paths) == [
        str(folder / "ckpt-1"),
        str(folder / "ckpt-2"),
    ]
    assert list(state.all_model_checkpoint_timestamps) == stamps
    assert state.last_preserved_timestamp == preserved


def test_tensorflow_manager_continues_our_folder_and_deletes_the_oldest(tf, managed_folder):
    # TF's manager adopts only checkpoints whose timestamp is later than
    # last_preserved_timestamp (format doc §1.3): ours must be, for ckpt-1 to be rotated out.
    folder, _, _ = managed_folder
    checkpoint = tf.train.Checkpoint(w=tf.Variable(np.zeros(3, np.float32)))
    manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=2)
    assert manager.checkpoints == [str(folder / "ckpt-1"), str(folder / "ckpt-2")]

    manager.save(checkpoint_number=3)

    assert manager.checkpoints == [str(folder / "ckpt-2"), str(folder / "ckpt-3")]
    assert not (folder / "ckpt-1.index").exists()
    assert (folder / "ckpt-2.index").exists()
