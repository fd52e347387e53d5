"""The save-time walk yields `GraphView`'s keys, values and object graph, byte for byte."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from trackpoint.graph import GraphView, Value, save_graph
from trackpoint.optimizers import Adam

from .conftest import Net

if TYPE_CHECKING:
    from collections.abc import Callable


def _module_with_slots() -> trackpoint.Checkpoint:
    root = trackpoint.Module()
    root.lin = trackpoint.Module()
    root.lin.w = trackpoint.Variable(np.zeros((2, 2), np.float32))
    root.lin.b = trackpoint.Variable(np.zeros(2, np.float32))
    root.extra = {
        "a/b.c": trackpoint.Variable(np.float32(0)),
        "list": [trackpoint.Variable(np.int32(0)), np.ones(3)],
        "empty": {},
    }
    root.shared = root.lin.w
    root.loop = [root]  # a cycle back to the root
    opt = Adam(0.1)
    opt.apply_gradients([(np.ones((2, 2), np.float32), root.lin.w)])
    opt.apply_gradients([(np.ones(2, np.float32), root.lin.b)])
    ckpt = trackpoint.Checkpoint(net=root, opt=opt)
    ckpt.save_counter  # noqa: B018 - created as TF creates it on save
    return ckpt


def _checkpoint_with_root() -> trackpoint.Checkpoint:
    ckpt = trackpoint.Checkpoint(root=Net(), extra=[np.zeros(2), (np.ones(1),)])
    ckpt.save_counter  # noqa: B018
    return ckpt


def _many_small_arrays() -> trackpoint.Checkpoint:
    arrays = {f"t{i:04d}": np.full(i % 7, i, np.float32) for i in range(3000)}
    return trackpoint.Checkpoint(model=arrays, opt={"m": {k: v.copy() for k, v in arrays.items()}})


GRAPHS: list[Callable[[], object]] = [
    _module_with_slots,
    _checkpoint_with_root,
    _many_small_arrays,
    trackpoint.Module,
    lambda: trackpoint.Checkpoint(model=Net()),
]


@pytest.mark.parametrize(
    "make", GRAPHS, ids=["slots-shared-cycle", "root", "many-small", "empty", "net"]
)
def test_save_graph_matches_the_graph_view(make: Callable[[], object]) -> None:
    root = make()
    view = GraphView(root)
    seen: list[tuple[str, Value]] = []
    graph = save_graph(root, lambda key, value: seen.append((key, value)))
    assert graph == view.to_proto().SerializeToString()
    expected = view.saved_values()
    assert [key for key, _ in seen] == [saved.key for saved in expected]
    for (_, value), saved in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(value.read(), saved.value.read())


def test_values_are_visited_while_the_walk_goes_in_node_order() -> None:
    order: list[str] = []
    root = trackpoint.Module()
    root.b = trackpoint.Module()
    root.b.deep = trackpoint.Variable(1.0)
    root.a = trackpoint.Variable(2.0)
    save_graph(root, lambda key, value: order.append(key))
    # Breadth first: `a` (depth 1) before `b/deep` (depth 2), whatever the attribute order.
    assert order == ["a/.ATTRIBUTES/VARIABLE_VALUE", "b/deep/.ATTRIBUTES/VARIABLE_VALUE"]


def test_unknown_object_is_named_by_its_path() -> None:
    class Weird:
        pass

    class Holder(trackpoint.Module):
        def trackable_children(self) -> dict[str, Any]:
            return {"inner": self.inner}

    root = Holder()
    root.inner = Holder()
    root.inner.inner = Weird()
    with pytest.raises(trackpoint.NotTrackableError, match=r"at inner\.inner") as caught:
        save_graph(root, lambda key, value: None)
    with pytest.raises(trackpoint.NotTrackableError) as expected:
        GraphView(root)
    assert str(caught.value) == str(expected.value)


def test_slot_variable_that_is_also_a_child_is_refused() -> None:
    root = trackpoint.Module()
    root.w = trackpoint.Variable(np.zeros(2, np.float32))
    opt = Adam(0.1)
    opt.apply_gradients([(np.ones(2, np.float32), root.w)])
    root.m = opt.get_slot(root.w, "m")  # the slot, tracked as a child as well
    ckpt = trackpoint.Checkpoint(net=root, opt=opt)
    with pytest.raises(trackpoint.NotTrackableError, match="tracked twice") as caught:
        save_graph(ckpt, lambda key, value: None)
    with pytest.raises(trackpoint.NotTrackableError) as expected:
        GraphView(ckpt)
    assert str(caught.value) == str(expected.value)
