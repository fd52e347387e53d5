"""The saved object graph and keys are TensorFlow's (format doc §7.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint
from trackpoint.graph import GraphView, _trackable, display_path, escape_local_name
from trackpoint.optimizers import Adam

from .conftest import Net


def _keys(root: object) -> list[str]:
    return [v.key for v in GraphView(root).saved_values()]


def test_keys_follow_breadth_first_shortest_paths() -> None:
    ckpt = trackpoint.Checkpoint(model=Net())
    ckpt.save_counter  # noqa: B018 - created like TF creates it on save
    assert _keys(ckpt) == [
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_1/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_1/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_2/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_2/bias/.ATTRIBUTES/VARIABLE_VALUE",
    ]


def test_checkpoint_children_are_sorted_and_save_counter_last() -> None:
    ckpt = trackpoint.Checkpoint(zeta=np.zeros(1), alpha=np.zeros(1))
    ckpt.save_counter  # noqa: B018
    root = GraphView(ckpt).nodes[0]
    assert [name for name, _ in root.children] == ["alpha", "zeta", "save_counter"]


def test_shared_object_is_saved_once_under_its_shortest_path() -> None:
    root = trackpoint.Module()
    root.lin = trackpoint.Module()
    root.lin.w = trackpoint.Variable(np.ones(2))
    root.shared = root.lin.w
    view = GraphView(root)
    # `shared` is met at depth 1, before `lin/w` at depth 2: its path names the variable.
    assert _keys(root) == ["shared/.ATTRIBUTES/VARIABLE_VALUE"]
    # Both edges point at one node.
    edges = {name: child for node in view.nodes for name, child in node.children}
    assert edges["w"] == edges["shared"]


def test_dict_keys_and_list_indices_are_escaped_child_names() -> None:
    root = trackpoint.Module()
    root.extra = {"a/b.c": trackpoint.Variable(3.0), "list": [np.zeros(1), np.ones(1)]}
    assert _keys(root) == [
        "extra/a.Sb..c/.ATTRIBUTES/VARIABLE_VALUE",
        "extra/list/0/.ATTRIBUTES/VARIABLE_VALUE",
        "extra/list/1/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    assert escape_local_name("a/b.c") == "a.Sb..c"
    assert display_path(["extra", "a/b.c"]) == "extra['a/b.c']"


def test_slot_variables_follow_the_bfs_nodes_in_tf_order() -> None:
    net = Net()
    opt = Adam(0.1)
    opt.apply_gradients([(np.ones((4, 10), np.float32), net.dense_1.kernel)])
    opt.apply_gradients([(np.ones(10, np.float32), net.dense_1.bias)])
    view = GraphView(trackpoint.Checkpoint(model=net, opt=opt))
    keys = [v.key for v in view.saved_values()]
    assert keys[-4:] == [
        "model/dense_1/kernel/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_1/bias/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_1/kernel/.OPTIMIZER_SLOT/opt/v/.ATTRIBUTES/VARIABLE_VALUE",
        "model/dense_1/bias/.OPTIMIZER_SLOT/opt/v/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    proto = view.to_proto()
    opt_node = proto.nodes[[n for n, _ in view.nodes[0].children].index("opt") + 1]
    assert [(s.slot_name, s.slot_variable_node_id) for s in opt_node.slot_variables] == [
        ("m", len(view.nodes) - 4),
        ("m", len(view.nodes) - 3),
        ("v", len(view.nodes) - 2),
        ("v", len(view.nodes) - 1),
    ]


def test_has_checkpoint_values_marks_only_subtrees_with_values() -> None:
    root = trackpoint.Module()
    root.empty = trackpoint.Module()
    root.full = trackpoint.Module()
    root.full.inner = [trackpoint.Variable(1)]
    flags = [n.has_checkpoint_values.value for n in GraphView(root).to_proto().nodes]
    assert flags == [True, False, True, True, True]


def test_cycles_terminate() -> None:
    a = trackpoint.Module()
    a.w = trackpoint.Variable(1.0)
    a.me = [a]  # a list holding its own parent
    assert _keys(a) == ["w/.ATTRIBUTES/VARIABLE_VALUE"]


def test_unknown_object_type_names_its_path_and_register(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registration is process-wide: this test's own registry, dropped at its end.
    monkeypatch.setattr(_trackable, "_REGISTRY", dict(_trackable._REGISTRY))
    root = trackpoint.Module()
    root.things = [object()]  # not trackable: skipped inside containers
    assert _keys(root) == []

    class Weird:
        pass

    trackpoint.register(Weird, lambda obj: trackpoint.Module())
    root.weird = Weird()
    assert "weird" in root.trackable_children()


def test_dict_with_non_string_key_is_refused() -> None:
    root = trackpoint.Module()
    root.table = {1: trackpoint.Variable(1.0)}
    with pytest.raises(trackpoint.NotTrackableError, match="string keys"):
        GraphView(root)


def test_object_graph_bytes_match_tensorflow_fixture(tf_fixtures: Path) -> None:
    # The tf.Module tree of the module_slots fixture, rebuilt with trackpoint objects,
    # yields the very object graph TF wrote (full_name aside).
    from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

    root = trackpoint.Module()
    root.lin = trackpoint.Module()
    root.lin.w = trackpoint.Variable(np.zeros((2, 2), np.float32))
    root.lin.b = trackpoint.Variable(np.zeros(2, np.float32))
    root.extra = {
        "a/b.c": trackpoint.Variable(np.float32(0)),
        "list": [trackpoint.Variable(np.int32(0)), trackpoint.Variable(np.int32(0))],
    }
    root.shared = root.lin.w
    opt = Adam(0.1)
    opt.apply_gradients([(np.ones((2, 2), np.float32), root.lin.w)])
    opt.apply_gradients([(np.ones(2, np.float32), root.lin.b)])
    ckpt = trackpoint.Checkpoint(net=root, opt=opt)
    ckpt.save_counter  # noqa: B018
    ours = GraphView(ckpt).to_proto()
    reader = trackpoint.load_checkpoint(tf_fixtures / "module_slots")
    theirs = graph_pb2.TrackableObjectGraph.FromString(
        bytes(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")[()])
    )
    for graph in (ours, theirs):
        for node in graph.nodes:
            for attribute in node.attributes:
                attribute.full_name = ""
    assert ours.SerializeToString() == theirs.SerializeToString()
