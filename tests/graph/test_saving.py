"""The save-time walk yields `GraphView`'s keys, values and object graph, byte for byte."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from trackpoint.graph import GraphView, Trackable, Value, save_graph
from trackpoint.graph._keys import slot_key
from trackpoint.optimizers import Adam

from .conftest import Net

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


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


class _DottedSlots(Trackable):
    """An optimizer whose one slot has a name TF must escape (`.` and `/`)."""

    SLOT = "m.1/x"

    def __init__(self, variable: trackpoint.Variable) -> None:
        self._variable = variable
        self._slot = trackpoint.Variable(np.full(3, 7.0, np.float32))

    def slot_names(self) -> list[str]:
        return [self.SLOT]

    def get_slot(self, variable: object, slot_name: str) -> object | None:
        return self._slot if variable is self._variable and slot_name == self.SLOT else None


def test_slot_key_escapes_the_slot_name_as_tf_does() -> None:
    # TF format doc §7.3: <variable path>/.OPTIMIZER_SLOT/<optimizer path>/<escape(slot)>/...
    assert slot_key("net/a..b", "opt", "m.1/x") == (
        "net/a..b/.OPTIMIZER_SLOT/opt/m..1.Sx/.ATTRIBUTES/VARIABLE_VALUE"
    )


def test_saved_slot_with_dots_and_slashes_gets_an_escaped_key(tmp_path: Path) -> None:
    w = trackpoint.Variable(np.zeros(3, np.float32))
    path = trackpoint.Checkpoint(w=w, opt=_DottedSlots(w)).write(tmp_path / "ckpt")
    keys = {key for key, _ in trackpoint.list_variables(path)}
    key = "w/.OPTIMIZER_SLOT/opt/m..1.Sx/.ATTRIBUTES/VARIABLE_VALUE"
    assert key in keys
    assert not any("m.1/x" in k for k in keys)
    assert trackpoint.load_checkpoint(path).get_tensor(key).tolist() == [7.0, 7.0, 7.0]
