"""The save: the live graph's walk (`LiveGraph`) → each value's key, and the serialized graph.

Built for a save of many small tensors, where `GraphView`'s node, wrapper, path and value
objects would cost ~800 bytes per tensor: each node the walk yields is serialized when it
is reached, one `TrackableObject` message at a time, and nothing of it is kept but its
bytes. Values are handed to the caller as they are met, in node order (TF's data-file
order), so their wrappers need not outlive the walk either.

A node's `has_checkpoint_values` depends on nodes met later, so the graph is framed at
the end: the bytes of each node message are its children and attributes (serialized when
the node was reached), its slot variable references, then the flag.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from trackpoint.format import encode_varint
from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

from ._keys import attribute_key, escape_local_name, object_path
from ._walk import LiveGraph

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._trackable import Trackable, Value

__all__ = ["save_graph"]

_TrackableObject = graph_pb2.TrackableObjectGraph.TrackableObject
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
    return _Save(visit).run(root)


class _Save:
    """One save's serialized nodes: their bytes, which hold values, and the slot refs."""

    def __init__(self, visit: Callable[[str, Value], None]) -> None:
        self._visit = visit
        # Node i's serialized children and attributes are _bodies[_ends[i-1]:_ends[i]].
        self._bodies = bytearray()
        self._ends = array("q")
        self._valued = bytearray()  # 1 where the node holds values or slot variables
        self._slot_refs: dict[int, bytes] = {}  # optimizer node → its serialized slot refs

    def run(self, root: object) -> bytes:
        graph = LiveGraph(root)
        for node_id, trackable, children in graph.nodes():
            message = _TrackableObject()
            for name, child_id in children:
                message.children.add(node_id=child_id, local_name=name)
            values = trackable.trackable_values()
            if values:
                path = object_path(graph.names_of(node_id))
                self._add_values(message, trackable, values, path)
            self._end_node(message, values)
        refs, refs_of = _TrackableObject(), -1
        for slot in graph.slot_nodes():
            if slot.optimizer_id != refs_of:
                self._add_slot_refs(refs_of, refs)
                refs, refs_of = _TrackableObject(), slot.optimizer_id
            refs.slot_variables.add(
                original_variable_node_id=slot.variable_id,
                slot_name=slot.slot_name,
                slot_variable_node_id=slot.node_id,
            )
            message = _TrackableObject()
            values = slot.trackable.trackable_values()
            if values:
                self._add_values(message, slot.trackable, values, slot.path)
            self._end_node(message, values)
        self._add_slot_refs(refs_of, refs)
        # The objects, their ids and names are no longer needed: let them go before the
        # graph's bytes are laid out (here is the walk's peak).
        graph.release()
        return self._framed(graph.has_checkpoint_values(self._valued))

    def _add_values(
        self,
        message: _TrackableObject,
        trackable: Trackable,
        values: Mapping[str, Value],
        path: str,
    ) -> None:
        """Add the node's attributes to `message`, visiting its values."""
        full_name = trackable.trackable_name
        for name, value in values.items():
            escaped = escape_local_name(name)
            key = attribute_key(path, escaped)
            message.attributes.add(name=escaped, full_name=full_name, checkpoint_key=key)
            self._visit(key, value)

    def _end_node(self, message: _TrackableObject, values: Mapping[str, Value]) -> None:
        self._valued.append(1 if values else 0)
        self._bodies += message.SerializeToString()
        self._ends.append(len(self._bodies))

    def _add_slot_refs(self, optimizer_id: int, refs: _TrackableObject) -> None:
        if refs.slot_variables:
            self._slot_refs[optimizer_id] = refs.SerializeToString()
            self._valued[optimizer_id] = 1

    def _framed(self, has: bytearray) -> bytes:
        """The `TrackableObjectGraph`: each node's bytes framed as an entry of `nodes`."""
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
