"""The object layer against TensorFlow itself: same trees, same keys, same graphs, both ways.

A tree of `tf.Module`s and the same tree of `trackpoint.Module`s (nested modules, a list,
a dict whose key holds `/` and `.`, a variable reachable by two paths, scalar, integer,
bool and string variables) are saved by one library and restored by the other with
`assert_consumed()`. TF1-native slot variables (`tf.compat.v1.train.AdamOptimizer` against
`trackpoint.optimizers.Adam`) move both ways too, and `Checkpoint.save` numbers and
records checkpoints exactly as TF does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

import trackpoint
from tests._compare import assert_bitwise_equal
from trackpoint.format.protos import trackable_object_graph_pb2 as tp_graph_pb2
from trackpoint.optimizers import Adam

pytestmark = pytest.mark.tf

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

#: name → (value saved, value of the tree that restores it). Same dtypes on both sides:
#: Python floats would be float32 in TF but float64 in NumPy, so dtypes are explicit.
VALUES = {
    "w": (np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.zeros((2, 2), np.float32)),
    "b": (np.array([0.5, -0.5], np.float32), np.zeros(2, np.float32)),
    "slash_dot": (np.float32(3.0), np.float32(0.0)),
    "item0": (np.int32(1), np.int32(0)),
    "item1": (np.int32(2), np.int32(0)),
    "flag": (np.bool_(True), np.bool_(False)),
    "count": (np.int64(-(2**40)), np.int64(0)),
    "f64": (np.array([np.pi, -np.e]), np.zeros(2)),
    "text": ("héllo wörld", ""),  # a Python str, as users write it
    "words": (np.array([b"", b"\xff\x00bin", "日本".encode()], dtype=object),
              np.array([b"", b"", b""], dtype=object)),
}  # fmt: skip

#: Where each value lives in the tree (attribute path from `net`) — for reading them back.
PATHS = {
    "w": ("lin", "w"),
    "b": ("lin", "b"),
    "slash_dot": ("extra", "a/b.c"),
    "item0": ("extra", "list", 0),
    "item1": ("extra", "list", 1),
    "flag": ("layers", 0, "flag"),
    "count": ("layers", 0, "count"),
    "f64": ("layers", 0, "f64"),
    "text": ("layers", 0, "text"),
    "words": ("layers", 1),
}


def build_tree(module_cls: Any, variable: Any, which: Any) -> Any:
    """The same tree with TF's or trackpoint's classes; `which` 0 = saved values, 1 = zeros."""
    v = {name: pair[which] for name, pair in VALUES.items()}
    net = module_cls()
    net.lin = module_cls()
    net.lin.w = variable(v["w"])
    net.lin.b = variable(v["b"])
    net.extra = {
        "a/b.c": variable(v["slash_dot"]),
        "list": [variable(v["item0"]), variable(v["item1"])],
    }
    net.shared = net.lin.w  # a second path to the same variable
    leaf = module_cls()
    leaf.flag = variable(v["flag"])
    leaf.count = variable(v["count"])
    leaf.f64 = variable(v["f64"])
    leaf.text = variable(v["text"])
    net.layers = [leaf, variable(v["words"])]
    return net


def tf_tree(tf: Any, which: Any) -> Any:
    return build_tree(tf.Module, tf.Variable, which)


def tp_tree(which: Any) -> Any:
    return build_tree(trackpoint.Module, trackpoint.Variable, which)


def lookup(net: Any, path: Any) -> Any:
    obj = net
    for step in path:
        obj = obj[step] if isinstance(step, int) or isinstance(obj, dict) else getattr(obj, step)
    return obj


def plain(value: Any) -> Any:
    """A variable's value as (kind, shape, nested Python data); strings as UTF-8 bytes."""
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if array.dtype.kind in "OSU":  # TF's numpy() gives bytes (`S` for a scalar)
        encode = np.vectorize(
            lambda s: s.encode() if isinstance(s, str) else bytes(s), otypes=[object]
        )
        return "string", array.shape, encode(array).tolist()
    return array.dtype.kind, array.shape, array.tolist()


def assert_tree_holds_saved_values(net: Any) -> Any:
    for name, path in PATHS.items():
        assert plain(lookup(net, path)) == plain(VALUES[name][0]), name


def decode_graph(tf: Any, prefix: Any) -> Any:
    """The object graph of `prefix`, parsed with TensorFlow's own proto class."""
    from tensorflow.core.protobuf import (
        trackable_object_graph_pb2 as tf_graph_pb2,
    )

    graph = tf_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(str(prefix)).get_tensor(OBJECT_GRAPH_KEY))
    return graph


def without_full_names(graph: Any) -> Any:
    graph = type(graph).FromString(graph.SerializeToString())
    for node in graph.nodes:
        for attribute in node.attributes:
            attribute.ClearField("full_name")
    return graph


def variable_listing(tf: Any, prefix: Any) -> Any:
    """TF's listing of a checkpoint: key → (dtype name, shape)."""
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {key: (dtypes[key].name, shape) for key, shape in tf.train.list_variables(str(prefix))}


# -- plain trees, both directions ------------------------------------------------------


@pytest.fixture(scope="module")
def tf_saved(tf, tmp_path_factory):
    """A tree saved by TensorFlow: (prefix, the TF tree)."""
    net = tf_tree(tf, 0)
    prefix = tf.train.Checkpoint(net=net).save(str(tmp_path_factory.mktemp("tf_tree") / "ckpt"))
    return prefix, net


@pytest.fixture(scope="module")
def tp_saved(tmp_path_factory):
    """The same tree saved by trackpoint: its prefix."""
    return trackpoint.Checkpoint(net=tp_tree(0)).save(tmp_path_factory.mktemp("tp_tree") / "ckpt")


def test_tf_module_tree_restores_into_trackpoint_modules(tf, tf_saved):
    prefix, _ = tf_saved
    net = tp_tree(1)
    checkpoint = trackpoint.Checkpoint(net=net)
    checkpoint.restore(prefix).assert_consumed()
    assert_tree_holds_saved_values(net)
    # The shared variable is one object on both paths, restored once.
    assert net.shared is net.lin.w
    assert int(checkpoint.save_counter.numpy()) == 1


def test_trackpoint_module_tree_restores_into_tf_modules(tf, tp_saved):
    net = tf_tree(tf, 1)
    checkpoint = tf.train.Checkpoint(net=net)
    checkpoint.restore(tp_saved).assert_consumed()
    assert_tree_holds_saved_values(net)
    assert net.shared is net.lin.w
    assert int(checkpoint.save_counter.numpy()) == 1


def test_both_libraries_list_the_same_keys_dtypes_and_shapes(tf, tf_saved, tp_saved):
    ours = variable_listing(tf, tp_saved)
    assert ours == variable_listing(tf, tf_saved[0])
    assert "net/extra/a.Sb..c/.ATTRIBUTES/VARIABLE_VALUE" in ours
    # The shared variable is saved once, under its first (breadth-first) path.
    assert "net/shared/.ATTRIBUTES/VARIABLE_VALUE" in ours
    assert not any(key.startswith("net/lin/w/") for key in ours)
    assert ours["net/layers/0/text/.ATTRIBUTES/VARIABLE_VALUE"] == ("string", [])
    # trackpoint's own listing agrees with TF's.
    assert trackpoint.list_variables(tp_saved) == tf.train.list_variables(str(tp_saved))


def test_both_libraries_write_the_same_object_graph(tf, tf_saved, tp_saved):
    theirs = decode_graph(tf, tf_saved[0])
    ours = decode_graph(tf, tp_saved)
    assert without_full_names(ours) == without_full_names(theirs)
    assert len(ours.nodes) == len(theirs.nodes)


def test_trackpoint_reads_tf_written_values_by_key(tf, tf_saved):
    prefix, net = tf_saved
    with trackpoint.load_checkpoint(prefix) as reader:
        for key in tf.train.load_checkpoint(prefix).get_variable_to_shape_map():
            if key != OBJECT_GRAPH_KEY:
                assert reader.has_tensor(key), key
        value = reader.get_tensor("net/shared/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(value, net.lin.w.numpy())


def test_trackpoint_writes_byte_identical_files_for_the_same_tree(tf_saved, tp_saved):
    """Same keys, graph (full_name included), data order and index: the same bytes as TF."""
    for suffix in (".index", ".data-00000-of-00001"):
        with open(tf_saved[0] + suffix, "rb") as theirs, open(tp_saved + suffix, "rb") as ours:
            assert ours.read() == theirs.read(), suffix


def _attach_tree_later(net: Any, built: Any) -> Any:
    """Attach `built`'s children to the empty `net` one by one (objects made after restore)."""
    for name in ("lin", "extra", "shared", "layers"):
        setattr(net, name, getattr(built, name))


def test_values_of_tf_tree_wait_for_trackpoint_objects_made_after_restore(tf_saved):
    net = trackpoint.Module()
    status = trackpoint.Checkpoint(net=net).restore(tf_saved[0])
    _attach_tree_later(net, tp_tree(1))
    status.assert_consumed()
    assert_tree_holds_saved_values(net)


def test_values_of_trackpoint_tree_wait_for_tf_objects_made_after_restore(tf, tp_saved):
    net = tf.Module()
    status = tf.train.Checkpoint(net=net).restore(tp_saved)
    _attach_tree_later(net, tf_tree(tf, 1))
    status.assert_consumed()
    assert_tree_holds_saved_values(net)


MISMATCHES: dict[str, tuple[Any, Any]] = {
    "shape": (np.zeros(3, np.float32), trackpoint.ShapeMismatchError),
    "dtype": (np.zeros(2, np.float64), trackpoint.DTypeMismatchError),
}


@pytest.mark.parametrize("kind", list(MISMATCHES), ids=list(MISMATCHES))
def test_incompatible_variables_are_refused_by_both(tf, tf_saved, kind):
    """`lin.b` is float32 [2] in the checkpoint; neither library restores it into another."""
    wrong, error = MISMATCHES[kind]
    theirs, ours = tf_tree(tf, 1), tp_tree(1)
    theirs.lin.b, ours.lin.b = tf.Variable(wrong), trackpoint.Variable(wrong)
    # TF: ValueError for a shape, InvalidArgumentError from its RestoreV2 kernel for a dtype.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        tf.train.Checkpoint(net=theirs).restore(tf_saved[0])
    with pytest.raises(error, match=r"net\.lin\.b"):
        trackpoint.Checkpoint(net=ours).restore(tf_saved[0])


# -- TF1-native slot variables ----------------------------------------------------------

LEARNING_RATE = 0.1


def tf_step(tf: Any, net: Any, optimizer: Any) -> Any:
    optimizer.minimize(
        lambda: tf.reduce_sum(net.lin.w * 2.0) + tf.reduce_sum(net.lin.b),
        var_list=[net.lin.w, net.lin.b],
    )


def tp_step(net: Any, optimizer: Any) -> Any:
    optimizer.apply_gradients(
        [(np.full((2, 2), 2.0, np.float32), net.lin.w), (np.ones(2, np.float32), net.lin.b)]
    )


def slot_state(optimizer: Any, net: Any) -> Any:
    """Slots and beta powers of either library's Adam, as NumPy arrays."""
    out = {}
    for name in ("w", "b"):
        variable = getattr(net.lin, name)
        for slot in ("m", "v"):
            out[f"{name}/{slot}"] = np.asarray(optimizer.get_slot(variable, slot).numpy())
    if hasattr(optimizer, "beta1_power"):
        powers = (optimizer.beta1_power, optimizer.beta2_power)
    else:  # TF1: non-slot variables behind _get_beta_accumulators
        powers = optimizer._get_beta_accumulators()
    out["beta1_power"], out["beta2_power"] = (np.asarray(p.numpy()) for p in powers)
    out["w"], out["b"] = np.asarray(net.lin.w.numpy()), np.asarray(net.lin.b.numpy())
    return out


def assert_same_state(actual: Any, expected: Any) -> Any:
    """Bit for bit: trackpoint's Adam computes in float32 with TF's kernel formulas."""
    assert actual.keys() == expected.keys()
    for key in expected:
        assert_bitwise_equal(actual[key], expected[key], key)


@pytest.fixture(scope="module")
def tf_adam_saved(tf, tmp_path_factory):
    """TF tree + TF1 AdamOptimizer after one step: (prefix, state)."""
    net = tf_tree(tf, 0)
    optimizer = tf.compat.v1.train.AdamOptimizer(LEARNING_RATE)
    tf_step(tf, net, optimizer)
    folder = tmp_path_factory.mktemp("tf_adam")
    prefix = tf.train.Checkpoint(net=net, opt=optimizer).save(str(folder / "ckpt"))
    return prefix, slot_state(optimizer, net)


@pytest.fixture(scope="module")
def tp_adam_saved(tmp_path_factory):
    """trackpoint tree + Adam after one step: (prefix, state)."""
    net, optimizer = tp_tree(0), Adam(LEARNING_RATE)
    tp_step(net, optimizer)
    folder = tmp_path_factory.mktemp("tp_adam")
    prefix = trackpoint.Checkpoint(net=net, opt=optimizer).save(folder / "ckpt")
    return prefix, slot_state(optimizer, net)


def test_one_adam_step_gives_the_same_state_in_both_libraries(tf_adam_saved, tp_adam_saved):
    assert_same_state(tp_adam_saved[1], tf_adam_saved[1])


@pytest.mark.parametrize("stepped", [False, True], ids=["fresh_optimizer", "stepped_optimizer"])
def test_tf_adam_slots_restore_into_trackpoint_adam(tf, tf_adam_saved, stepped):
    prefix, saved = tf_adam_saved
    net, optimizer = tp_tree(1), Adam(LEARNING_RATE)
    if stepped:  # slots exist already: restore overwrites them
        tp_step(net, optimizer)
    status = trackpoint.Checkpoint(net=net, opt=optimizer).restore(prefix)
    # trackpoint's Adam holds beta1_power/beta2_power from construction, so nothing waits.
    status.assert_consumed()
    assert_same_state(slot_state(optimizer, net), saved)


def test_tf_adam_checkpoint_saved_again_by_trackpoint_has_tfs_graph(tf, tf_adam_saved, tmp_path):
    prefix, _ = tf_adam_saved
    net, optimizer = tp_tree(1), Adam(LEARNING_RATE)
    checkpoint = trackpoint.Checkpoint(net=net, opt=optimizer)
    checkpoint.restore(prefix).assert_consumed()
    ours = checkpoint.save(tmp_path / "ckpt")
    assert ours.endswith("ckpt-2")
    theirs_graph, ours_graph = decode_graph(tf, prefix), decode_graph(tf, ours)
    assert without_full_names(ours_graph) == without_full_names(theirs_graph)
    optimizer_node = ours_graph.nodes[ours_graph.nodes[0].children[1].node_id]
    assert [(s.slot_name, s.original_variable_node_id) for s in optimizer_node.slot_variables] == [
        (s.slot_name, s.original_variable_node_id)
        for s in theirs_graph.nodes[theirs_graph.nodes[0].children[1].node_id].slot_variables
    ]
    assert [s.slot_name for s in optimizer_node.slot_variables] == ["m", "m", "v", "v"]
    listing = variable_listing(tf, ours)
    assert "net/shared/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE" in listing
    assert listing == {
        key: value for key, value in variable_listing(tf, prefix).items() if key in listing
    }
    assert listing.keys() == variable_listing(tf, prefix).keys()


def test_trackpoint_adam_slots_restore_into_a_fresh_tf_adam(tf, tp_adam_saved):
    prefix, saved = tp_adam_saved
    net = tf_tree(tf, 1)
    optimizer = tf.compat.v1.train.AdamOptimizer(LEARNING_RATE)
    status = tf.train.Checkpoint(net=net, opt=optimizer).restore(str(prefix))
    # TF (eager) creates the slots m and v on restore, with the saved values ...
    for name in ("w", "b"):
        for slot in ("m", "v"):
            np.testing.assert_array_equal(
                optimizer.get_slot(getattr(net.lin, name), slot).numpy(), saved[f"{name}/{slot}"]
            )
    # ... but beta1_power/beta2_power only exist after the first step: until then they wait.
    status.assert_existing_objects_matched()
    with pytest.raises(AssertionError, match="beta1_power"):
        status.assert_consumed()
    tf_step(tf, net, optimizer)
    status.assert_consumed()
    # The step started from the restored state: it equals trackpoint's second step.
    tp_net, tp_optimizer = tp_tree(1), Adam(LEARNING_RATE)
    trackpoint.Checkpoint(net=tp_net, opt=tp_optimizer).restore(prefix).assert_consumed()
    tp_step(tp_net, tp_optimizer)
    assert_same_state(slot_state(optimizer, net), slot_state(tp_optimizer, tp_net))


def test_trackpoint_adam_slots_restore_into_a_stepped_tf_adam(tf, tp_adam_saved):
    prefix, saved = tp_adam_saved
    net = tf_tree(tf, 1)
    optimizer = tf.compat.v1.train.AdamOptimizer(LEARNING_RATE)
    tf_step(tf, net, optimizer)  # slots and beta powers exist, with other values
    tf.train.Checkpoint(net=net, opt=optimizer).restore(str(prefix)).assert_consumed()
    assert_same_state(slot_state(optimizer, net), saved)


def test_both_libraries_write_the_same_slot_graph(tf, tf_adam_saved, tp_adam_saved):
    theirs, ours = decode_graph(tf, tf_adam_saved[0]), decode_graph(tf, tp_adam_saved[0])
    assert without_full_names(ours) == without_full_names(theirs)
    assert variable_listing(tf, tp_adam_saved[0]) == variable_listing(tf, tf_adam_saved[0])


def _outcome(status: Any, method: Any) -> Any:
    try:
        getattr(status, method)()
    except AssertionError:  # trackpoint's MismatchError is one too
        return "fails"
    return "passes"


def _assertion_outcomes(status: Any) -> Any:
    methods = ("assert_consumed", "assert_existing_objects_matched", "assert_nontrivial_match")
    outcomes = {method: _outcome(status, method) for method in methods}
    status.expect_partial()
    return outcomes


def _renamed(net: Any) -> Any:
    """The tree with `lin` renamed to `linear` (its `w` stays reachable as `shared`)."""
    net.linear = net.lin
    del net.lin
    return net


#: case → (the restoring Checkpoint's children from (tree, optimizer), read or restore,
#: what TF's status assertions do).
PARTIAL_CASES: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "model_only": (lambda tree, opt: {"net": tree}, "restore", ("fails", "passes", "passes")),
    "optimizer_only": (lambda tree, opt: {"opt": opt}, "restore", ("fails", "passes", "passes")),
    "renamed_attribute": (
        lambda tree, opt: {"net": _renamed(tree), "opt": opt},
        "restore",
        ("fails", "fails", "passes"),
    ),
    # restore() creates save_counter, which matches: nontrivial (format doc §7.7).
    "nothing_but_save_counter": (
        lambda tree, opt: {"other": tree},
        "restore",
        ("fails", "fails", "passes"),
    ),
    "nothing_at_all": (lambda tree, opt: {"other": tree}, "read", ("fails", "fails", "fails")),
}


@pytest.mark.parametrize("case", list(PARTIAL_CASES), ids=list(PARTIAL_CASES))
def test_partial_restore_statuses_agree_with_tf(tf, tf_adam_saved, case):
    prefix, _ = tf_adam_saved
    children, method, expected = PARTIAL_CASES[case]
    theirs = tf.train.Checkpoint(
        **children(tf_tree(tf, 1), tf.compat.v1.train.AdamOptimizer(LEARNING_RATE))
    )
    ours = trackpoint.Checkpoint(**children(tp_tree(1), Adam(LEARNING_RATE)))
    # Partial on purpose: the warning at the call is tested beside (and in tests/graph).
    outcomes = _assertion_outcomes(getattr(ours, method)(prefix, expect_partial=True))
    assert outcomes == _assertion_outcomes(getattr(theirs, method)(prefix))
    assert tuple(outcomes.values()) == expected


def test_unused_values_of_a_tf_checkpoint_warn_at_the_restore_call(tf_adam_saved):
    with pytest.warns(trackpoint.PartialRestoreWarning, match="opt") as record:
        trackpoint.Checkpoint(net=tp_tree(1)).restore(tf_adam_saved[0])
    assert record[0].filename == __file__


# -- the Keras seed fixture -------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_prefix(tf_fixtures):
    return str(tf_fixtures / "keras_adam" / "ckpt-1")


def test_keras_seed_lists_the_same_keys_and_shapes_as_tf(tf, keras_prefix):
    theirs = tf.train.list_variables(keras_prefix)
    assert trackpoint.list_variables(keras_prefix) == theirs
    with trackpoint.load_checkpoint(keras_prefix) as reader:
        ours = reader.get_variable_to_dtype_map()
    tf_dtypes = tf.train.load_checkpoint(keras_prefix).get_variable_to_dtype_map()
    assert {key: str(dtype) for key, dtype in ours.items()} == {
        key: dtype.name for key, dtype in tf_dtypes.items()
    }
    assert len(theirs) == 16  # 15 values and the object graph


def _graph_fields(graph: Any) -> Any:
    """Every field of every node, read through the message API (works for both proto classes)."""
    nodes = []
    for node in graph.nodes:
        nodes.append(
            {
                "children": [(c.node_id, c.local_name) for c in node.children],
                "attributes": [(a.name, a.full_name, a.checkpoint_key) for a in node.attributes],
                "slot_variables": [
                    (s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                    for s in node.slot_variables
                ],
                "registered_saver": (
                    (node.registered_saver.name, node.registered_saver.object_name)
                    if node.HasField("registered_saver")
                    else None
                ),
                "has_checkpoint_values": (
                    node.has_checkpoint_values.value
                    if node.HasField("has_checkpoint_values")
                    else None
                ),
            }
        )
    return nodes


def test_keras_seed_object_graph_decodes_as_in_tf(tf, keras_prefix):
    with trackpoint.load_checkpoint(keras_prefix) as reader:
        raw = bytes(reader.get_tensor(OBJECT_GRAPH_KEY).reshape(-1)[0])
    assert raw == tf.train.load_checkpoint(keras_prefix).get_tensor(OBJECT_GRAPH_KEY)
    ours = tp_graph_pb2.TrackableObjectGraph.FromString(raw)
    theirs = decode_graph(tf, keras_prefix)
    assert _graph_fields(ours) == _graph_fields(theirs)
    assert ours.SerializeToString() == theirs.SerializeToString() == raw
    # The seed's shape, as TF reports it (format doc §7.5).
    fields = _graph_fields(ours)
    assert len(fields) == 25
    assert fields[0]["children"] == [(1, "model"), (2, "optimizer"), (3, "save_counter")]
    assert not any(node["slot_variables"] for node in fields)
    assert [i for i, node in enumerate(fields) if not node["has_checkpoint_values"]] == [8]
    assert fields[13]["attributes"] == [
        ("VARIABLE_VALUE", "net/kernel", "model/dense_1/_kernel/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    # Every attribute key names a tensor both libraries list.
    keys = {key for key, _ in trackpoint.list_variables(keras_prefix)}
    assert {a[2] for node in fields for a in node["attributes"]} == keys - {OBJECT_GRAPH_KEY}


# -- save numbering, write, the state file ----------------------------------------------


def _run_save_sequence(lib: Any, folder: Any, variable: Any) -> Any:
    """save, save, then a new Checkpoint restores ckpt-1 and saves; write twice."""
    state = os.path.join(folder, "checkpoint")
    checkpoint = lib.Checkpoint(v=variable)
    first = checkpoint.save(os.path.join(folder, "ckpt"))
    second = checkpoint.save(os.path.join(folder, "ckpt"))
    restored = lib.Checkpoint(v=variable)
    restored.restore(first).assert_consumed()
    third = restored.save(os.path.join(folder, "ckpt"))
    with open(state, "rb") as f:
        state_text = f.read()
    fresh = lib.Checkpoint(v=variable)
    written = fresh.write(os.path.join(folder, "written"))
    with open(state, "rb") as f:
        untouched = f.read() == state_text
    after_save = restored.write(os.path.join(folder, "written_after_save"))
    return {
        "paths": [os.path.basename(str(p)) for p in (first, second, third, written, after_save)],
        "state": state_text,
        "write_left_state_alone": untouched,
        "files": sorted(os.listdir(folder)),
    }


@pytest.fixture(scope="module")
def save_sequences(tf, tmp_path_factory):
    tf_folder = str(tmp_path_factory.mktemp("tf_numbering"))
    tp_folder = str(tmp_path_factory.mktemp("tp_numbering"))
    return (
        _run_save_sequence(tf.train, tf_folder, tf.Variable(1.5)),
        _run_save_sequence(trackpoint, tp_folder, trackpoint.Variable(np.float32(1.5))),
        tf_folder,
        tp_folder,
    )


def test_save_numbers_and_state_file_match_tf(save_sequences):
    theirs, ours, _, _ = save_sequences
    assert ours == theirs
    # After restore(ckpt-1) the counter is 1 again, so the next save is ckpt-2 (overwritten).
    assert ours["paths"] == ["ckpt-1", "ckpt-2", "ckpt-2", "written", "written_after_save"]
    assert (
        ours["state"] == b'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n'
    )
    assert ours["write_left_state_alone"]
    assert "written.index" in ours["files"]


def test_write_creates_no_save_counter_unless_one_exists(tf, save_sequences):
    _, _, tf_folder, tp_folder = save_sequences
    for name, has_counter in (("written", False), ("written_after_save", True)):
        ours = variable_listing(tf, os.path.join(tp_folder, name))
        assert ours == variable_listing(tf, os.path.join(tf_folder, name))
        assert ("save_counter/.ATTRIBUTES/VARIABLE_VALUE" in ours) is has_counter


def test_tf_latest_checkpoint_agrees_on_a_trackpoint_folder(tf, save_sequences):
    _, _, _, tp_folder = save_sequences
    latest = trackpoint.latest_checkpoint(tp_folder)
    assert latest == tf.train.latest_checkpoint(tp_folder) == os.path.join(tp_folder, "ckpt-2")
    state = tf.train.get_checkpoint_state(tp_folder)
    assert list(state.all_model_checkpoint_paths) == [latest]
    assert list(state.all_model_checkpoint_timestamps) == []


def test_tf_continues_numbering_of_a_trackpoint_folder(tf, tmp_path):
    variable = trackpoint.Variable(np.float32(2.0))
    ours = trackpoint.Checkpoint(v=variable)
    for _ in range(3):
        ours.save(tmp_path / "ckpt")
    theirs = tf.train.Checkpoint(v=tf.Variable(0.0))
    theirs.restore(tf.train.latest_checkpoint(str(tmp_path))).assert_consumed()
    assert theirs.save(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt-4")
    again = trackpoint.Checkpoint(v=trackpoint.Variable(np.float32(0.0)))
    again.restore(trackpoint.latest_checkpoint(tmp_path)).assert_consumed()
    assert again.save(tmp_path / "ckpt") == str(tmp_path / "ckpt-5")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-5")
