"""One walk of the live objects: save, the graph view, the status and `walk` see the same nodes.

Node ids, first paths and slot nodes are decided once (TF format doc §7.3), so every
question about the live graph gets the answer the saved bytes hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from trackpoint.graph import GraphView, walk
from trackpoint.graph._view import walk_values
from trackpoint.optimizers import Adam

from .test_saving import GRAPHS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_IDS = ["slots-shared-cycle", "root", "many-small", "empty", "net"]


@pytest.mark.parametrize("make", GRAPHS, ids=_IDS)
def test_walk_values_names_each_saved_object_once_as_the_saved_graph_does(
    make: Callable[[], object],
) -> None:
    root = make()
    view = GraphView(root)
    expected = [(n.obj, n.display, [v.name for v in n.values]) for n in view.nodes if n.values]
    got = [(obj, display(), names) for obj, display, names in walk_values(root)]
    assert [(display, names) for _, display, names in got] == [
        (display, names) for _, display, names in expected
    ]
    assert all(a is b for (a, _, _), (b, _, _) in zip(got, expected, strict=True))


@pytest.mark.parametrize("make", GRAPHS, ids=_IDS)
def test_walk_yields_the_saved_graph_objects_in_node_order(make: Callable[[], object]) -> None:
    root = make()
    objects = [n.obj for n in GraphView(root).nodes if n.names is not None]
    walked = list(walk(root))
    assert len(walked) == len(objects)
    assert all(a is b for a, b in zip(walked, objects, strict=True))


def test_module_variables_names_the_path_of_an_object_it_cannot_track() -> None:
    class Weird:
        pass

    class Holder(trackpoint.Module):
        def trackable_children(self) -> dict[str, Any]:
            return {"inner": self.inner}

    root = Holder()
    root.inner = Holder()
    root.inner.inner = Weird()
    with pytest.raises(trackpoint.NotTrackableError, match=r"at inner\.inner"):
        root.variables  # noqa: B018


def test_a_value_shared_by_two_paths_is_walked_once_under_its_first_path() -> None:
    shared = np.zeros(3)
    root = trackpoint.Checkpoint(b={"y": shared}, a={"long": {"z": shared}})
    displays = [display() for obj, display, _ in walk_values(root) if obj is shared]
    assert displays == ["b.y"]


def test_a_program_whose_slot_is_also_a_child_can_still_be_asked_what_was_not_restored(
    tmp_path: Path,
) -> None:
    # TF refuses to save it (test_saving), but restoring into it must not fail the status.
    path = trackpoint.Checkpoint(net={"w": np.ones(2, np.float32)}).write(tmp_path / "ckpt")
    net = trackpoint.Module()
    net.w = trackpoint.Variable(np.zeros(2, np.float32))
    opt = Adam(0.1)
    opt.apply_gradients([(np.ones(2, np.float32), net.w)])
    net.m = opt.get_slot(net.w, "m")
    status = trackpoint.Checkpoint(net=net, opt=opt).read(path, expect_partial=True)
    np.testing.assert_array_equal(net.w.numpy(), np.ones(2, np.float32))
    assert "net.m" in status.unrestored_objects
    assert not any(".OPTIMIZER_SLOT/opt/m" in name for name in status.unrestored_objects)
