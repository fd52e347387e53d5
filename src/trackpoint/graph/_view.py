"""The saving view: live objects → TF's `TrackableObjectGraph` and checkpoint keys.

Indexes the nodes of the one walk of the live graph (`LiveGraph`: TF format doc §7.3)
for questions about it — the keys and the object graph a save would write, which live
objects hold values (`walk_values`, for the restore status) — at the cost of an object
per node; the save itself serializes the same walk without keeping nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

from ._keys import attribute_key, display_path, escape_local_name, object_path
from ._walk import LiveGraph

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._trackable import Trackable, Value

__all__ = ["GraphView", "SavedValue", "ViewNode", "walk_values"]


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


def walk_values(root: object) -> Iterator[tuple[object, Callable[[], str], list[str]]]:
    """Each object of `root`'s graph that holds values: (object, display, value names).

    The nodes a save would write values for (breadth-first, then slot variables), each
    once, without an object per node: for questions about every live value (which were
    not restored) that must not cost a second copy of the graph's bookkeeping. `display`
    makes the object's name when called (only the few a message names need one). Names
    are escaped as in the saved graph's attributes.
    """
    graph = LiveGraph(root)
    for node_id, trackable, _ in graph.nodes():
        values = trackable.trackable_values()
        if values:
            names = [escape_local_name(n) for n in values]
            yield graph.objects[node_id], partial(graph.display, node_id), names
    # A slot that is also a child was met above; the program may still be restored into.
    for slot in graph.slot_nodes(strict=False):
        values = slot.trackable.trackable_values()
        if values:
            names = [escape_local_name(n) for n in values]
            yield graph.objects[slot.node_id], partial(str, slot.path), names


class GraphView:
    """The object graph of `root` as it would be saved now.

    Attributes:
        nodes: Every node, node 0 the root, in TF's id order.
    """

    def __init__(self, root: object) -> None:
        self.nodes: list[ViewNode] = []
        graph = LiveGraph(root)
        for node_id, trackable, children in graph.nodes():
            names = graph.names_of(node_id)
            node = ViewNode(node_id, graph.objects[node_id], trackable, names, object_path(names))
            if children:
                node.children = children
            self.nodes.append(node)
        for slot in graph.slot_nodes():
            self.nodes.append(
                ViewNode(slot.node_id, graph.objects[slot.node_id], slot.trackable, None, slot.path)
            )
            optimizer = self.nodes[slot.optimizer_id]
            if not optimizer.slots:
                optimizer.slots = []
            optimizer.slots.append((slot.variable_id, slot.slot_name, slot.node_id))
        for node in self.nodes:
            self._collect_values(node)
        graph.release()  # the nodes hold the objects; the walk keeps its edges for the flags
        self._graph = graph

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
        return self._graph.has_checkpoint_values(
            bytearray(1 if n.values or n.slots else 0 for n in self.nodes)
        )
