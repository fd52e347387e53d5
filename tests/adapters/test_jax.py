"""The JAX / Flax / Optax adapter: pytrees rebuilt, NNX restored in place, TF reads the result."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest

for _framework in ("jax", "optax", "flax"):
    pytest.importorskip(_framework)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx, struct  # noqa: E402

import trackpoint  # noqa: E402
from tests._compare import assert_bitwise_equal  # noqa: E402
from trackpoint.errors import TrackpointWarning  # noqa: E402

pytestmark = pytest.mark.jax

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Pair = namedtuple("Pair", ["first", "second"])


@struct.dataclass
class TrainState:
    params: Any
    step: Any
    label: str = dataclasses.field(default="run", metadata={"pytree_node": False})  # static


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Registered:
    kernel: Any
    extra: Any


@jax.tree_util.register_pytree_node_class
class Custom:
    """A pytree node registered without keys: children are named by position."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def tree_flatten(self) -> tuple[tuple[Any, Any], None]:
        return (self.a, self.b), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: Any) -> Custom:
        del aux
        return cls(*children)


def _arrays(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "f32": jnp.asarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "bf16": jnp.asarray(rng.standard_normal(5)).astype(jnp.bfloat16),
        "f16": jnp.asarray(rng.standard_normal(2)).astype(jnp.float16),
        "i32": jnp.asarray(rng.integers(-9, 9, 6), jnp.int32),
        "u8": jnp.asarray(rng.integers(0, 255, 3), jnp.uint8),
        "flag": jnp.asarray(rng.integers(0, 2, 4).astype(bool)),
        "c64": jnp.asarray(rng.standard_normal(2) + 1j, jnp.complex64),
    }


def _trees(seed: int) -> dict[str, Any]:
    a = _arrays(seed)
    return {
        "dict": {"x": a["f32"], "nested": {"y": a["bf16"]}},
        "list": [a["i32"], [a["u8"]]],
        "tuple": (a["f16"], (a["flag"],)),
        "namedtuple": Pair(a["c64"], {"z": a["f32"]}),
        "struct_dataclass": TrainState(params={"w": a["bf16"]}, step=a["i32"]),
        "registered_dataclass": Registered(kernel=a["f32"], extra=(a["u8"],)),
        "custom_node": Custom(a["f16"], Pair(a["i32"], a["flag"])),
    }


def _assert_same_tree(actual: Any, expected: Any) -> None:
    structure: Any = jax.tree_util.tree_structure(actual)
    assert structure == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        if not isinstance(want, jax.Array):  # a Python number held by an nnx.Variable
            assert (type(got), got) == (type(want), want)
            continue
        assert isinstance(got, jax.Array)
        assert got.dtype == want.dtype
        assert got.sharding == want.sharding
        if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        assert_bitwise_equal(np.asarray(got), np.asarray(want), str(want.dtype))


@pytest.mark.parametrize("kind", list(_trees(0)), ids=str)
def test_pytree_round_trips_with_structure_dtypes_and_values(tmp_path, kind):
    saved = _trees(0)[kind]
    path = trackpoint.Checkpoint(params=saved).write(tmp_path / "ckpt")
    target = _trees(1)[kind]
    old_leaves = jax.tree.leaves(target)
    old_values = [np.asarray(leaf).copy() for leaf in old_leaves]
    ckpt = trackpoint.Checkpoint(params=target)
    if isinstance(target, (dict, list)):  # restored in place: `target` is up to date
        ckpt.read(path).assert_consumed()
    else:  # rebuilt: `target` keeps the old values, and the restore says so
        with pytest.warns(TrackpointWarning, match="your variable 'target'") as record:
            ckpt.read(path).assert_consumed()
        assert record[0].filename == __file__
    _assert_same_tree(ckpt.params, saved)
    assert type(ckpt.params) is type(saved)
    # The target's own arrays are untouched: restore made new ones.
    for leaf, old in zip(old_leaves, old_values, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), old)


def test_restored_arrays_are_built_on_the_read_buffer_without_a_second_copy(tmp_path, monkeypatch):
    saved = {"w": jnp.arange(300_000, dtype=jnp.float32), "b": jnp.arange(7, dtype=jnp.int32)}
    path = trackpoint.Checkpoint(params=saved).write(tmp_path / "ckpt")
    staged: list[np.ndarray] = []
    original = trackpoint.graph.Value.staging_buffer

    def recording(self):
        buffer = original(self)
        staged.append(buffer)
        return buffer

    monkeypatch.setattr(trackpoint.graph.Value, "staging_buffer", recording)
    ckpt = trackpoint.Checkpoint(params={"w": jnp.zeros(300_000), "b": jnp.zeros(7, jnp.int32)})
    ckpt.read(path).assert_consumed()
    # Each array was read once, into a buffer XLA adopted as the array's own memory.
    pointers = {buffer.ctypes.data for buffer in staged}
    assert len(staged) == 2
    for leaf in jax.tree.leaves(ckpt.params):
        assert leaf.unsafe_buffer_pointer() in pointers
    _assert_same_tree(ckpt.params, saved)


def test_static_fields_are_not_saved_and_keep_the_targets_numbers_of_the_tree_are_state(
    tmp_path,
):
    saved = TrainState(params={"w": jnp.ones(2), "lr": 0.1}, step=jnp.asarray(3), label="saved")
    path = trackpoint.Checkpoint(state=saved).write(tmp_path / "ckpt")
    # `lr` is a leaf of the JAX tree (jax.tree_util flattens it); `label` is static.
    assert [key for key, _ in trackpoint.list_variables(path)] == [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "state/params/lr/.ATTRIBUTES/VARIABLE_VALUE",
        "state/params/w/.ATTRIBUTES/VARIABLE_VALUE",
        "state/step/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    ckpt = trackpoint.Checkpoint(
        state=TrainState(params={"w": jnp.zeros(2), "lr": 0.5}, step=jnp.asarray(0), label="new")
    )
    ckpt.read(path).assert_consumed()
    assert ckpt.state.label == "new"
    assert (type(ckpt.state.params["lr"]), ckpt.state.params["lr"]) == (float, 0.1)
    assert int(ckpt.state.step) == 3


@pytest.mark.parametrize("kind", ["single_device", "named_mesh"])
def test_restored_arrays_keep_the_targets_sharding(tmp_path, kind):
    device = jax.devices("cpu")[0]
    sharding: jax.sharding.Sharding
    if kind == "single_device":
        sharding = jax.sharding.SingleDeviceSharding(device)
    else:
        mesh = jax.sharding.Mesh(np.array([device]), ("data",))
        spec = jax.sharding.PartitionSpec("data")  # type: ignore[no-untyped-call]
        sharding = jax.sharding.NamedSharding(mesh, spec)
    path = trackpoint.Checkpoint(w=jnp.arange(4.0)).write(tmp_path / "ckpt")
    ckpt = trackpoint.Checkpoint(w=jax.device_put(jnp.zeros(4), sharding))
    ckpt.read(path).assert_consumed()
    assert ckpt.w.sharding == sharding
    np.testing.assert_array_equal(np.asarray(ckpt.w), np.arange(4.0))


def test_weak_type_and_prng_keys_are_kept(tmp_path):
    saved = {
        "scale": jnp.asarray(0.25),  # weakly typed (from a Python float)
        "key": jax.random.key(7),
        "rbg_keys": jax.random.split(jax.random.key(3, impl="rbg"), 2),
    }
    path = trackpoint.Checkpoint(state=saved).write(tmp_path / "ckpt")
    assert dict(trackpoint.list_variables(path))["state/key/.ATTRIBUTES/VARIABLE_VALUE"] == [2]
    target = {
        "scale": jnp.asarray(1.0),
        "key": jax.random.key(0),
        "rbg_keys": jax.random.split(jax.random.key(0, impl="rbg"), 2),
    }
    ckpt = trackpoint.Checkpoint(state=target)
    ckpt.read(path).assert_consumed()
    assert ckpt.state["scale"].weak_type
    assert float(ckpt.state["scale"]) == 0.25
    for name in ("key", "rbg_keys"):
        restored = ckpt.state[name]
        assert restored.dtype == saved[name].dtype
        np.testing.assert_array_equal(
            jax.random.key_data(restored), jax.random.key_data(saved[name])
        )


def _params(seed: int) -> dict[str, Any]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"dense": {"kernel": jax.random.normal(k1, (3, 2)), "bias": jnp.zeros(2)},
            "out": jax.random.normal(k2, (2,))}  # fmt: skip


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: optax.adam(1e-2),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2)),
        lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
    ],
    ids=["adam", "chain_clip_adamw", "inject_hyperparams_sgd"],
)
def test_optax_state_restores_into_a_freshly_initialised_state(tmp_path, make_tx):
    tx = make_tx()
    params = _params(0)
    state = tx.init(params)
    for _ in range(2):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    path = trackpoint.Checkpoint(params=params, opt_state=state).write(tmp_path / "ckpt")
    fresh = _params(1)
    ckpt = trackpoint.Checkpoint(params=fresh, opt_state=tx.init(fresh))
    ckpt.read(path).assert_consumed()
    _assert_same_tree(ckpt.params, params)
    _assert_same_tree(ckpt.opt_state, state)


def test_optax_state_keys_use_namedtuple_field_names(tmp_path):
    params = _params(0)
    path = trackpoint.Checkpoint(opt_state=optax.adam(1e-3).init(params)).write(tmp_path / "c")
    keys = [key for key, _ in trackpoint.list_variables(path)]
    assert "opt_state/0/count/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "opt_state/0/mu/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "opt_state/0/nu/out/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_values_wait_for_pytrees_attached_after_restore(tmp_path):
    tx = optax.adam(1e-2)
    params = _params(0)
    state = tx.init(params)
    saved = trackpoint.Checkpoint(params=params, opt_state=state, step=jnp.asarray(5))
    path = saved.write(tmp_path / "ckpt")
    ckpt = trackpoint.Checkpoint()
    # Nothing to take the values at the call: attached below on purpose.
    status = ckpt.read(path, expect_partial=True)
    fresh = _params(1)
    ckpt.params = fresh  # a mutable dict: filled in place
    ckpt.opt_state = tx.init(fresh)  # a tuple of namedtuples: rebuilt, then put on ckpt
    ckpt.step = jnp.asarray(0)  # a bare array: replaced
    status.assert_consumed()
    assert ckpt.params is fresh
    _assert_same_tree(ckpt.params, params)
    _assert_same_tree(ckpt.opt_state, state)
    assert int(ckpt.step) == 5


def test_shape_mismatch_names_the_path(tmp_path):
    path = trackpoint.Checkpoint(params=_params(0)).write(tmp_path / "ckpt")
    target = _params(1)
    target["dense"]["kernel"] = jnp.zeros((4, 2))
    with pytest.raises(trackpoint.ShapeMismatchError, match=r"params\.dense\.kernel is \[3, 2\]"):
        trackpoint.Checkpoint(params=target).read(path)


def test_dtype_mismatch_names_the_path(tmp_path):
    path = trackpoint.Checkpoint(params=_params(0)).write(tmp_path / "ckpt")
    target = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params(1))
    with pytest.raises(
        trackpoint.DTypeMismatchError,
        match=r"params\.out is float32 in the checkpoint but bfloat16",
    ):
        trackpoint.Checkpoint(params=target).read(path)


def test_saving_a_donated_array_says_what_to_do(tmp_path):
    w = jnp.ones(3)
    ckpt = trackpoint.Checkpoint(w=w)
    jax.jit(lambda x: x + 1, donate_argnums=0)(w)
    if not w.is_deleted():  # pragma: no cover - CPU honours donation in jax >= 0.4.31
        pytest.skip("this backend ignores donation")
    with pytest.raises(trackpoint.InvalidValueError, match=r"ckpt\.params = params"):
        ckpt.write(tmp_path / "ckpt")


def test_name_based_checkpoint_refuses_jax_arrays_instead_of_ignoring_them(tmp_path):
    from trackpoint.format import BundleWriter

    with BundleWriter(tmp_path / "tf1") as writer:  # a TF1 checkpoint: no object graph
        writer.add("w", np.ones(3, np.float32))
    ckpt = trackpoint.Checkpoint(w=jnp.zeros(3))
    with pytest.raises(trackpoint.NotTrackableError, match=r"name-based \(TF1\)"):
        ckpt.read(tmp_path / "tf1")


def test_unregistered_objects_are_refused_with_their_type():
    class Plain:
        def __init__(self) -> None:
            self.w = jnp.ones(2)

    with pytest.raises(trackpoint.NotTrackableError, match="Plain"):
        trackpoint.Checkpoint(thing=Plain())


# ---------------------------------------------------------------------------------------
# Flax NNX


class Net(nnx.Module):
    def __init__(self, seed: int) -> None:
        rngs = nnx.Rngs(seed)
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs)])
        self.scale = jnp.asarray(float(seed))  # a raw array attribute
        self.calls = nnx.Variable(seed)  # a Python number held by a Variable

    def __call__(self, x: Any) -> Any:
        return self.blocks[0](self.dropout(self.norm(self.dense(x)))) * self.scale


def _trained(seed: int) -> tuple[Net, Any]:
    model = Net(seed)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    grads = nnx.grad(lambda m: (m(jnp.ones((2, 3))) ** 2).mean())(model)
    optimizer.update(model, grads)
    return model, optimizer


def test_nnx_model_and_optimizer_restore_in_place(tmp_path):
    model, optimizer = _trained(0)
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).write(tmp_path / "ckpt")
    keys = [key for key, _ in trackpoint.list_variables(path)]
    assert "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/blocks/0/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/dropout/rngs/key/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "optimizer/opt_state/0/mu/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "optimizer/step/.ATTRIBUTES/VARIABLE_VALUE" in keys

    other = Net(1)
    other_opt = nnx.Optimizer(other, optax.adam(1e-2), wrt=nnx.Param)
    kernel, mu = other.dense.kernel, other_opt.opt_state[0].mu["dense"]["kernel"]
    ckpt = trackpoint.Checkpoint(model=other, optimizer=other_opt)
    ckpt.read(path).assert_consumed()
    assert ckpt.model is other
    assert ckpt.optimizer is other_opt
    assert other.dense.kernel is kernel
    assert other_opt.opt_state[0].mu["dense"]["kernel"] is mu
    assert int(other_opt.step[...]) == 1
    assert other.calls.get_value() == 0
    assert isinstance(other.calls.get_value(), int)
    assert float(other.scale) == 0.0
    _assert_same_tree(nnx.state(other), nnx.state(model))
    _assert_same_tree(nnx.state(other_opt), nnx.state(optimizer))


def test_nnx_save_weights_and_load_weights(tmp_path):
    model, _ = _trained(0)
    prefix = trackpoint.save_weights(model, tmp_path / "weights")
    assert "dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in dict(trackpoint.list_variables(prefix))
    other = Net(1)
    trackpoint.load_weights(other, prefix).assert_consumed()
    _assert_same_tree(nnx.state(other), nnx.state(model))


# ---------------------------------------------------------------------------------------
# Resume in a new process


def _run(run_dir: Path, steps: int, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_jax.py"), str(run_dir), str(steps), *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("flags", [(), ("--nnx",)], ids=["optax_pytree", "nnx"])
def test_resumed_training_equals_an_uninterrupted_run(tmp_path, flags):
    assert "resumed" not in _run(tmp_path / "split", 3, *flags)
    assert "at step 3" in _run(tmp_path / "split", 6, *flags)
    _run(tmp_path / "whole", 6, *flags)
    split = trackpoint.load_checkpoint(tmp_path / "split")
    whole = trackpoint.load_checkpoint(tmp_path / "whole")
    assert split.prefix.endswith("ckpt-6")
    keys = split.get_variable_to_shape_map()
    assert keys == whole.get_variable_to_shape_map()
    assert any("/mu/" in key for key in keys)
    for key in keys:
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH":
            assert_bitwise_equal(split.get_tensor(key), whole.get_tensor(key), key)


# ---------------------------------------------------------------------------------------
# TensorFlow reads what trackpoint writes


def _graph_edges(tf: Any, prefix: str) -> list[Any]:
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(
        "_CHECKPOINTABLE_OBJECT_GRAPH"))  # fmt: skip
    return [
        (
            [(c.node_id, c.local_name) for c in node.children],
            [(a.name, a.checkpoint_key) for a in node.attributes],
        )
        for node in graph.nodes
    ]


@pytest.mark.tf
def test_tensorflow_reads_and_restores_a_jax_checkpoint(tmp_path, tf):
    # Keys in sorted order: jax.tree.map (which builds the TF tree below) sorts dict keys.
    params = {"dense": {"bias": jnp.ones(2), "kernel": jnp.arange(6.0).reshape(3, 2)},
              "emb": jnp.arange(4.0).astype(jnp.bfloat16)}  # fmt: skip
    state = optax.adam(1e-3).init(params)
    prefix = trackpoint.Checkpoint(params=params, opt_state=state).write(tmp_path / "ours")

    reader = tf.train.load_checkpoint(prefix)
    ours = trackpoint.load_checkpoint(prefix)
    assert reader.get_variable_to_shape_map() == ours.get_variable_to_shape_map()
    emb = reader.get_tensor("params/emb/.ATTRIBUTES/VARIABLE_VALUE")
    assert emb.dtype.name == "bfloat16"
    np.testing.assert_array_equal(emb.astype(np.float32), np.arange(4.0))
    np.testing.assert_array_equal(
        reader.get_tensor("params/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
        np.arange(6.0, dtype=np.float32).reshape(3, 2),
    )

    # The same tree of tf.Variables (optax's own namedtuples) restores with assert_consumed.
    def tf_tree(tree: Any) -> Any:
        return jax.tree.map(lambda x: tf.Variable(tf.zeros(x.shape, tf.as_dtype(x.dtype))), tree)

    tf_ckpt = tf.train.Checkpoint(params=tf_tree(params), opt_state=tf_tree(state))
    tf_ckpt.read(prefix).assert_consumed()
    np.testing.assert_array_equal(tf_ckpt.params["dense"]["bias"].numpy(), np.ones(2))
    # ...and TF writes the same object graph for it.
    theirs = tf_ckpt.write(str(tmp_path / "theirs"))
    assert _graph_edges(tf, theirs) == _graph_edges(tf, prefix)
