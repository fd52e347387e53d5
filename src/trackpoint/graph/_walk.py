"""The one walk of the live objects: node ids, first paths and slot nodes, as TF gives them.

TF format doc §7.3: nodes breadth-first from the root, children in each object's own
order, a node's id given when first discovered (a shared object keeps its first id and
its first, shortest path); then slot variables, for each optimizer node in node order,
for each slot name, for each variable in node order. The ids decide the bytes of the
object graph, so every question about the live graph is answered from this one walk:
the save serializes its nodes (`_saving.save_graph`), `GraphView` indexes them, the
restore status names what it did not restore (`_view.walk_values`) and a name-based
restore matches their values (`_matching.restore_by_name`).

A save of many small tensors walks tens of thousands of nodes, so the walk keeps per
node only its object, its first parent, its name there and its id (and, per child edge,
two ints): paths are rebuilt from these when a key or a message needs one, and what a
consumer wants to keep of a node it keeps itself.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from trackpoint.errors import NotTrackableError

from ._keys import OBJECT_ATTRIBUTES, VARIABLE_VALUE, display_path, object_path, slot_key
from ._trackable import Trackable, to_trackable

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LiveGraph", "SlotNode", "walk"]

#: A slot variable node's path is its key without this (as `GraphView` names it).
_SLOT_SUFFIX = len(f"/{OBJECT_ATTRIBUTES}/{VARIABLE_VALUE}")


class SlotNode(NamedTuple):
    """A slot variable's node: whose slot it is, its key's object path, its trackable."""

    node_id: int
    optimizer_id: int
    variable_id: int
    slot_name: str
    path: str
    trackable: Trackable


class LiveGraph:
    """One breadth-first walk of the objects reachable from `root`.

    Call `nodes()` (the breadth-first nodes), then `slot_nodes()` (the slot variables,
    which need every breadth-first node first); paths and `has_checkpoint_values` are
    asked of the walk once its nodes were met.

    Attributes:
        objects: Per node its object, in node order (also what keeps ids unique).
    """

    def __init__(self, root: object) -> None:
        self.objects: list[object] = [root]
        # Per node: its first parent (-1: none) and its name under that parent.
        self._parents = array("i", [-1])
        self._names: list[str] = [""]
        self._ids = {id(root): 0}
        # Every child edge, for `has_checkpoint_values` (which follows them upwards).
        self._edge_parents = array("i")
        self._edge_children = array("i")
        self._optimizers: list[tuple[int, Trackable]] = []
        self._bfs_count = -1  # set once `nodes()` has met every breadth-first node

    def nodes(self) -> Iterator[tuple[int, Trackable, list[tuple[str, int]]]]:
        """(node id, its trackable, its children as (name, node id)), breadth-first.

        Raises:
            NotTrackableError: an object nobody knows how to checkpoint, named by its path.
        """
        objects, ids, parents, names = self.objects, self._ids, self._parents, self._names
        edge_parents, edge_children = self._edge_parents, self._edge_children
        at = 0
        # Ids are given in discovery order and nodes expanded in id order: the list of
        # objects is the breadth-first queue itself.
        while at < len(objects):
            obj = objects[at]
            try:
                trackable = to_trackable(obj)
            except NotTrackableError:
                # Raises again, naming the object's path.
                trackable = to_trackable(obj, path=display_path(self.names_of(at)))
            children: list[tuple[str, int]] = []
            for name, child in trackable.trackable_children().items():
                child_id = ids.get(id(child))
                if child_id is None:
                    child_id = len(objects)
                    objects.append(child)
                    parents.append(at)
                    names.append(name)
                    ids[id(child)] = child_id
                children.append((name, child_id))
                edge_parents.append(at)
                edge_children.append(child_id)
            if trackable.slot_names():
                self._optimizers.append((at, trackable))
            yield at, trackable, children
            at += 1
        self._bfs_count = len(objects)

    def slot_nodes(self, *, strict: bool = True) -> Iterator[SlotNode]:
        """Add the optimizers' slot variables as nodes, in TF's order, and yield them.

        Args:
            strict: Refuse a slot variable that is also an object's child, as TF does
                on save; else it keeps its node (a question about the program, not a save).

        Raises:
            NotTrackableError: a slot that is also a child (when strict), or that nobody
                knows how to checkpoint.
        """
        if self._bfs_count < 0:
            # Slots are found among all breadth-first nodes: before that, some would be lost.
            raise RuntimeError("LiveGraph.slot_nodes() is called after nodes() has ended")
        objects, ids = self.objects, self._ids
        bfs = objects[: self._bfs_count]
        for optimizer_id, optimizer in self._optimizers:
            optimizer_path = self.key_path(optimizer_id)
            for slot_name in optimizer.slot_names():
                for variable_id, variable in enumerate(bfs):
                    slot = optimizer.get_slot(variable, slot_name)
                    if slot is None:
                        continue
                    if id(slot) in ids:
                        if not strict:
                            continue
                        raise NotTrackableError(
                            f"slot {slot_name!r} of {self.display(variable_id)} is also a "
                            f"child of {self.display(ids[id(slot)])}; a slot variable cannot "
                            "be tracked twice"
                        )
                    key = slot_key(self.key_path(variable_id), optimizer_path, slot_name)
                    trackable = to_trackable(slot, path=key)
                    slot_id = len(objects)
                    objects.append(slot)
                    self._parents.append(-1)
                    self._names.append("")
                    ids[id(slot)] = slot_id
                    yield SlotNode(
                        slot_id,
                        optimizer_id,
                        variable_id,
                        slot_name,
                        key[:-_SLOT_SUFFIX],
                        trackable,
                    )

    # -- paths, only when a key or a message needs one ------------------------------------

    def names_of(self, node_id: int) -> tuple[str, ...]:
        """A breadth-first node's first path of local names (the root's is empty)."""
        names: list[str] = []
        while node_id > 0:
            names.append(self._names[node_id])
            node_id = self._parents[node_id]
        return tuple(reversed(names))

    def key_path(self, node_id: int) -> str:
        """A breadth-first node's path in checkpoint keys (`model/dense_1`)."""
        return object_path(self.names_of(node_id))

    def display(self, node_id: int) -> str:
        """How messages name a node (`model.dense_1`; a slot by its key's path)."""
        if node_id == 0 or self._parents[node_id] >= 0:
            return display_path(self.names_of(node_id))
        return self._slot_path(node_id)

    def _slot_path(self, node_id: int) -> str:
        """A slot variable node's path (for a message: found again rather than kept)."""
        slot = self.objects[node_id]
        bfs = self.objects[: self._bfs_count]
        for optimizer_id, optimizer in self._optimizers:
            for slot_name in optimizer.slot_names():
                for variable_id, variable in enumerate(bfs):
                    if optimizer.get_slot(variable, slot_name) is slot:
                        key = slot_key(
                            self.key_path(variable_id), self.key_path(optimizer_id), slot_name
                        )
                        return key[:-_SLOT_SUFFIX]
        return "a slot variable"  # pragma: no cover - every slot node was found this way

    # -- has_checkpoint_values --------------------------------------------------------------

    def has_checkpoint_values(self, valued: bytearray) -> bytearray:
        """Per node, 1 when it or anything below it (children edges only) holds values.

        Propagated from the valued nodes up their parents, each node once; the parents of
        each node are found through the edges sorted by child (4 bytes per edge).

        Args:
            valued: Per node, 1 where the node itself holds values or slot variables.
        """
        has = bytearray(valued)
        children = np.frombuffer(self._edge_children, dtype=np.int32)
        by_child = np.argsort(children, kind="stable")
        parents = array("i", np.frombuffer(self._edge_parents, dtype=np.int32)[by_child].tobytes())
        bounds = np.searchsorted(children[by_child], np.arange(len(has) + 1, dtype=np.int32))
        starts = array("q", bounds.astype(np.int64).tobytes())
        del by_child, bounds
        flagged = np.flatnonzero(np.frombuffer(valued, dtype=np.uint8))
        stack = array("i", flagged.astype(np.int32).tobytes())
        del flagged
        while stack:
            child = stack.pop()
            for parent in parents[starts[child] : starts[child + 1]]:
                if not has[parent]:
                    has[parent] = 1
                    stack.append(parent)
        return has

    def release(self) -> None:
        """Let the objects, their ids and names go (the edges stay for the flags)."""
        self.objects.clear()
        self._ids.clear()
        self._names.clear()


def walk(root: object) -> Iterator[object]:
    """Every object reachable from `root` through children, each once, breadth-first.

    The objects a save would write as nodes, in node order (slot variables aside).

    Raises:
        NotTrackableError: an object nobody knows how to checkpoint, named by its path.

    Example:
        >>> from trackpoint import Module, Variable
        >>> root = Module()
        >>> root.inner = Module()
        >>> root.inner.w = Variable(1.0)
        >>> root.b = Variable(2.0)
        >>> [type(obj).__name__ for obj in walk(root)]
        ['Module', 'Module', 'Variable', 'Variable']
    """
    graph = LiveGraph(root)
    for node_id, _, _ in graph.nodes():
        yield graph.objects[node_id]
