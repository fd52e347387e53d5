"""Restore by graph matching: bind saved nodes to live objects by structure, from the root.

As TensorFlow does (TF format doc §7.7): node 0 is the live root; for every saved child
edge of a bound node, the live object's child of the same local name is bound to the
child node (the first binding wins), breadth-first. A bound node's attributes are read
from the bundle straight into the live values. A saved child with no live object yet is
deferred: the live parent calls back when an object is attached under that name. Slot
variables are restored once both their variable and their optimizer are bound; an
optimizer with no state yet creates it.
"""

from __future__ import annotations

import warnings
from array import array
from bisect import bisect_left
from collections import deque
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.engine import read_into_many
from trackpoint.errors import NotTrackableError, ShapeMismatchError, TrackpointWarning

from ._explain import user_stacklevel
from ._keys import OBJECT_GRAPH_KEY, VARIABLE_VALUE, display_path, escape_local_name
from ._status import NameBasedLoadStatus
from ._trackable import Trackable, Value, check_compatible, to_trackable
from ._walk import LiveGraph

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from numpy.typing import NDArray

    from trackpoint.format import BundleReader, TensorInfo

    from ._saved import SavedGraph, SlotRef

__all__ = ["BoundIds", "Restorer", "restore_by_name"]


#: Flat per-node arrays: one 4-byte int per node instead of a tuple or dict entry.
def _ints(count: int) -> array[int]:
    return array("i", [-1]) * count


class _Bound:
    """Saved node → the live object bound to it: a list slot per node, not a dict entry.

    A dict costs ~60 bytes per bound node (its entry and the int key); a restore of
    60,000 values binds 60,000 nodes.
    """

    __slots__ = ("_count", "_objects")

    def __init__(self, count: int) -> None:
        self._objects: list[object] = [None] * count
        self._count = 0

    def __contains__(self, node_id: object) -> bool:
        return (
            isinstance(node_id, int)
            and 0 <= node_id < len(self._objects)
            and self._objects[node_id] is not None
        )

    def __getitem__(self, node_id: int) -> object:
        obj = self._objects[node_id]
        if obj is None:
            raise KeyError(node_id)
        return obj

    def __setitem__(self, node_id: int, obj: object) -> None:
        if self._objects[node_id] is None:
            self._count += 1
        self._objects[node_id] = obj

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[int, object]]:
        """(node, object) of every bound node, in node order."""
        return ((n, obj) for n, obj in enumerate(self._objects) if obj is not None)


class BoundIds:
    """`id(live object)` → the saved node it is bound to, as two sorted flat arrays.

    Built when a status asks (binding never needs it): 12 bytes per bound object instead
    of a dict entry and two int objects (~90 bytes). Valid while the restorer holds the
    objects, which keeps their ids unique.
    """

    __slots__ = ("_ids", "_nodes")

    def __init__(self, bound: Iterator[tuple[int, object]]) -> None:
        ids, nodes = array("q"), array("i")
        for node_id, obj in bound:
            ids.append(id(obj))
            nodes.append(node_id)
        # A stable sort by id: of an object bound to several nodes, the lowest node wins.
        order = np.argsort(np.frombuffer(ids, np.int64), kind="stable")
        self._ids = array("q", np.frombuffer(ids, np.int64)[order].tobytes())
        self._nodes = array("i", np.frombuffer(nodes, np.int32)[order].tobytes())

    def get(self, obj: object) -> int | None:
        """The node `obj` is bound to, or None."""
        key = id(obj)
        at = bisect_left(self._ids, key)
        if at < len(self._ids) and self._ids[at] == key:
            return self._nodes[at]
        return None

    def __contains__(self, obj: object) -> bool:
        return self.get(obj) is not None


class Restorer:
    """The state of one restore: which saved nodes are bound to which live objects.

    Kept alive by the status object and by deferred callbacks, so that values for objects
    created later can still be read from the checkpoint.
    """

    def __init__(self, reader: BundleReader, graph: SavedGraph, root: object) -> None:
        self.reader = reader
        self.graph = graph
        self.root = root
        count = len(graph)
        self.bound = _Bound(count)
        # Adapter views of bound nodes that can still be needed: parents (their children
        # are looked up, deferred, replaced) and optimizers (their slots). A leaf value's
        # view is done with once its values are read, so none is kept per value.
        self.trackables: dict[int, Trackable] = {}
        # Restored values: a flag per node for its VARIABLE_VALUE (nearly every value; a
        # set entry per value would cost 100 bytes each), else (node, name) in a set.
        self._restored_variable = bytearray(count)
        self._restored: set[tuple[int, str]] = set()
        self.deferred: set[int] = set()  # nodes waiting for their object to appear
        # The edge each bound node was reached by, for replacements: the parent node and
        # the index of the child reference in its list (-1: none).
        self._bound_parent = _ints(count)
        self._bound_edge = _ints(count)
        # Immutable values restored as new objects, not yet put into their parents.
        self._replaced: dict[int, object] = {}
        # (key, live buffer) reads collected by `_bind_from`, done together at its end.
        # Two lists, not a tuple per value (56 bytes each for 60,000 values).
        self._pending_keys: list[str] = []
        self._pending_outs: list[NDArray[Any]] = []
        # Values to assign after that pass, in binding order (staged ones read in it).
        self._pending_assigns: list[tuple[int, Value, NDArray[Any]]] = []
        self._first_parent, self._first_edge, self._depth = self._saved_tree()
        self._slot_refs: dict[int, list[SlotRef]] = {}
        for slot_ref in graph.slot_refs:
            self._slot_refs.setdefault(slot_ref[0], []).append(slot_ref)
            self._slot_refs.setdefault(slot_ref[1], []).append(slot_ref)

    # -- saved-graph facts ------------------------------------------------------------

    def _saved_tree(self) -> tuple[array[int], array[int], array[int]]:
        """Each saved node's first-discovered edge (parent, child index) and depth (-1: none).

        Kept as flat arrays, paths rebuilt on demand (`path`): a path tuple per node
        would cost more than the rest of the restore's bookkeeping.
        """
        count = len(self.graph)
        parent, edge, depth = _ints(count), _ints(count), _ints(count)
        if count:
            depth[0] = 0
        queue = deque([0] if count else [])
        while queue:
            node_id = queue.popleft()
            for index, child_id in enumerate(self.graph.child_ids(node_id)):
                if 0 <= child_id < count and depth[child_id] < 0:
                    parent[child_id] = node_id
                    edge[child_id] = index
                    depth[child_id] = depth[node_id] + 1
                    queue.append(child_id)
        return parent, edge, depth

    def _local_name(self, parent_id: int, index: int) -> str:
        return self.graph.child_name(parent_id, index)

    def path(self, node_id: int) -> tuple[str, ...] | None:
        """Saved node `node_id`'s first-discovered path of local names; None for slots."""
        if not 0 <= node_id < len(self._depth) or self._depth[node_id] < 0:
            return None
        names: list[str] = []
        while node_id > 0:
            parent = self._first_parent[node_id]
            names.append(self._local_name(parent, self._first_edge[node_id]))
            node_id = parent
        return tuple(reversed(names))

    def is_restored(self, node_id: int, name: str) -> bool:
        """Whether saved node `node_id`'s attribute `name` was restored."""
        if name == VARIABLE_VALUE:
            return 0 <= node_id < len(self._restored_variable) and bool(
                self._restored_variable[node_id]
            )
        return (node_id, name) in self._restored

    def display(self, node_id: int) -> str:
        """How messages name saved node `node_id` (`model.dense_1.kernel`)."""
        path = self.path(node_id)
        if path is not None:
            return display_path(path)
        for opt_id, var_id, slot_name, slot_id in self._all_slot_refs():
            if slot_id == node_id:
                return f"{self.display(opt_id)}'s state {slot_name!r} for {self.display(var_id)}"
        return f"node {node_id}"

    def _all_slot_refs(self) -> list[SlotRef]:
        refs = {ref for refs in self._slot_refs.values() for ref in refs}
        return sorted(refs)

    def has_values(self, node_id: int) -> bool:
        """Whether saved node `node_id` or anything below it holds values."""
        return self.graph.has_values(node_id)

    def bound_ids(self) -> BoundIds:
        """`id(object)` → node for every object bound now (built on each call)."""
        return BoundIds(self.bound.items())

    # -- binding ------------------------------------------------------------------------

    def run(self) -> None:
        """Bind the root and everything reachable from it."""
        self._bind_from(0, self.root)

    def _bind_from(self, node_id: int, obj: object) -> None:
        queue: deque[int] = deque()
        if self._bind(node_id, obj):
            queue.append(node_id)
        count = len(self.graph)
        while queue:
            parent_id = queue.popleft()
            parent = self.trackables[parent_id]
            for index, (local_name, child_id) in enumerate(self.graph.children(parent_id)):
                if not 0 <= child_id < count or child_id in self.bound:
                    continue
                live = parent.lookup_child(local_name)
                if live is None:
                    if self.has_values(child_id) and child_id not in self.deferred:
                        callback = _DeferredBind(self, child_id)
                        if parent.defer_child(local_name, callback):
                            self.deferred.add(child_id)
                            # An immutable object attached later (a JAX pytree) is restored
                            # as a new one, which this parent must then receive.
                            if self._bound_parent[child_id] < 0:
                                self._bound_parent[child_id] = parent_id
                                self._bound_edge[child_id] = index
                    continue
                self._bound_parent[child_id] = parent_id
                self._bound_edge[child_id] = index
                if self._bind(child_id, live):
                    queue.append(child_id)
        self._read_pending()
        self._apply_replacements()

    def _read_pending(self) -> None:
        """Read the in-place values collected while binding, all at once.

        The engine reads them in parallel, large values straight into the live memory and
        small ones batched. Nothing reads those live values in between: binding looks at
        shapes and dtypes only, and values restored otherwise (new objects, slots created
        from checkpoint values) are read from the bundle on their own.
        """
        keys, outs = self._pending_keys, self._pending_outs
        self._pending_keys, self._pending_outs = [], []
        assigns, self._pending_assigns = self._pending_assigns, []
        read_into_many(self.reader, zip(keys, outs, strict=True))
        del keys, outs
        for node_id, value, staged in assigns:
            self._assign(node_id, value, staged)

    def _apply_replacements(self) -> None:
        """Put restored immutable values into their parents, rebuilding immutable parents.

        Deepest nodes first, so that a rebuilt parent already holds its new children.
        """
        # One pass per depth level, not per node: a tree of many JAX leaves must not make
        # this quadratic.
        while self._replaced:
            deepest = max(self._depth[n] for n in self._replaced)
            by_parent: dict[int, dict[str, object]] = {}
            for node_id in [n for n in self._replaced if self._depth[n] == deepest]:
                parent_id = self._bound_parent[node_id]
                if parent_id < 0:
                    raise NotTrackableError(
                        f"{self.display(node_id)} was restored as a new object but has no "
                        "parent to hold it; make the root of the checkpoint a mutable object"
                    )
                name = self._local_name(parent_id, self._bound_edge[node_id])
                # Siblings replaced in the same pass join one rebuild of their parent.
                by_parent.setdefault(parent_id, {})[name] = self._replaced.pop(node_id)
            for parent_id, siblings in by_parent.items():
                parent = self.trackables[parent_id]
                if all(parent.replace_child(n, obj) for n, obj in siblings.items()):
                    continue
                rebuilt = parent.with_children(siblings)
                self.bound[parent_id] = rebuilt
                self.trackables[parent_id] = to_trackable(rebuilt, path=self.display(parent_id))
                self._replaced[parent_id] = rebuilt

    def _bind(self, node_id: int, obj: object) -> bool:
        """Bind `node_id` to `obj` and restore its values; False if it was bound already.

        True means the caller should bind its children: the node has child edges.
        """
        if node_id in self.bound:
            if self.bound[node_id] is not obj:
                warnings.warn(
                    f"{self.display(node_id)} in the checkpoint matches two different objects "
                    "in the program; the first one was restored",
                    TrackpointWarning,
                    stacklevel=user_stacklevel(),
                )
            return False
        try:
            trackable = to_trackable(obj)
        except NotTrackableError:
            # Again, for the message only: naming a node costs a walk up its path (and a
            # slot's a search of all slots), too much to pay for every node bound.
            trackable = to_trackable(obj, path=self.display(node_id))
        self.bound[node_id] = obj
        parent = self.graph.has_children(node_id)
        if parent or node_id in self._slot_refs:
            self.trackables[node_id] = trackable
        self.deferred.discard(node_id)
        self._restore_attributes(node_id, trackable)
        self._restore_slots(node_id)
        return parent

    def _restore_attributes(self, node_id: int, trackable: Trackable) -> None:
        attributes = self.graph.attributes(node_id)
        if not attributes:
            return
        values = {escape_local_name(k): v for k, v in trackable.trackable_values().items()}
        for name, key in attributes:
            value = values.get(name)
            if value is None:
                continue  # reported as unused by the status
            info = self.reader.find_info(key)
            if info is None:
                continue  # a multi-tensor legacy value (§7.3): not restorable here
            if info.dtype.numpy is not None and value.dtype != info.dtype.numpy:
                value = value.for_saved_dtype(info.dtype.numpy) or value
            if value.shape != info.shape or value.dtype != info.dtype.numpy:
                self._check_compatible(node_id, name, trackable, value, info)
            if name == VARIABLE_VALUE:
                self._restored_variable[node_id] = 1
            else:
                self._restored.add((node_id, name))
            if info.dtype.is_string:
                # Assigned in order with the staged values after the pass: a node's values
                # arrive in the order it listed them (a JSON state last, after its tensors).
                self._pending_assigns.append((node_id, value, self.reader.get_tensor(key)))
                continue
            # Read with the others bound in this pass, in parallel (see `_read_pending`):
            # into the live memory, or into a staging buffer `assign` then takes.
            buffer = value.restore_buffer()
            if buffer is not None:
                self._pending_keys.append(info.key)
                self._pending_outs.append(buffer)
            else:
                staged = value.staging_buffer()
                self._pending_keys.append(info.key)
                self._pending_outs.append(staged)
                self._pending_assigns.append((node_id, value, staged))

    def _check_compatible(
        self, node_id: int, name: str, trackable: Trackable, value: Value, info: TensorInfo
    ) -> None:
        """Raise the mismatch error naming the object (only when shape or dtype differ)."""
        where = self.display(node_id)
        if name != VARIABLE_VALUE:
            where = f"{where} ({name})"
        try:
            check_compatible(value, info.shape, info.dtype.numpy or object, where)
        except ShapeMismatchError as err:
            # An adapter may name the live object and the likely cause (a Keras
            # optimizer's state matched by position lands on another variable).
            hint = getattr(trackable, "mismatch_hint", "")
            if not hint:
                raise
            raise ShapeMismatchError(f"{err}; {hint}", key=err.key) from err

    def _assign(self, node_id: int, value: Value, array: NDArray[Any]) -> None:
        replacement = value.assign(array)
        if replacement is not None:
            self._replaced[node_id] = replacement
            self.bound[node_id] = replacement

    def _restore_slots(self, node_id: int) -> None:
        for opt_id, var_id, slot_name, slot_id in self._slot_refs.get(node_id, ()):
            if opt_id not in self.bound or var_id not in self.bound or slot_id in self.bound:
                continue
            optimizer = self.trackables[opt_id]
            variable = self.bound[var_id]
            slot = optimizer.get_slot(variable, slot_name)
            if slot is None:
                key = self._slot_value_key(slot_id)
                if key is None:
                    continue
                slot = optimizer.create_slot(variable, slot_name, self.reader.get_tensor(key))
                if slot is None:
                    continue  # the optimizer does not update that variable: value stays unused
            self._bind_from(slot_id, slot)

    def _slot_value_key(self, slot_id: int) -> str | None:
        if not 0 <= slot_id < len(self.graph):
            return None
        for name, key in self.graph.attributes(slot_id):
            if name == VARIABLE_VALUE and key in self.reader:
                return key
        return None

    # -- what is left ---------------------------------------------------------------------

    def pending_slots(self) -> list[SlotRef]:
        """Slot restorations waiting for their optimizer or variable."""
        return [
            ref
            for ref in self._all_slot_refs()
            # Exactly one side bound: the other may still come. Both bound and no slot means
            # the optimizer declined it (create_slot returned None); that is not waiting.
            if ref[3] not in self.bound and ((ref[0] in self.bound) != (ref[1] in self.bound))
        ]

    def unused_values(self) -> list[tuple[int, str]]:
        """(node, attribute) pairs of the checkpoint that were not restored."""
        unused = []
        for node_id in range(len(self.graph)):
            for name, _ in self.graph.attributes(node_id):
                if not self.is_restored(node_id, name):
                    unused.append((node_id, name))
        return unused


class _DeferredBind:
    """Called by a live parent when an object is attached under a deferred name."""

    def __init__(self, restorer: Restorer, node_id: int) -> None:
        self.restorer = restorer
        self.node_id = node_id

    def __call__(self, obj: Any) -> None:
        if self.node_id in self.restorer.bound:
            return
        self.restorer._bind_from(self.node_id, obj)


def restore_by_name(reader: BundleReader, root: object, prefix: str) -> NameBasedLoadStatus:
    """Restore a TF1 checkpoint (no object graph): match each variable by name or path.

    Each value of the live graph takes the key of its variable's name (`full_name`), else
    of its object path (`dense/kernel`); the caller is warned that nothing was matched by
    structure.

    Raises:
        ShapeMismatchError, DTypeMismatchError: a matched key does not fit its variable.
        NotTrackableError: a matched value is immutable (a JAX array), which only the
            object-graph restore can replace in its parent.
    """
    keys = [info.key for info in reader.infos() if info.key != OBJECT_GRAPH_KEY]
    matched: dict[str, str] = {}
    unmatched: list[str] = []
    graph = LiveGraph(root)
    # The nodes a save would write, each named as its first path (a slot by its key's);
    # all walked before any value is assigned, so an object that cannot be saved changes
    # nothing.
    nodes: list[tuple[Trackable, tuple[str, ...] | None, Callable[[], str]]] = list(
        chain(
            (
                (trackable, graph.names_of(node_id), partial(graph.display, node_id))
                for node_id, trackable, _ in graph.nodes()
            ),
            ((slot.trackable, None, partial(str, slot.path)) for slot in graph.slot_nodes()),
        )
    )
    for trackable, names, display in nodes:
        full_name = trackable.trackable_name
        for value in trackable.trackable_values().values():
            candidates = []
            if full_name and full_name != "Variable":
                candidates.append(full_name)
            if names:
                candidates.append("/".join(names))
            key = next((c for c in candidates if c in reader), None)
            if key is None:
                unmatched.append(display())
                continue
            info = reader.info(key)
            check_compatible(value, info.shape, info.dtype.numpy or object, display())
            if value.assign(reader.get_tensor(key)) is not None:
                # An immutable value (a JAX array) is restored as a new object that only
                # the object-graph restore knows how to put into its parent.
                raise NotTrackableError(
                    f"{display()} cannot take values from '{prefix}' in place (a JAX "
                    "array); a name-based (TF1) checkpoint restores only mutable values — "
                    f"read it with load_checkpoint('{prefix}').get_tensor('{key}')"
                )
            matched[display()] = key
    warnings.warn(
        f"'{prefix}' has no object graph (a TF1 name-based checkpoint): variables were matched "
        f"by name or path instead of by structure ({len(matched)} matched, {len(unmatched)} "
        f"not); check the result with status.assert_consumed()",
        TrackpointWarning,
        stacklevel=user_stacklevel(),
    )
    return NameBasedLoadStatus(prefix, matched, unmatched, keys)
