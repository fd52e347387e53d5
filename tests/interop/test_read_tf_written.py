"""trackpoint reads what TensorFlow writes at test time exactly as TF's own reader does.

Each checkpoint kind TF writes (object-based `Checkpoint.save`, `CheckpointManager`,
`MaxShardSizePolicy` shards with sliced variables, a TF1 `Saver` with a partitioned
variable, a SavedModel) is compared key by key over everything `tf.train.load_checkpoint`
lists: dtype name, shape, and values (bytes for numbers, elements for strings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.interop._values import (
    DTYPE_SAMPLES,
    QUANTIZED_SAMPLES,
    SHAPE_SAMPLES,
    reader_mismatches,
    strings,
)
from trackpoint.format import read_checkpoint_state
from trackpoint.reader import latest_checkpoint, list_variables, load_checkpoint

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.tf

#: tf.Variable cannot hold these on CPU (no AssignVariableOp kernel); SaveV2 covers them.
NOT_VARIABLE_CAPABLE = {
    "float8_e4m3fnuz",
    "float8_e4m3b11fnuz",
    "float8_e5m2fnuz",
    "qint16",
    "quint16",
}
VARIABLE_SAMPLES = [
    s
    for s in DTYPE_SAMPLES + QUANTIZED_SAMPLES + SHAPE_SAMPLES
    if s.key not in NOT_VARIABLE_CAPABLE
]


def _compare(tf: Any, tf_prefix: Path | str, ours_path: Path) -> list[str]:
    """TF's reading of `tf_prefix` against trackpoint's reading of `ours_path`."""
    with load_checkpoint(ours_path) as ours:
        return reader_mismatches(tf.train.load_checkpoint(str(tf_prefix)), ours)


@pytest.fixture(scope="module")
def module_folder(tf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("module")
    module = tf.Module()
    for sample in VARIABLE_SAMPLES:
        value = tf.constant(sample.value, dtype=sample.dtype)
        setattr(module, sample.key.replace("/", "_"), tf.Variable(value))
    module.nested = tf.Module()
    module.nested.items = {"a/b.c": tf.Variable(1.0), "list": [tf.Variable([1, 2])]}
    checkpoint = tf.train.Checkpoint(mod=module)
    checkpoint.save(str(folder / "ckpt"))
    module.float32.assign_add(tf.ones_like(module.float32))
    checkpoint.save(str(folder / "ckpt"))
    return folder


def test_module_with_every_variable_dtype_reads_as_in_tensorflow(tf, module_folder):
    for prefix in ("ckpt-1", "ckpt-2"):
        assert _compare(tf, module_folder / prefix, module_folder / prefix) == []


def test_module_folder_resolves_to_tensorflows_latest_checkpoint(tf, module_folder):
    latest = tf.train.latest_checkpoint(str(module_folder))

    assert latest_checkpoint(module_folder) == latest == str(module_folder / "ckpt-2")
    assert _compare(tf, latest, module_folder) == []
    assert list_variables(module_folder) == [
        (key, list(shape)) for key, shape in tf.train.list_variables(str(module_folder))
    ]


@pytest.fixture(scope="module")
def manager_folder(tf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("manager")
    variable = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=variable), str(folder), max_to_keep=2
    )
    for _ in range(3):
        variable.assign_add(1.0)
        manager.save()
    return folder


def test_manager_folder_state_agrees_with_tensorflow(tf, manager_folder):
    theirs = tf.train.get_checkpoint_state(str(manager_folder))

    ours = read_checkpoint_state(manager_folder)

    assert ours is not None
    assert latest_checkpoint(manager_folder) == tf.train.latest_checkpoint(str(manager_folder))
    assert ours.model_checkpoint_path == theirs.model_checkpoint_path
    assert list(ours.all_model_checkpoint_paths) == list(theirs.all_model_checkpoint_paths)
    assert list(ours.all_model_checkpoint_timestamps) == list(
        theirs.all_model_checkpoint_timestamps
    )
    assert len(ours.all_model_checkpoint_timestamps) == 2
    assert ours.last_preserved_timestamp == theirs.last_preserved_timestamp


@pytest.mark.parametrize("name", ["ckpt-2", "ckpt-3"])
def test_manager_checkpoints_read_as_in_tensorflow(tf, manager_folder, name):
    assert not (manager_folder / "ckpt-1.index").exists()

    assert _compare(tf, manager_folder / name, manager_folder / name) == []


@pytest.fixture(scope="module")
def max_shard_prefix(tf, tmp_path_factory):
    # As tests/fixtures/tf-2.21/max_shard_size, plus a few more dtypes.
    prefix = tmp_path_factory.mktemp("max_shard") / "ckpt"
    module = tf.Module()
    module.a = tf.Variable(np.arange(24, dtype=np.float32).reshape(6, 4))
    module.b = tf.Variable(np.arange(10, dtype=np.int64))
    module.c = tf.Variable(["x", "yy"])
    # Not a rank-3 variable: TF 2.21's MaxShardSizePolicy never returns for one of
    # shape [3, 5, 2] float64 at max_shard_size=40 (it loops, allocating without bound).
    module.d = tf.Variable(np.linspace(-1, 1, 10).reshape(5, 2))
    module.e = tf.Variable(tf.constant(np.arange(20).reshape(4, 5) / 4, dtype=tf.bfloat16))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=40)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    tf.train.Checkpoint(mod=module).write(str(prefix), options=options)
    return prefix


def test_max_shard_size_save_reads_as_in_tensorflow(tf, max_shard_prefix):
    with load_checkpoint(max_shard_prefix) as reader:
        assert reader.bundle.num_shards > 2
        assert sum(info.sliced for info in reader.bundle.infos()) >= 3

    assert _compare(tf, max_shard_prefix, max_shard_prefix) == []


@pytest.fixture(scope="module")
def tf1_folder(tf, tmp_path_factory):
    # As tests/fixtures/tf-2.21/tf1_saver, on one device.
    folder = tmp_path_factory.mktemp("tf1")
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.get_variable(
            "dense/kernel",
            initializer=tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4)),
            use_resource=False,
        )
        step = tf1.train.get_or_create_global_step()
        emb = tf1.get_variable(
            "emb",
            shape=[5, 2],
            initializer=tf1.zeros_initializer(),
            partitioner=tf1.fixed_size_partitioner(2, axis=0),
        )
        tf1.get_variable("name", initializer=tf.constant(strings("héllo", "", b"\x00")))
        full = np.arange(10, dtype=np.float32).reshape(5, 2)
        parts = list(emb)
        assigns = [step.assign(3), parts[0].assign(full[:3]), parts[1].assign(full[3:])]
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            session.run(assigns)
            tf1.train.Saver().save(
                session, str(folder / "model.ckpt"), global_step=step, write_meta_graph=False
            )
            tf1.train.Saver(sharded=True).save(
                session, str(folder / "sharded.ckpt"), global_step=7, write_meta_graph=False
            )
    return folder


@pytest.mark.parametrize("name", ["model.ckpt-3", "sharded.ckpt-7"])
def test_tf1_saver_with_partitioned_variable_reads_as_in_tensorflow(tf, tf1_folder, name):
    with load_checkpoint(tf1_folder / name) as reader:
        assert reader.bundle.info("emb").sliced
        assert not reader.is_object_based
        np.testing.assert_array_equal(
            reader.get_tensor("emb"), np.arange(10, dtype=np.float32).reshape(5, 2)
        )

    assert _compare(tf, tf1_folder / name, tf1_folder / name) == []


def test_tf1_folder_resolves_to_tensorflows_latest_checkpoint(tf, tf1_folder):
    latest = tf.train.latest_checkpoint(str(tf1_folder))

    assert latest == str(tf1_folder / "sharded.ckpt-7")
    assert latest_checkpoint(tf1_folder) == latest


@pytest.fixture(scope="module")
def saved_model_folder(tf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_model")

    model = tf.Module()
    model.w = tf.Variable([[1.0, 2.0], [3.0, 4.0]])
    model.b = tf.Variable([0.5, -0.5])
    model.names = tf.Variable(["a", "日本"])
    model.serve = tf.function(
        lambda x: x @ model.w + model.b,
        input_signature=[tf.TensorSpec([None, 2], tf.float32)],
    )
    tf.saved_model.save(model, str(folder))
    return folder


def test_saved_model_folder_reads_as_in_tensorflow(tf, saved_model_folder):
    variables = saved_model_folder / "variables" / "variables"
    with load_checkpoint(saved_model_folder) as reader:
        assert reader.prefix == str(variables)
        assert reader.is_object_based

    assert _compare(tf, variables, saved_model_folder) == []
