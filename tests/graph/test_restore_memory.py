"""A restore's bookkeeping: flat per-node arrays, a graph parsed node by node, few bytes a value.

Issue 5's target: a restore into existing tensors adds at most 5% of the state (plus a
fixed few MiB) to peak memory. For 20,000 to 60,000 tensors of ~10 KiB that leaves ~500
bytes a tensor for everything a restore keeps: the index, the saved graph, the bindings,
the read requests and the status's walk of the live objects.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from google.protobuf.message import DecodeError

import trackpoint
from tests._memory import traced_peak
from trackpoint.errors import MismatchError
from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2
from trackpoint.graph import SavedGraph, parse_nodes

MiB = 1 << 20


def _state(count: int, fill: float) -> dict[str, dict[str, np.ndarray]]:
    # Two levels, as a model's layers and their weights; tiny tensors, so that the
    # bookkeeping (not the values) is what the peak measures.
    return {
        f"layer{i:03d}": {
            f"w{j:02d}": np.full(16 + j % 7, fill + i * 100 + j, np.float32) for j in range(100)
        }
        for i in range(count // 100)
    }


def _values(state: dict[str, dict[str, np.ndarray]]) -> list[np.ndarray]:
    return [w for layer in state.values() for w in layer.values()]


def test_restoring_twenty_thousand_values_keeps_under_500_bytes_a_value(tmp_path):
    count = 20_000
    path = trackpoint.Checkpoint(model=_state(count, 1.0)).write(tmp_path / "ckpt")
    live = _state(count, -1.0)
    ckpt = trackpoint.Checkpoint(model=live)
    ckpt.read(path).assert_consumed()  # warm: imports, reusable read buffers
    for value in _values(live):
        value[...] = -1.0
    gc.collect()
    peak = traced_peak(lambda: ckpt.read(path).assert_consumed())
    # 5% of 20,000 tensors of ~10 KiB (the benchmark's small case) is 512 bytes each;
    # 4 MiB for what does not grow with the count (two 1 MiB read buffers and the like).
    # The bookkeeping before the flat arrays was ~1.4 KiB a value.
    assert peak < count * 500 + 4 * MiB, f"{peak / count:.0f} bytes a value"
    saved = _state(count, 1.0)
    for (name, layer), (_, expect) in zip(live.items(), saved.items(), strict=True):
        for key, value in layer.items():
            np.testing.assert_array_equal(value, expect[key], err_msg=f"{name}/{key}")


def _graph() -> graph_pb2.TrackableObjectGraph:
    graph = graph_pb2.TrackableObjectGraph()
    root = graph.nodes.add()
    root.children.add(node_id=1, local_name="model")
    root.children.add(node_id=3, local_name="opt")
    model = graph.nodes.add()
    model.children.add(node_id=2, local_name="kérnel/0")  # non-ASCII, escaped characters
    kernel = graph.nodes.add()
    kernel.attributes.add(
        name="VARIABLE_VALUE", full_name="k", checkpoint_key="model/k/.ATTRIBUTES/VARIABLE_VALUE"
    )
    opt = graph.nodes.add()
    opt.slot_variables.add(original_variable_node_id=2, slot_name="m", slot_variable_node_id=4)
    opt.has_checkpoint_values.value = True
    slot = graph.nodes.add()
    slot.attributes.add(name="VARIABLE_VALUE", checkpoint_key="slot/.ATTRIBUTES/VARIABLE_VALUE")
    slot.has_checkpoint_values.value = False
    return graph


def _facts(saved: SavedGraph) -> list[object]:
    return [
        len(saved),
        [saved.children(n) for n in range(len(saved))],
        [saved.attributes(n) for n in range(len(saved))],
        [saved.has_values(n) for n in range(len(saved))],
        saved.slot_refs,
    ]


def test_the_saved_graph_holds_what_the_proto_says():
    graph = _graph()
    saved = SavedGraph(parse_nodes(graph.SerializeToString()), lambda key: key)
    assert _facts(saved) == [
        5,
        [[("model", 1), ("opt", 3)], [("kérnel/0", 2)], [], [], []],
        [
            [],
            [],
            [("VARIABLE_VALUE", "model/k/.ATTRIBUTES/VARIABLE_VALUE")],
            [],
            [("VARIABLE_VALUE", "slot/.ATTRIBUTES/VARIABLE_VALUE")],
        ],
        # Unset: derived (children, attributes, slots); set: as written, even if False.
        [True, True, True, True, False],
        [(3, 2, "m", 4)],
    ]
    assert saved.child_name(1, 0) == "kérnel/0"


def test_the_saved_graph_keeps_the_index_own_key_strings():
    kept = {"model/k/.ATTRIBUTES/VARIABLE_VALUE": "model/k/.ATTRIBUTES/VARIABLE_VALUE"}
    own = "".join(["model/k/", ".ATTRIBUTES/VARIABLE_VALUE"])  # equal, another object
    kept[own] = own
    saved = SavedGraph(parse_nodes(_graph().SerializeToString()), lambda key: kept.get(key, key))
    assert saved.attributes(2)[0][1] is own


def test_node_by_node_parsing_falls_back_to_protobuf_for_any_other_framing():
    graph = _graph()
    raw = graph.SerializeToString()
    expect = _facts(SavedGraph(graph.nodes, lambda key: key))
    # A field protobuf skips (number 15, varint) at the end, and one in the middle.
    unknown = bytes([15 << 3, 7])
    first = len(graph.nodes[0].SerializeToString()) + 2
    for variant in (raw + unknown, raw[:first] + unknown + raw[first:]):
        assert _facts(SavedGraph(parse_nodes(variant), lambda key: key)) == expect
    with pytest.raises(DecodeError):
        SavedGraph(parse_nodes(raw[:-3]), lambda key: key)  # cut inside the last node


def test_a_value_shared_by_two_paths_is_named_once_when_it_was_not_restored(tmp_path):
    path = trackpoint.Checkpoint(a={"x": np.ones(2)}).write(tmp_path / "ckpt")
    shared = np.zeros(3)
    live = trackpoint.Checkpoint(a={"x": np.zeros(2)}, b={"y": shared, "z": shared})
    status = live.read(path, expect_partial=True)
    with pytest.raises(MismatchError) as caught:
        status.assert_existing_objects_matched()
    assert caught.value.unrestored_objects == ("b.y",)


def test_an_object_bound_to_two_saved_nodes_counts_as_restored(tmp_path):
    w = np.arange(3.0)
    path = trackpoint.Checkpoint(a={"w": w}, b={"w": w.copy()}).write(tmp_path / "ckpt")
    live = np.zeros(3)
    status = trackpoint.Checkpoint(a={"w": live}, b={"w": live}).read(path)
    status.assert_consumed()
    np.testing.assert_array_equal(live, w)
