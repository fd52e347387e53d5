"""The trackable protocol: what trackpoint needs to know about an object to checkpoint it.

An object in a checkpoint is a node of a graph. trackpoint asks each node, in this order:

1. `trackable_children()` — its named children (other objects), in a stable order. Saving
   walks them breadth-first from the root; restoring looks a saved child up by name with
   `lookup_child(name)`.
2. `trackable_values()` — its named tensor values (`{"VARIABLE_VALUE": value}` for a
   variable), each a `Value`: `read()` gives a host snapshot to save, `assign()` (or the
   in-place buffer of `restore_buffer()`) takes the restored array.
3. For optimizers only: `slot_names()` and `get_slot(variable, name)` — state tied to a
   variable (saved under `.OPTIMIZER_SLOT`); on restore `create_slot(variable, name,
   value)` makes the state when the optimizer has none yet.
4. On restore, when a saved child has no live object yet, `defer_child(name, callback)`
   lets the node call back once an object is attached under that name (a layer built
   after `restore`). Nodes that cannot notice new children return False.

Objects that are not `Trackable` themselves (NumPy arrays, dicts, lists, tuples, and
framework objects through adapters) are turned into one by `to_trackable`, which
dispatches on the object's type through a registry; `register(type, factory)` adds types,
and `register_finder(finder)` objects known by value rather than type (JAX pytree nodes).

Python numbers held by dicts, lists and tuples are not tracked (TensorFlow's rule: they are
part of the program), unless a finder given to `register_number_leaves` claims the
container: the JAX adapter does so for containers that are JAX trees, whose numbers are
leaves `jax.tree_util` flattens and a jitted step turns into arrays.

Example — a custom object with one value and one child:

    >>> import numpy as np
    >>> from trackpoint import Variable
    >>> class Scaler(Trackable):
    ...     def __init__(self):
    ...         self.scale = np.ones(3, np.float32)
    ...         self.offset = Variable(np.zeros(3, np.float32))
    ...     def trackable_children(self):
    ...         return {"offset": self.offset}
    ...     def trackable_values(self):
    ...         return {"scale": ArrayValue(self.scale)}
    >>> sorted(Scaler().trackable_children())
    ['offset']
"""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
from abc import ABC
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.engine import aligned_empty
from trackpoint.errors import (
    DTypeMismatchError,
    InvalidValueError,
    NotTrackableError,
    ShapeMismatchError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from numpy.typing import NDArray

__all__ = [
    "ArrayValue",
    "NumberLeaf",
    "Trackable",
    "Value",
    "register",
    "register_finder",
    "register_number_leaves",
    "to_trackable",
]


class Value(ABC):
    """One tensor value of a trackable: how to snapshot it and how to restore it.

    Attributes:
        shape: The value's shape.
        dtype: The NumPy dtype it is saved as (object for strings).
    """

    __slots__ = ()  # as Trackable's

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def read(self) -> NDArray[Any]:
        """A host array of the current value (may share memory with the live value)."""
        raise NotImplementedError

    def assign(self, value: NDArray[Any]) -> object | None:
        """Set the live value from a restored array of the same shape and dtype.

        `value` may be read-only (a memory map); one from `staging_buffer()` is writeable
        and belongs to the value from then on.

        Returns:
            None when the value was set in place. An immutable value (a JAX array)
            returns the object that replaces it instead; the restore then puts it into
            the parent (`replace_child`), rebuilding immutable parents (`with_children`)
            up to the first mutable one.
        """
        raise NotImplementedError

    def restore_buffer(self) -> NDArray[Any] | None:
        """A writeable C-contiguous host array that *is* the live value, or None.

        When given, restore reads the checkpoint's bytes straight into it (no copy).
        """
        return None

    def for_saved_dtype(self, dtype: np.dtype[Any]) -> Value | None:
        """A value that takes the checkpoint's `dtype` in place of this one's, or None.

        Asked only when the two dtypes differ; None (the default) makes the restore raise
        `DTypeMismatchError`. An adapter returns a value of `dtype` for a conversion its
        framework makes itself: a Python number leaf of a JAX pytree becomes a weakly
        typed int32/float32 array in a jitted step, and either restores from the other.
        """
        del dtype
        return None

    def staging_buffer(self) -> NDArray[Any]:
        """Where restore reads the value when `restore_buffer()` is None.

        The buffer is read in the same parallel pass as the in-place values and then
        handed to `assign`, which owns it from then on (it may keep it without a copy, as a
        JAX array built on it does). The default is a new array aligned to 64 bytes, the
        alignment XLA adopts without copying; an adapter may return pinned host memory.
        """
        return aligned_empty(self.shape, self.dtype)


class ArrayValue(Value):
    """A value backed by a NumPy array that is restored in place.

    Args:
        array: The live array. Restore writes into its memory, so the caller's references
            see the restored values; shape and dtype must match the checkpoint's.
    """

    __slots__ = ("array", "dtype", "shape")

    def __init__(self, array: NDArray[Any]) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def read(self) -> NDArray[Any]:
        return self.array

    def assign(self, value: NDArray[Any]) -> None:
        if not self.array.flags.writeable:
            raise InvalidValueError(
                "cannot restore into a read-only array; pass a writeable array "
                "(np.array(x) makes one)"
            )
        if not self.array.flags.c_contiguous:
            # Restore reads the checkpoint's bytes straight into the target's memory, which
            # needs one contiguous block; a strided view would silently be a copy elsewhere.
            raise InvalidValueError(
                f"cannot restore in place into a non-contiguous array (strides "
                f"{self.array.strides}); pass np.ascontiguousarray(x) and keep that array"
            )
        np.copyto(self.array, value, casting="no")

    def restore_buffer(self) -> NDArray[Any] | None:
        flags = self.array.flags
        if flags.c_contiguous and flags.writeable and self.array.dtype.kind != "O":
            return self.array
        return None


def check_compatible(value: Value, array_shape: Sequence[int], dtype: Any, where: str) -> None:
    """Raise a clear mismatch error when a checkpoint value cannot go into `value`."""
    shape = tuple(int(d) for d in array_shape)
    if shape != value.shape:
        raise ShapeMismatchError(
            f"{where} is {list(shape)} in the checkpoint but {list(value.shape)} in the program",
            key=None,
        )
    saved = np.dtype(dtype)
    if saved != value.dtype and not (saved.kind in "OSU" and value.dtype.kind in "OSU"):
        raise DTypeMismatchError(
            f"{where} is {_dtype_name(saved)} in the checkpoint but {_dtype_name(value.dtype)} "
            "in the program; convert one of them (trackpoint does not cast silently)"
        )


def _dtype_name(dtype: np.dtype[Any]) -> str:
    return "string" if dtype.kind in "OSU" else str(dtype)


class Trackable:
    """Base class of objects that know how to be checkpointed (see the module docstring)."""

    # Subclasses without __slots__ get a __dict__ as usual; the wrappers made per tensor
    # declare theirs, which halves their size (a restore holds one per tensor).
    __slots__ = ()

    def trackable_children(self) -> Mapping[str, object]:
        """Named children, in the order a breadth-first save meets them."""
        return {}

    def trackable_values(self) -> Mapping[str, Value]:
        """Named tensor values of this object (`{"VARIABLE_VALUE": v}` for a variable)."""
        return {}

    def lookup_child(self, name: str) -> object | None:
        """The live child called `name`, or None."""
        return self.trackable_children().get(name)

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        """Call `callback(child)` when a child called `name` is attached later.

        Returns:
            True if this object will call back; False if it cannot notice new children.
        """
        del name, callback
        return False

    def replace_child(self, name: str, new: object) -> bool:
        """Put `new` in place of the child `name` (restore of an immutable value).

        Returns:
            False when this object is immutable too; `with_children` is used then.
        """
        del name, new
        return False

    def with_children(self, replacements: Mapping[str, object]) -> object:
        """A copy of this (immutable) object with the named children replaced."""
        raise NotTrackableError(
            f"cannot restore into {type(self).__name__}: it cannot take new values in place "
            f"({', '.join(replacements)}) and does not know how to rebuild itself"
        )

    def slot_names(self) -> Sequence[str]:
        """Names of per-variable state this optimizer keeps (empty for non-optimizers)."""
        return ()

    def get_slot(self, variable: object, slot_name: str) -> object | None:
        """The slot `slot_name` of `variable`, or None when it has none (yet)."""
        del variable, slot_name
        return None

    def create_slot(self, variable: object, slot_name: str, value: NDArray[Any]) -> object | None:
        """Create slot `slot_name` for `variable` holding `value` (restore into fresh state).

        Returns:
            The new slot; or None when this optimizer does not update `variable` (the
            checkpoint's value then stays unused and the status reports it).
        """
        raise NotTrackableError(
            f"{type(self).__name__} has no slot {slot_name!r} and cannot create one"
        )

    @property
    def trackable_name(self) -> str:
        """The `full_name` written for this object's values (TF1-style name; informative)."""
        return ""


# ---------------------------------------------------------------------------------------
# Wrappers for objects that are not Trackable themselves


class _ArrayTrackable(Trackable):
    """A bare NumPy array saved as a variable (`VARIABLE_VALUE`), restored in place."""

    __slots__ = ("_value",)

    def __init__(self, array: NDArray[Any]) -> None:
        self._value = ArrayValue(array)

    def trackable_values(self) -> Mapping[str, Value]:
        return {"VARIABLE_VALUE": self._value}


class NumberLeaf(Trackable):
    """A Python or NumPy number held by a container, tracked as a 0-d variable.

    Made by a finder given to `register_number_leaves`. A restore replaces it with a new
    leaf (its `Value.assign` returns one); the container keeps the new leaf's `number` and
    calls its `placed_in`.

    Attributes:
        number: The number.
    """

    __slots__ = ("number",)

    def __init__(self, number: Any) -> None:
        self.number = number

    def placed_in(self, container: object, position: int | str) -> None:
        """Called when a restore has put `number` into `container` at `position`."""
        del container, position


#: Numbers that a container may hold as leaves (NumPy scalars included; not strings).
_NUMBERS = (bool, int, float, complex, np.number, np.bool_)

#: Finders of number leaves: given a dict, list or tuple, each returns a factory
#: `(position, number) -> NumberLeaf` when the container's numbers are state, else None.
_NUMBER_FINDERS: list[Callable[[object], Callable[[Any, Any], NumberLeaf] | None]] = []


def register_number_leaves(
    finder: Callable[[object], Callable[[Any, Any], NumberLeaf] | None],
) -> None:
    """Make the numbers held by some dicts, lists and tuples state.

    For frameworks whose containers are trees of state with numbers as leaves (JAX: a
    jitted step turns `{"step": 0}` into an array). Other containers keep TensorFlow's
    rule: their numbers are part of the program and are not saved.

    Args:
        finder: Called with a dict, list or tuple holding numbers; returns a factory
            `(position, number) -> NumberLeaf` (position: the dict key or the index) when
            its numbers are state, or None. It is asked once per container per save, and
            per number looked up on restore; for one container and position, the factory
            should return the same leaf while it lives (the restore status tells restored
            objects by identity).
    """
    with _REGISTRY_LOCK:
        _NUMBER_FINDERS.append(finder)


def _number_leaves(container: object) -> Callable[[Any, Any], NumberLeaf] | None:
    _load_finder_adapters()  # a dict is met before the arrays in it load their adapter
    for finder in tuple(_NUMBER_FINDERS):
        make = finder(container)
        if make is not None:
            return make
    return None


def _placed(container: object, position: int | str, new: object) -> object:
    """What `container` holds at `position` for the restored `new`: a leaf's number."""
    if isinstance(new, NumberLeaf):
        new.placed_in(container, position)
        return new.number
    return new


def _is_trackable_element(value: object) -> bool:
    if isinstance(value, tuple) and not isinstance(value, Trackable):
        # As TF's `_should_wrap_tuple`: a tuple holding nothing trackable is not tracked
        # (immutable, it can never hold state; Optax's `EmptyState()`); lists and dicts are.
        return any(_is_trackable_element(item) for item in value)
    return isinstance(value, (Trackable, np.ndarray, list, dict)) or (
        _factory_for(value) is not None
    )


class _Container(Trackable):
    """A dict, list or tuple: asks once whether the numbers it holds are state."""

    def __init__(self, items: Any) -> None:
        self._items = items
        self._make_leaf: Callable[[Any, Any], NumberLeaf] | None = None
        self._asked = False

    def _number_leaf(self, position: int | str, number: Any) -> NumberLeaf | None:
        """The leaf tracking `number` at `position`, or None when numbers here are not state."""
        if not self._asked:
            # Once per listing of the children or per restore, not per number: a finder
            # may look at the whole tree.
            self._make_leaf, self._asked = _number_leaves(self._items), True
        return None if self._make_leaf is None else self._make_leaf(position, number)


class _ListTrackable(_Container):
    """A list or tuple: trackable elements are children named by their index.

    A namedtuple's elements are children by field name too, fields first, as TensorFlow's
    `_TupleWrapper` tracks them: the keys read `opt_state/mu/...`, and the index edges
    point at the same nodes.
    """

    _items: list[Any] | tuple[Any, ...]

    def trackable_children(self) -> Mapping[str, object]:
        fields = getattr(self._items, "_fields", ()) if isinstance(self._items, tuple) else ()
        named = zip(fields, self._items, strict=True) if fields else ()
        indexed = ((str(i), value) for i, value in enumerate(self._items))
        self._asked = False  # asked again: the container may have changed since
        children: dict[str, object] = {}
        for name, value in itertools.chain(named, indexed):
            if _is_trackable_element(value):
                children[name] = value
            elif isinstance(value, _NUMBERS):
                leaf = self._number_leaf(self._index(name), value)
                if leaf is not None:
                    children[name] = leaf
        return children

    def _index(self, name: str) -> int:
        fields = getattr(self._items, "_fields", ())
        return fields.index(name) if name in fields else int(name)

    def lookup_child(self, name: str) -> object | None:
        # One element, not the whole children map: restore looks up every child by name,
        # and rebuilding the map each time made restoring a long list quadratic.
        try:
            index = self._index(name)
            value = self._items[index]
        except (ValueError, IndexError):
            return None
        if isinstance(value, _NUMBERS):
            return self._number_leaf(index, value)
        return value if _is_trackable_element(value) else None

    def replace_child(self, name: str, new: object) -> bool:
        if isinstance(self._items, list):
            index = self._index(name)
            self._items[index] = _placed(self._items, index, new)
            return True
        return False

    def with_children(self, replacements: Mapping[str, object]) -> object:
        items = list(self._items)
        leaves: dict[int, object] = {}
        for name, new in replacements.items():
            index = self._index(name)
            items[index] = new.number if isinstance(new, NumberLeaf) else new
            leaves[index] = new
        if hasattr(self._items, "_make"):  # a namedtuple
            rebuilt = type(self._items)._make(items)
        else:
            rebuilt = type(self._items)(items)
        for index, new in leaves.items():
            _placed(rebuilt, index, new)
        return rebuilt


class _DictTrackable(_Container):
    """A dict: trackable values are children named by their key (insertion order)."""

    _items: dict[Any, Any]

    def trackable_children(self) -> Mapping[str, object]:
        self._asked = False  # asked again: the dict may have changed since
        children: dict[str, object] = {}
        for key, value in self._items.items():
            if not isinstance(key, str):
                raise NotTrackableError(
                    f"a tracked dict has the key {key!r}; checkpointed dicts need string keys "
                    "(TensorFlow's rule too)"
                )
            if _is_trackable_element(value):
                children[key] = value
            elif isinstance(value, _NUMBERS):
                leaf = self._number_leaf(key, value)
                if leaf is not None:
                    children[key] = leaf
        return children

    def lookup_child(self, name: str) -> object | None:
        # O(1), for the same reason as _ListTrackable.lookup_child.
        value = self._items.get(name)
        if isinstance(value, _NUMBERS):
            return self._number_leaf(name, value)
        return value if value is not None and _is_trackable_element(value) else None

    def replace_child(self, name: str, new: object) -> bool:
        self._items[name] = _placed(self._items, name, new)
        return True


#: type → factory(obj) -> Trackable, for types that are not Trackable subclasses.
_REGISTRY: dict[type, Callable[[Any], Trackable]] = {
    np.ndarray: _ArrayTrackable,
    list: _ListTrackable,
    tuple: _ListTrackable,
    dict: _DictTrackable,
}
_REGISTRY_LOCK = threading.Lock()


def register(cls: type, factory: Callable[[Any], Trackable]) -> None:
    """Teach trackpoint to checkpoint objects of type `cls` (and its subclasses).

    Args:
        cls: The type to handle.
        factory: Called with an object of that type; returns a `Trackable` describing it.
            It is called once per object per save or restore.
    """
    with _REGISTRY_LOCK:
        _REGISTRY[cls] = factory


#: A framework's top-level package → the trackpoint adapter that registers its types.
#: Imported the first time an object of that framework is met, never before.
_ADAPTERS = {
    "torch": "trackpoint.adapters.torch",
    "jax": "trackpoint.adapters.jax",
    "jaxlib": "trackpoint.adapters.jax",
    "flax": "trackpoint.adapters.jax",
    "optax": "trackpoint.adapters.jax",
    "keras": "trackpoint.adapters.keras",
}
_LOADED_ADAPTERS: set[str] = set()


def _registered(cls: type) -> Callable[[Any], Trackable] | None:
    for base in cls.__mro__:
        factory = _REGISTRY.get(base)
        if factory is not None:
            return factory
    return None


def _load_adapter(adapter: str) -> bool:
    """Import `adapter` once; False when it does not exist (yet)."""
    with _REGISTRY_LOCK:
        _LOADED_ADAPTERS.add(adapter)
    try:
        importlib.import_module(adapter)
    except ModuleNotFoundError as err:
        if err.name != adapter:
            raise
        return False
    return True


def _lookup_factory(cls: type) -> Callable[[Any], Trackable] | None:
    # Load the adapters of the frameworks the MRO names before its first registered type:
    # a Keras layer on the PyTorch backend is a torch.nn.Module too, and must get the
    # Keras adapter even when the torch adapter was loaded first.
    for base in cls.__mro__:
        if base in _REGISTRY:
            break
        adapter = _ADAPTERS.get((base.__module__ or "").partition(".")[0])
        if adapter is not None and adapter not in _LOADED_ADAPTERS:
            _load_adapter(adapter)
    return _registered(cls)


#: Finders for objects whose type alone does not say how to track them (a JAX pytree
#: node can be any class registered with `jax.tree_util`): asked, in order, after the
#: type registry misses; each returns a factory or None.
_FINDERS: list[Callable[[object], Callable[[Any], Trackable] | None]] = []
#: Frameworks whose adapters add finders. When such a framework is already imported, its
#: adapter is loaded at the first object of an unknown type, so that a user's pytree class
#: is known even before any array of the framework has been met.
_FINDER_ADAPTERS = {"jax": "trackpoint.adapters.jax", "torch": "trackpoint.adapters.torch"}


def register_finder(finder: Callable[[object], Callable[[Any], Trackable] | None]) -> None:
    """Teach trackpoint objects recognised by their value rather than by their type.

    For types that cannot be listed up front, such as every class registered as a JAX
    pytree node. Finders are asked only for objects no `register`-ed type matches.

    Args:
        finder: Called with an object; returns a factory (as for `register`) or None.
    """
    with _REGISTRY_LOCK:
        _FINDERS.append(finder)


def _load_finder_adapters() -> None:
    for framework, adapter in _FINDER_ADAPTERS.items():
        if framework in sys.modules and adapter not in _LOADED_ADAPTERS:
            _load_adapter(adapter)


def _factory_for(obj: object) -> Callable[[Any], Trackable] | None:
    factory = _lookup_factory(type(obj))
    if factory is not None:
        return factory
    _load_finder_adapters()
    for finder in tuple(_FINDERS):
        factory = finder(obj)
        if factory is not None:
            return factory
    return None


def to_trackable(obj: object, *, path: str = "") -> Trackable:
    """The `Trackable` view of `obj` (itself when it is one).

    Raises:
        NotTrackableError: no adapter knows `obj`'s type; the message names the type and
            the object's path and points at `register`.
    """
    if isinstance(obj, Trackable):
        return obj
    factory = _factory_for(obj)
    if factory is None:
        where = f" at {path}" if path else ""
        raise NotTrackableError(
            f"trackpoint does not know how to checkpoint a {type(obj).__module__}."
            f"{type(obj).__qualname__}{where}; wrap it in trackpoint.Variable / a Module, or "
            "teach trackpoint with trackpoint.register(type, factory)"
        )
    return factory(obj)
