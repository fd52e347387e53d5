"""The saving view: live objects → TF's `TrackableObjectGraph` and checkpoint keys.

Built exactly as TensorFlow builds it (TF format doc §7.3): nodes breadth-first from the
root, children in each object's own order, a node's id given when first discovered (a
shared object keeps its first id and its first, shortest path); then slot variables, for
each optimizer node in node order, for each slot name, for each variable in node order.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from trackpoint.errors import NotTrackableError
from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

from ._keys import attribute_key, display_path, escape_local_name, object_path, slot_key
from ._saving import has_checkpoint_values, slot_variables, tracked_twice
from ._trackable import Trackable, Value, to_trackable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["GraphView", "SavedValue", "ViewNode", "walk", "walk_values"]


@dataclass(frozen=True, slots=True)
class SavedValue:
    """One value to save: its bundle key, its name on the node, and where to read it."""

    key: str
    name: str
    full_name: str
    value: Value
    node_id: int


@dataclass(slots=True)
class ViewNode:
    """One object of the graph being saved.

    The sequences are an empty tuple until the node has entries: three empty lists per
    leaf would be a third of the view's memory for a model of many small tensors.
    """

    node_id: int
    obj: object
    trackable: Trackable
    names: tuple[str, ...] | None  # None for slot variables (nobody's child)
    key_path: str
    children: Sequence[tuple[str, int]] = ()
    values: Sequence[SavedValue] = ()
    slots: list[tuple[int, str, int]] | tuple[()] = ()

    @property
    def display(self) -> str:
        return display_path(self.names) if self.names is not None else self.key_path


def walk(root: object) -> Iterator[object]:
    """Every object reachable from `root` through children, each once, breadth-first."""
    seen = {id(root)}
    keep = [root]  # ids are only unique while the objects live
    queue = deque([root])
    while queue:
        obj = queue.popleft()
        yield obj
        for name, child in to_trackable(obj).trackable_children().items():
            del name
            if id(child) not in seen:
                seen.add(id(child))
                keep.append(child)
                queue.append(child)


def walk_values(root: object) -> Iterator[tuple[object, Callable[[], str], list[str]]]:
    """Each object reachable from `root` that holds values: (object, display, value names).

    The objects `GraphView` would save (children breadth-first, then slot variables),
    without keeping a node per object: for questions about every live value (which were
    not restored) that must not cost a second copy of the graph's bookkeeping. `display`
    makes the object's name when called (only the few a message names need one). Names
    are escaped as in the saved graph's attributes. A value reachable by two paths may be
    yielded twice; objects with children are expanded once.
    """
    # Per object seen: the object (keeps ids unique), its parent's index and its name
    # under it — 20 bytes, not a tuple of names; only containers go into `expanded`.
    objects: list[object] = [root]
    parents = array("i", [-1])
    local_names: list[str] = [""]
    expanded: set[int] = set()
    optimizers: list[tuple[Trackable, int]] = []

    def names_of(index: int) -> tuple[str, ...]:
        names: list[str] = []
        while index > 0:
            names.append(local_names[index])
            index = parents[index]
        return tuple(reversed(names))

    at = 0
    while at < len(objects):
        obj, index = objects[at], at
        at += 1
        try:
            trackable = to_trackable(obj)
        except NotTrackableError:
            # Raises again, naming the object's path.
            trackable = to_trackable(obj, path=display_path(names_of(index)))
        if trackable.slot_names():
            optimizers.append((trackable, index))
        values = trackable.trackable_values()
        if values:
            yield (
                obj,
                partial(_display_of, names_of, index),
                [escape_local_name(n) for n in values],
            )
        children = trackable.trackable_children()
        if children and id(obj) not in expanded:
            expanded.add(id(obj))
            for name, child in children.items():
                if id(child) in expanded:
                    continue
                objects.append(child)
                parents.append(index)
                local_names.append(name)
    found: set[int] = set()
    for optimizer, opt_index in optimizers:
        opt_path = object_path(names_of(opt_index))
        for slot_name in optimizer.slot_names():
            for var_index, variable in enumerate(objects):
                slot = optimizer.get_slot(variable, slot_name)
                if slot is None or id(slot) in found:
                    continue
                found.add(id(slot))
                values = to_trackable(slot).trackable_values()
                if values:
                    where = partial(_slot_display, names_of, var_index, opt_path, slot_name)
                    yield slot, where, [escape_local_name(n) for n in values]


def _display_of(names_of: Callable[[int], tuple[str, ...]], index: int) -> str:
    return display_path(names_of(index))


def _slot_display(
    names_of: Callable[[int], tuple[str, ...]], var_index: int, opt_path: str, slot_name: str
) -> str:
    key = slot_key(object_path(names_of(var_index)), opt_path, slot_name)
    return key[: -len("/.ATTRIBUTES/VARIABLE_VALUE")]  # as GraphView names it


class GraphView:
    """The object graph of `root` as it would be saved now.

    Attributes:
        nodes: Every node, node 0 the root, in TF's id order.
    """

    def __init__(self, root: object) -> None:
        self.nodes: list[ViewNode] = []
        self._ids: dict[int, int] = {}
        self._add(root, (), "")
        queue = deque([0])
        while queue:
            node = self.nodes[queue.popleft()]
            children: list[tuple[str, int]] = []
            for name, child in node.trackable.trackable_children().items():
                child_id = self._ids.get(id(child))
                if child_id is None:
                    names = (*(node.names or ()), name)
                    child_id = self._add(child, names, object_path(names))
                    queue.append(child_id)
                children.append((name, child_id))
            if children:
                node.children = children
        self._add_slot_variables()
        for node in self.nodes:
            self._collect_values(node)

    def _add(self, obj: object, names: tuple[str, ...], key_path: str) -> int:
        try:
            trackable = to_trackable(obj)
        except NotTrackableError:
            trackable = to_trackable(obj, path=display_path(names))  # raises, naming it
        node = ViewNode(len(self.nodes), obj, trackable, names, key_path)
        self.nodes.append(node)
        self._ids[id(obj)] = node.node_id
        return node.node_id

    def _add_slot_variables(self) -> None:
        bfs_nodes = list(self.nodes)
        objects = [node.obj for node in bfs_nodes]
        for optimizer in bfs_nodes:
            for slot_name, variable_id, slot in slot_variables(optimizer.trackable, objects):
                variable = bfs_nodes[variable_id]
                if id(slot) in self._ids:
                    raise tracked_twice(
                        slot_name, variable.display, self.nodes[self._ids[id(slot)]].display
                    )
                key = slot_key(variable.key_path, optimizer.key_path, slot_name)
                slot_node = ViewNode(
                    len(self.nodes),
                    slot,
                    to_trackable(slot, path=key),
                    None,
                    key[: -len("/.ATTRIBUTES/VARIABLE_VALUE")],
                )
                self.nodes.append(slot_node)
                self._ids[id(slot)] = slot_node.node_id
                if not optimizer.slots:
                    optimizer.slots = []
                optimizer.slots.append((variable.node_id, slot_name, slot_node.node_id))

    def _collect_values(self, node: ViewNode) -> None:
        full_name = node.trackable.trackable_name
        values = []
        for name, value in node.trackable.trackable_values().items():
            escaped = escape_local_name(name)
            values.append(
                SavedValue(
                    attribute_key(node.key_path, escaped), escaped, full_name, value, node.node_id
                )
            )
        if values:
            node.values = values

    def saved_values(self) -> list[SavedValue]:
        """Every value to save, in node order (TF's data-file order)."""
        return [value for node in self.nodes for value in node.values]

    def to_proto(self) -> graph_pb2.TrackableObjectGraph:
        """The `TrackableObjectGraph` TF writes for these objects."""
        has_values = self._has_checkpoint_values()
        graph = graph_pb2.TrackableObjectGraph()
        for node in self.nodes:
            proto = graph.nodes.add()
            for name, child_id in node.children:
                proto.children.add(node_id=child_id, local_name=name)
            for value in node.values:
                proto.attributes.add(
                    name=value.name, full_name=value.full_name, checkpoint_key=value.key
                )
            for original, slot_name, slot_id in node.slots:
                proto.slot_variables.add(
                    original_variable_node_id=original,
                    slot_name=slot_name,
                    slot_variable_node_id=slot_id,
                )
            proto.has_checkpoint_values.value = bool(has_values[node.node_id])
        return graph

    def _has_checkpoint_values(self) -> bytearray:
        valued = bytearray(1 if n.values or n.slots else 0 for n in self.nodes)
        parents, children = array("i"), array("i")
        for node in self.nodes:
            for _, child_id in node.children:
                parents.append(node.node_id)
                children.append(child_id)
        return has_checkpoint_values(valued, parents, children)
