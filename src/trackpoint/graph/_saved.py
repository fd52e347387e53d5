"""The saved object graph as a restore uses it: flat arrays instead of protobuf messages.

A parsed `TrackableObjectGraph` costs about 320 bytes per node (a message per node, per
child reference and per attribute, each string copied); for a checkpoint of 60,000 small
tensors that alone is more than the 5% of the state a restore may add to peak memory.
`SavedGraph` keeps what matching needs — child edges, attribute names and keys, slot
references, `has_checkpoint_values` — in compressed-row arrays: the edges' local names as
UTF-8 in one buffer (a string object per edge would cost ~60 bytes), the attributes'
checkpoint keys as the bundle index's own strings, one string per distinct attribute name.
It is built from the serialized graph one node message at a time (`parse_nodes`), so the
whole graph is never held as messages at all.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from trackpoint.format.protos import trackable_object_graph_pb2 as graph_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = ["SavedGraph", "SlotRef", "parse_nodes"]

_TrackableObject = graph_pb2.TrackableObjectGraph.TrackableObject
#: The tag of `TrackableObjectGraph.nodes` (field 1, length-delimited): the only field.
_NODES_TAG = 0x0A


def parse_nodes(raw: bytes) -> Iterator[graph_pb2.TrackableObjectGraph.TrackableObject]:
    """The nodes of a serialized `TrackableObjectGraph`, parsed one message at a time.

    Protobuf parses each node; only the outer repeated field is split here (a tag and a
    length per node). Anything else at the top level — another field, a framing that
    does not add up — and the graph is parsed whole by protobuf instead, which accepts
    or rejects it exactly as it would.

    Raises:
        google.protobuf.message.DecodeError: the graph does not parse.
    """
    view = memoryview(raw)
    end = len(view)
    pos = count = 0
    while pos < end:
        length, start = _node_frame(view, pos, end)
        if length < 0:  # not the plain framing: protobuf decides on the whole
            yield from graph_pb2.TrackableObjectGraph.FromString(raw).nodes[count:]
            return
        pos = start + length
        count += 1
        yield _TrackableObject.FromString(raw[start:pos])  # a node's bytes, briefly


def _node_frame(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(length, start) of the node message framed at `pos`; (-1, pos) if it is not one."""
    if view[pos] != _NODES_TAG:
        return -1, pos
    length = shift = 0
    at = pos + 1
    while at < end and shift < 35:
        byte = view[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (length, at) if at + length <= end else (-1, pos)
        shift += 7
    return -1, pos


SlotRef = tuple[int, int, str, int]  # (optimizer node, variable node, slot name, slot node)

# `has_checkpoint_values` as stored per node: not written (derive it), false, true.
_UNSET, _FALSE, _TRUE = -1, 0, 1


class SavedGraph:
    """The nodes of a saved `TrackableObjectGraph`, node 0 the root.

    Args:
        nodes: The saved nodes in id order (`parse_nodes`); nothing of them is kept.
        own_key: Maps a checkpoint key to an equal string that is kept anyway (the bundle
            index's own), so the graph adds no copy of each key.
    """

    __slots__ = (
        "_attr_keys",
        "_attr_names",
        "_attr_start",
        "_child_ids",
        "_child_name_end",
        "_child_names",
        "_child_start",
        "_has_values",
        "_optimizers",
        "slot_refs",
    )

    def __init__(
        self,
        nodes: Iterable[graph_pb2.TrackableObjectGraph.TrackableObject],
        own_key: Callable[[str], str],
    ) -> None:
        # Offsets of each node's edges and attributes: node i's are [start[i], start[i+1]).
        self._child_start = array("i", [0])
        self._child_ids = array("i")
        # Edge e's local name is _child_names[_child_name_end[e - 1]:_child_name_end[e]].
        self._child_names = bytearray()
        self._child_name_end = array("q")
        self._attr_start = array("i", [0])
        self._attr_names: list[str] = []
        self._attr_keys: list[str] = []
        self._has_values = array("b")
        self.slot_refs: list[SlotRef] = []
        names: dict[str, str] = {}  # one string per distinct attribute name
        child_ids, child_names, name_end = self._child_ids, self._child_names, self._child_name_end
        attr_names, attr_keys = self._attr_names, self._attr_keys
        for node_id, node in enumerate(nodes):
            for ref in node.children:
                child_ids.append(ref.node_id)
                child_names += ref.local_name.encode("utf-8", "surrogatepass")
                name_end.append(len(child_names))
            self._child_start.append(len(child_ids))
            for attribute in node.attributes:
                name = attribute.name
                attr_names.append(names.setdefault(name, name))
                attr_keys.append(own_key(attribute.checkpoint_key))
            self._attr_start.append(len(attr_keys))
            for slot in node.slot_variables:
                self.slot_refs.append(
                    (
                        node_id,
                        slot.original_variable_node_id,
                        slot.slot_name,
                        slot.slot_variable_node_id,
                    )
                )
            if node.HasField("has_checkpoint_values"):  # BoolValue: unset differs from False
                self._has_values.append(_TRUE if node.has_checkpoint_values.value else _FALSE)
            else:
                self._has_values.append(_UNSET)
        self._optimizers = frozenset(ref[0] for ref in self.slot_refs)

    def __len__(self) -> int:
        return len(self._has_values)

    def children(self, node_id: int) -> list[tuple[str, int]]:
        """Node `node_id`'s child edges in saved order: (local name, child node id)."""
        start, end = self._child_start[node_id], self._child_start[node_id + 1]
        return [(self._edge_name(e), self._child_ids[e]) for e in range(start, end)]

    def child_ids(self, node_id: int) -> array[int]:
        """Node `node_id`'s child node ids in saved order (no names decoded)."""
        return self._child_ids[self._child_start[node_id] : self._child_start[node_id + 1]]

    def child_name(self, node_id: int, index: int) -> str:
        """The local name of node `node_id`'s `index`-th child edge."""
        return self._edge_name(self._child_start[node_id] + index)

    def _edge_name(self, edge: int) -> str:
        start = self._child_name_end[edge - 1] if edge else 0
        return self._child_names[start : self._child_name_end[edge]].decode(
            "utf-8", "surrogatepass"
        )

    def has_children(self, node_id: int) -> bool:
        """Whether node `node_id` has child edges."""
        return self._child_start[node_id + 1] > self._child_start[node_id]

    def attributes(self, node_id: int) -> list[tuple[str, str]]:
        """Node `node_id`'s values in saved order: (attribute name, checkpoint key)."""
        start, end = self._attr_start[node_id], self._attr_start[node_id + 1]
        return list(zip(self._attr_names[start:end], self._attr_keys[start:end], strict=True))

    def has_values(self, node_id: int) -> bool:
        """TF's `has_checkpoint_values`: whether the node or anything below it has values.

        When a writer left it out, any attribute, slot or child counts, as TF assumes.
        """
        flag = self._has_values[node_id]
        if flag != _UNSET:
            return flag == _TRUE
        return (
            self._attr_start[node_id + 1] > self._attr_start[node_id]
            or self.has_children(node_id)
            or node_id in self._optimizers
        )
