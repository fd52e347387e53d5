"""The save-time walk: live objects → each value's key, and the serialized object graph.

The same graph as `GraphView` (TF format doc §7.3: nodes breadth-first from the root,
children in each object's own order, a shared object under its first path; then slot
variables), built for a save of many small tensors, where `GraphView`'s node, wrapper,
path and value objects would cost ~800 bytes per tensor. Here each node is serialized
when it is reached, one `TrackableObject` message at a time, and nothing of it is kept
but its bytes, its object, its parent and its name under it (paths are rebuilt from
these when a key or a message needs one), and its id until the walk ends. Values are
handed to the caller as they are met, in node order (TF's data-file order), so their
wrappers need not outlive the walk either. `GraphView` stays the view for questions
about the live graph (restore by name, status messages); both take slot variables
(`slot_variables`, `tracked_twice`) and `has_checkpoint_values` from here, so the two
cannot drift apart, and tests check both agree.

A node's `has_checkpoint_values` depends on nodes met later, so the graph is framed at
the end: the bytes of each node message are its children and attributes (serialized when
the node was reached), its slot variable references, then the flag.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

import numpy as np

from trackpoint.errors import NotTrackableError
from trackpoint.format import encode_varint
from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

from ._keys import (
    OBJECT_ATTRIBUTES,
    VARIABLE_VALUE,
    attribute_key,
    display_path,
    escape_local_name,
    object_path,
    slot_key,
)
from ._trackable import Trackable, Value, to_trackable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["has_checkpoint_values", "save_graph", "slot_variables", "tracked_twice"]

_TrackableObject = graph_pb2.TrackableObjectGraph.TrackableObject
#: A slot variable node's path is its key without this (as `GraphView` names it).
_SLOT_SUFFIX = len(f"/{OBJECT_ATTRIBUTES}/{VARIABLE_VALUE}")
#: `TrackableObjectGraph.nodes`: field 1, length-delimited (the graph's only field).
_NODE_TAG = b"\x0a"


def _flag_bytes(value: bool) -> bytes:
    """`TrackableObject.has_checkpoint_values` (field 5, the last) as protobuf writes it.

    Appended after a node's other fields, which protobuf writes in field order too, so
    the concatenation is the node's own serialization. TF always sets the field.
    """
    node = _TrackableObject()
    node.has_checkpoint_values.SetInParent()
    node.has_checkpoint_values.value = value
    return node.SerializeToString()


_HAS_VALUES, _HAS_NO_VALUES = _flag_bytes(True), _flag_bytes(False)


def slot_variables(
    optimizer: Trackable, objects: Sequence[object]
) -> Iterator[tuple[str, int, object]]:
    """(slot name, variable's node, slot) of an optimizer's slot variables, in TF's order.

    For each slot name, for each object in node order (format doc §7.3); `objects` are the
    breadth-first nodes only (slot variables have no slots). Shared by the save walk and
    `GraphView`, so both give slot nodes the same ids.
    """
    for slot_name in optimizer.slot_names():
        for variable_id, variable in enumerate(objects):
            slot = optimizer.get_slot(variable, slot_name)
            if slot is not None:
                yield slot_name, variable_id, slot


def tracked_twice(slot_name: str, variable: str, other: str) -> NotTrackableError:
    """The error for a slot variable that is also an object's child (TF refuses it too)."""
    return NotTrackableError(
        f"slot {slot_name!r} of {variable} is also a child of {other}; a slot variable "
        "cannot be tracked twice"
    )


def has_checkpoint_values(
    valued: bytearray, edge_parents: array[int], edge_children: array[int]
) -> bytearray:
    """Per node, 1 when it or anything below it (children edges only) holds values.

    Propagated from the valued nodes up their parents, each node once; the parents of
    each node are found through the edges sorted by child (4 bytes per edge).

    Args:
        valued: Per node, 1 where the node itself holds values or slot variables.
        edge_parents: Each child edge's parent node.
        edge_children: Each child edge's child node (same order).
    """
    has = bytearray(valued)
    children = np.frombuffer(edge_children, dtype=np.int32)
    by_child = np.argsort(children, kind="stable")
    parents = array("i", np.frombuffer(edge_parents, dtype=np.int32)[by_child].tobytes())
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


def save_graph(root: object, visit: Callable[[str, Value], None]) -> bytes:
    """Walk the objects saved from `root`; call `visit(key, value)` for each value.

    Values come in node order, the order of `GraphView(root).saved_values()`.

    Args:
        root: The checkpoint's root object (node 0).
        visit: Called with each value's checkpoint key and the value, as it is met.

    Returns:
        The serialized `TrackableObjectGraph`, byte for byte
        `GraphView(root).to_proto().SerializeToString()`.

    Raises:
        NotTrackableError: an object nobody knows how to checkpoint (named by its path),
            or a slot variable that is also some object's child.

    Example:
        >>> import numpy as np
        >>> from trackpoint import Module
        >>> root = Module()
        >>> root.w = np.zeros(2)
        >>> keys = []
        >>> graph = save_graph(root, lambda key, value: keys.append(key))
        >>> keys
        ['w/.ATTRIBUTES/VARIABLE_VALUE']
    """
    return _Walk(root, visit).run()


class _Walk:
    """One walk's state: per node its object, first parent, name there, and its bytes."""

    def __init__(self, root: object, visit: Callable[[str, Value], None]) -> None:
        self._visit = visit
        # Per node: the object (keeps ids unique while the walk runs, and slots are
        # looked up by it), its first parent (-1: none) and its name under that parent.
        # Paths are rebuilt from these when needed, instead of a string per node.
        self._objects: list[object] = [root]
        self._parents = array("i", [-1])
        self._names: list[str] = [""]
        self._ids = {id(root): 0}
        # Every child edge, for `has_checkpoint_values` (which follows them upwards).
        self._edge_parents = array("i")
        self._edge_children = array("i")
        # Node i's serialized children and attributes are _bodies[_ends[i-1]:_ends[i]].
        self._bodies = bytearray()
        self._ends = array("q")
        self._valued = bytearray()  # 1 where the node holds values or slot variables
        self._slot_refs: dict[int, bytes] = {}  # optimizer node → its serialized slot refs
        self._optimizers: list[tuple[int, Trackable]] = []
        self._bfs_count = 0

    def run(self) -> bytes:
        at = 0
        # Node ids are given in discovery order and nodes are expanded in id order:
        # the list of objects is the breadth-first queue itself.
        while at < len(self._objects):
            self._expand(at)
            at += 1
        self._bfs_count = len(self._objects)
        for optimizer_id, optimizer in self._optimizers:
            self._add_slot_variables(optimizer_id, optimizer)
        return self._framed()

    # -- paths, only when a key or a message needs one ------------------------------------

    def _names_of(self, node_id: int) -> tuple[str, ...]:
        names: list[str] = []
        while node_id > 0:
            names.append(self._names[node_id])
            node_id = self._parents[node_id]
        return tuple(reversed(names))

    def _display(self, node_id: int) -> str:
        if node_id < self._bfs_count:
            return display_path(self._names_of(node_id))
        return self._slot_path(node_id)

    def _slot_path(self, node_id: int) -> str:
        """A slot variable node's path (for a message: found again rather than kept)."""
        slot = self._objects[node_id]
        bfs = self._objects[: self._bfs_count]
        for optimizer_id, optimizer in self._optimizers:
            for slot_name, variable_id, found in slot_variables(optimizer, bfs):
                if found is slot:
                    return self._slot_key(variable_id, optimizer_id, slot_name)[:-_SLOT_SUFFIX]
        return "a slot variable"  # pragma: no cover - every slot node was found this way

    def _slot_key(self, variable_id: int, optimizer_id: int, slot_name: str) -> str:
        return slot_key(
            object_path(self._names_of(variable_id)),
            object_path(self._names_of(optimizer_id)),
            slot_name,
        )

    # -- nodes -----------------------------------------------------------------------------

    def _expand(self, node_id: int) -> None:
        obj = self._objects[node_id]
        try:
            trackable = to_trackable(obj)
        except NotTrackableError:
            # Raises again, naming the object's path.
            trackable = to_trackable(obj, path=display_path(self._names_of(node_id)))
        message = _TrackableObject()
        for name, child in trackable.trackable_children().items():
            child_id = self._ids.get(id(child))
            if child_id is None:
                child_id = len(self._objects)
                self._objects.append(child)
                self._parents.append(node_id)
                self._names.append(name)
                self._ids[id(child)] = child_id
            message.children.add(node_id=child_id, local_name=name)
            self._edge_parents.append(node_id)
            self._edge_children.append(child_id)
        if trackable.slot_names():
            self._optimizers.append((node_id, trackable))
        self._add_values(message, trackable, node_id, None)

    def _add_values(
        self, message: _TrackableObject, trackable: Trackable, node_id: int, path: str | None
    ) -> None:
        """Serialize the node (`message` holds its children), visiting its values."""
        values = trackable.trackable_values()
        if values:
            if path is None:
                path = object_path(self._names_of(node_id))
            full_name = trackable.trackable_name
            for name, value in values.items():
                escaped = escape_local_name(name)
                key = attribute_key(path, escaped)
                message.attributes.add(name=escaped, full_name=full_name, checkpoint_key=key)
                self._visit(key, value)
        self._valued.append(1 if values else 0)
        self._bodies += message.SerializeToString()
        self._ends.append(len(self._bodies))

    def _add_slot_variables(self, optimizer_id: int, optimizer: Trackable) -> None:
        """Add the optimizer's slot variables as nodes (format doc §7.3), in TF's order."""
        refs = _TrackableObject()
        for slot_name, variable_id, slot in slot_variables(
            optimizer, self._objects[: self._bfs_count]
        ):
            if id(slot) in self._ids:
                raise tracked_twice(
                    slot_name, self._display(variable_id), self._display(self._ids[id(slot)])
                )
            key = self._slot_key(variable_id, optimizer_id, slot_name)
            trackable = to_trackable(slot, path=key)
            slot_id = len(self._objects)
            self._objects.append(slot)
            self._parents.append(-1)
            self._names.append("")
            self._ids[id(slot)] = slot_id
            refs.slot_variables.add(
                original_variable_node_id=variable_id,
                slot_name=slot_name,
                slot_variable_node_id=slot_id,
            )
            self._add_values(_TrackableObject(), trackable, slot_id, key[:-_SLOT_SUFFIX])
        if refs.slot_variables:
            self._slot_refs[optimizer_id] = refs.SerializeToString()
            self._valued[optimizer_id] = 1

    # -- the graph's bytes -------------------------------------------------------------------

    def _framed(self) -> bytes:
        """The `TrackableObjectGraph`: each node's bytes framed as an entry of `nodes`."""
        # The objects, their ids and names are no longer needed: let them go before the
        # graph's bytes are laid out (here is the walk's peak).
        self._objects.clear()
        self._ids.clear()
        self._names.clear()
        has = has_checkpoint_values(self._valued, self._edge_parents, self._edge_children)
        bodies = memoryview(self._bodies)
        out = bytearray()
        start = 0
        for node_id, end in enumerate(self._ends):
            slots = self._slot_refs.get(node_id, b"")
            flag = _HAS_VALUES if has[node_id] else _HAS_NO_VALUES
            out += _NODE_TAG
            out += _varint(end - start + len(slots) + len(flag))
            out += bodies[start:end]
            out += slots
            out += flag
            start = end
        bodies.release()
        self._bodies.clear()
        return bytes(out)


def _varint(value: int) -> bytes:
    # Nearly every node is under 128 bytes: its length is one byte, looked up.
    return _SMALL_VARINTS[value] if value < 0x80 else encode_varint(value)


_SMALL_VARINTS = [bytes([i]) for i in range(0x80)]
