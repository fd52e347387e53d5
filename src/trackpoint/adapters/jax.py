"""JAX, Flax NNX and Optax objects as trackables.

Imported by trackpoint the first time a JAX, Flax or Optax object is checkpointed (or an
object of an unknown type is met while JAX is imported); it registers:

- `jax.Array` → a variable (`VARIABLE_VALUE`). JAX arrays are immutable, so restoring one
  builds a new array from the checkpoint's buffer with the target's dtype, sharding and
  weak type, and the parent receives it (dicts and lists in place; tuples, namedtuples
  and pytree nodes rebuilt with the same type, up to the first mutable parent — a
  `trackpoint.Checkpoint` attribute then holds the restored tree, which
  `Checkpoint.restore_trees` hands back). Typed PRNG keys are
  saved as their `jax.random.key_data` and re-wrapped with the same implementation.
- Pytree nodes of any class registered with `jax.tree_util` (`flax.struct.dataclass`,
  `jax.tree_util.register_dataclass`, custom nodes) → children by key: field name, dict
  key, index. Dicts, lists, tuples and namedtuples (Optax states such as
  `ScaleByAdamState`) are trackpoint's own containers; namedtuple fields are children by
  name (`opt_state/0/mu/...`), as TensorFlow names them.
- `flax.nnx` objects (`Module`, `Optimizer`, `Rngs`, `nnx.List`/`nnx.Dict`, any
  `nnx.Pytree`) → children by attribute, for attributes holding data; `nnx.Variable`
  (`Param`, `BatchStat`, `OptState`, `RngKey`, …) → a variable restored in place with
  `set_value`, so a model and its optimizer keep their identity.
- `flax.nnx.State` → children by key (the optimizer state of an `nnx.Optimizer`).

A Python or NumPy number that is a leaf of a registered pytree node (a field of a
`flax.struct.dataclass` such as linen's `TrainState.step`, what `jax.tree_util` flattens)
is state: a 0-d variable at the key an array leaf would have (`state/step/...`), saved
exactly (int64, float64, bool, or the NumPy scalar's dtype) and restored as the same
Python type. A jitted step turns such a number into a weakly typed array; either form
restores from a checkpoint of the other. A number held by an `nnx.Variable` is state
too. So is a number held by a dict, list or tuple that is a JAX tree (holds a JAX array
somewhere below: `{"params": params, "step": 0}`), through `register_number_leaves`;
containers without JAX arrays keep TensorFlow's rule (their numbers are not saved), so
NumPy and PyTorch programs checkpoint as with TensorFlow. Static fields (aux data),
strings and functions are not saved: they are part of the program, as Python attributes
are in TensorFlow, and a restore keeps the target's.
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from trackpoint.errors import InvalidValueError, NotTrackableError
from trackpoint.graph import (
    ArrayValue,
    NumberLeaf,
    Trackable,
    Value,
    register,
    register_finder,
    register_number_leaves,
    to_trackable,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from numpy.typing import NDArray

__all__ = ["JaxArrayValue", "restore_array"]

VARIABLE_VALUE = "VARIABLE_VALUE"


# ---------------------------------------------------------------------------------------
# Arrays


def _is_key_array(array: jax.Array) -> bool:
    return bool(jnp.issubdtype(array.dtype, jax.dtypes.prng_key))


def restore_array(target: jax.Array, value: NDArray[Any]) -> jax.Array:
    """A new JAX array holding `value`, placed and typed like `target`.

    `target` is left untouched (it may even have been donated). On CPU the new array
    takes `value`'s buffer without a copy where JAX allows it.

    Args:
        target: The array being restored: its sharding, PRNG implementation and weak
            type are kept.
        value: The checkpoint's array (for a PRNG key array: its key data).

    Returns:
        The restored array.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> restore_array(jnp.zeros(2), np.ones(2, np.float32))
        Array([1., 1.], dtype=float32)
    """
    if _is_key_array(target):
        keys = jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(target))
        placed: jax.Array = jax.device_put(keys, target.sharding)
        return placed
    source: Any = value
    if target.weak_type and value.ndim == 0:
        # A weakly typed scalar (made from a Python number) promotes differently in
        # arithmetic (a weak f32 times a bf16 array stays bf16); a strong one would change
        # what the resumed program computes. JAX makes weak arrays from Python numbers.
        weak = jnp.asarray(value.item())
        if weak.dtype == target.dtype:
            source = weak
    # On CPU, device_put takes the host buffer without a copy where alignment allows.
    restored: jax.Array = jax.device_put(source, target.sharding)
    return restored


class JaxArrayValue(Value):
    """A JAX array as a checkpoint value: read to host, restored as a new array.

    Args:
        array: The live array.
    """

    def __init__(self, array: jax.Array) -> None:
        self.array = array
        if _is_key_array(array):
            data = jax.eval_shape(jax.random.key_data, array)
            self.shape = tuple(data.shape)
            self.dtype = np.dtype(data.dtype)
        else:
            self.shape = tuple(array.shape)
            self.dtype = np.dtype(array.dtype)

    def read(self) -> NDArray[Any]:
        """The array on the host (a read-only view of its buffer on CPU, where possible).

        Raises:
            InvalidValueError: the array was deleted (donated), or lives on other processes.
        """
        if self.array.is_deleted():
            raise InvalidValueError(
                "a JAX array to save has been deleted (donated to a jitted function?); "
                "point the checkpoint at the live values after each step, e.g. "
                "ckpt.params = params"
            )
        if not self.array.is_fully_addressable:
            raise InvalidValueError(
                f"a JAX array of shape {list(self.shape)} is sharded across processes "
                f"({self.array.sharding}); a single-process save cannot read it"
            )
        data = jax.random.key_data(self.array) if _is_key_array(self.array) else self.array
        # Zero-copy on CPU for a single-device array (a read-only view of its buffer).
        return np.asarray(data)

    def assign(self, value: NDArray[Any]) -> jax.Array:
        """A new array holding `value`, like the live one (see `restore_array`)."""
        return restore_array(self.array, value)

    def for_saved_dtype(self, dtype: np.dtype[Any]) -> Value | None:
        """A weakly typed scalar (a Python number after `jit`) takes a number's dtype.

        A number leaf saved by an unjitted run (int64, float64) restores into the array
        a jitted run holds, converted as JAX converts the Python number (`jnp.asarray`).
        """
        if self.array.weak_type and not self.shape and _same_kind(dtype, self.dtype):
            return _WeakScalarValue(self.array, dtype)
        return None


def _same_kind(saved: np.dtype[Any], live: np.dtype[Any]) -> bool:
    """Whether a number of dtype `saved` converts to `live` as JAX converts numbers."""
    kinds = {"b": "b", "i": "iu", "u": "iu", "f": "f", "c": "c"}
    return live.kind in kinds.get(saved.kind, "")


class _WeakScalarValue(Value):
    """A weakly typed 0-d JAX array restored from a number saved with another dtype."""

    def __init__(self, array: jax.Array, dtype: np.dtype[Any]) -> None:
        self.array = array
        self.shape = ()
        self.dtype = dtype

    def assign(self, value: NDArray[Any]) -> jax.Array:
        converted = value.astype(self.array.dtype)
        if value.dtype.kind in "iu" and converted.item() != value.item():
            raise InvalidValueError(
                f"the checkpoint's number {value.item()} does not fit the program's "
                f"{self.array.dtype} scalar (JAX makes Python ints {self.array.dtype} unless "
                "jax_enable_x64 is set)"
            )
        return restore_array(self.array, converted)


class _ArrayNode(Trackable):
    """A bare JAX array: a variable node whose restore returns a new array."""

    def __init__(self, array: jax.Array) -> None:
        self._value = JaxArrayValue(array)

    def trackable_values(self) -> Mapping[str, Value]:
        return {VARIABLE_VALUE: self._value}


# ---------------------------------------------------------------------------------------
# Pytree nodes


def _is_child(value: object) -> bool:
    """Whether trackpoint tracks `value` (Python numbers, strings, functions: no)."""
    try:
        to_trackable(value)
    except NotTrackableError:
        return False
    return True


def _key_name(key: object) -> str:
    if isinstance(key, jax.tree_util.GetAttrKey):
        return str(key.name)
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


class _PytreeNode(Trackable):
    """A node registered with `jax.tree_util`: children by key, rebuilt on restore.

    A child that is a Python or NumPy number is a leaf like an array (JAX traces it, and
    a jitted step returns it as an array): it is a 0-d variable, a `_NumberLeaf`.
    """

    def __init__(self, node: object) -> None:
        entries, self._treedef = jax.tree_util.tree_flatten_with_path(
            node, is_leaf=lambda x: x is not node
        )
        self._node = node
        self._names = [_key_name(path[0]) for path, _ in entries]
        self._children = [child for _, child in entries]

    def trackable_children(self) -> Mapping[str, object]:
        return {
            name: _number_leaf(self._node, index, child) if _is_number(child) else child
            for index, (name, child) in enumerate(zip(self._names, self._children, strict=True))
            if _is_number(child) or _is_child(child)
        }

    def with_children(self, replacements: Mapping[str, object]) -> object:
        children = list(self._children)
        leaves: dict[int, _NumberLeaf] = {}
        for name, new in replacements.items():
            index = self._names.index(name)
            if isinstance(new, _NumberLeaf):
                leaves[index] = new
                new = new.number
            children[index] = new
        rebuilt = jax.tree_util.tree_unflatten(self._treedef, children)
        for index, leaf in leaves.items():
            _remember_leaf(rebuilt, index, leaf)
        return rebuilt


_NUMBERS = (bool, int, float, complex, np.number, np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBERS)


class _NumberLeaf(NumberLeaf):
    """A number at one position of one pytree node or JAX container, saved as a 0-d tensor.

    One object per (node, position), kept while anything holds it (`_LEAVES`): the
    restore status tells restored objects by identity, and equal numbers can be one
    object (small ints are), which would otherwise look like one shared value.
    """

    __slots__ = ("__weakref__", "node")

    def __init__(self, number: Any, node: object = None) -> None:
        super().__init__(number)
        self.node = node  # keeps the node, and with it the id in `_LEAVES`'s key, alive

    def trackable_values(self) -> Mapping[str, Value]:
        return {VARIABLE_VALUE: _LeafValue(self.number)}

    def placed_in(self, container: object, position: int | str) -> None:
        _remember_leaf(container, position, self)


#: (id(node), position) → its leaf; the leaf holds the node, so the id stays its own.
_LEAVES: weakref.WeakValueDictionary[tuple[int, int | str], _NumberLeaf] = (
    weakref.WeakValueDictionary()
)


def _number_leaf(node: object, index: int | str, number: Any) -> _NumberLeaf:
    leaf = _LEAVES.get((id(node), index))
    if leaf is None or leaf.node is not node:
        leaf = _NumberLeaf(number, node)
        _LEAVES[(id(node), index)] = leaf
    elif leaf.number is not number:
        # A dict or list is changed in place (`state["step"] += 1`): the same leaf (the
        # restore status knows it by identity) holds the number there now.
        leaf.number = number
    return leaf


def _remember_leaf(node: object, index: int | str, leaf: _NumberLeaf) -> None:
    leaf.node = node
    _LEAVES[(id(node), index)] = leaf


def _find_number_leaves(container: object) -> Callable[[Any, Any], NumberLeaf] | None:
    """Number leaves for a dict, list or tuple that is a JAX tree (holds a JAX array).

    Such a container is a pytree whose numbers `jax.tree_util` flattens and a jitted step
    returns as arrays; containers of other frameworks keep TensorFlow's rule.
    """
    try:
        leaves = jax.tree_util.tree_leaves(container)
    except (TypeError, ValueError):  # e.g. dict keys of types JAX cannot sort
        return None
    if not any(isinstance(leaf, jax.Array) for leaf in leaves):
        return None
    return functools.partial(_number_leaf, container)


def _find_pytree_node(obj: object) -> Callable[[Any], Trackable] | None:
    # None is a pytree node without children in JAX, but nothing to track.
    if obj is None or isinstance(obj, (str, bytes, int, float, complex)):
        return None
    children = jax.tree_util.tree_leaves(obj, is_leaf=lambda x: x is not obj)
    if len(children) == 1 and children[0] is obj:
        return None  # a leaf: not a registered pytree node
    return _PytreeNode


# ---------------------------------------------------------------------------------------
# Flax NNX

nnx: Any
try:
    from flax import nnx
except ImportError:  # JAX without Flax: arrays and pytrees only
    nnx = None


class _ScalarValue(Value):
    """A Python or NumPy number (held by an `nnx.Variable`), saved as a 0-d tensor.

    Saved exactly: a Python int as int64, a float as float64 (NumPy's types for them, and
    TensorFlow's for its step counters); a NumPy scalar in its own dtype.
    """

    def __init__(self, number: Any, dtype: np.dtype[Any] | None = None) -> None:
        self.number = number
        self.shape = ()
        self.dtype = np.asarray(number).dtype if dtype is None else dtype

    def read(self) -> NDArray[Any]:
        return np.asarray(self.number)

    def assign(self, value: NDArray[Any]) -> object:
        return type(self.number)(value.item())


class _LeafValue(_ScalarValue):
    """A number leaf of a pytree: restored as a new number of the program's type.

    It takes the value a jitted run saved for the same leaf (a weakly typed int32 or
    float32 array), as the number would have become that array in the jitted step.
    """

    def assign(self, value: NDArray[Any]) -> _NumberLeaf:
        if isinstance(self.number, np.generic):
            return _NumberLeaf(value.astype(self.number.dtype)[()])
        return _NumberLeaf(type(self.number)(value.item()))

    def for_saved_dtype(self, dtype: np.dtype[Any]) -> Value | None:
        live = np.dtype(type(self.number)) if isinstance(self.number, np.generic) else None
        if live is not None:
            # A NumPy scalar keeps its dtype: only what converts to it exactly.
            takes = np.can_cast(dtype, live, "safe")
        elif isinstance(self.number, bool):
            takes = dtype.kind == "b"
        else:
            takes = _same_kind(dtype, self.dtype)  # Python ints and floats are unbounded
        return _LeafValue(self.number, dtype) if takes else None


def _variable_inner(variable: Any) -> Value | None:
    raw = variable.get_value()
    if isinstance(raw, jax.Array):
        return JaxArrayValue(raw)
    if isinstance(raw, np.ndarray):
        return ArrayValue(raw)
    if isinstance(raw, (bool, int, float, complex)):
        return _ScalarValue(raw)
    if raw is None:
        return None
    raise NotTrackableError(
        f"an {type(variable).__name__} holds a {type(raw).__module__}.{type(raw).__qualname__}; "
        "trackpoint saves variables holding arrays or numbers"
    )


class _VariableValue(Value):
    """The value of an `nnx.Variable`, restored in place with `set_value`."""

    def __init__(self, variable: Any, inner: Value) -> None:
        self._variable = variable
        self._inner = inner
        self.shape = inner.shape
        self.dtype = inner.dtype

    def read(self) -> NDArray[Any]:
        return self._inner.read()

    def assign(self, value: NDArray[Any]) -> None:
        new = self._inner.assign(value)
        if new is not None:  # None: a NumPy array written in place
            self._variable.set_value(new)

    def restore_buffer(self) -> NDArray[Any] | None:
        return self._inner.restore_buffer()


class _NnxVariable(Trackable):
    def __init__(self, variable: Any) -> None:
        self._variable = variable

    def trackable_values(self) -> Mapping[str, Value]:
        inner = _variable_inner(self._variable)
        return {} if inner is None else {VARIABLE_VALUE: _VariableValue(self._variable, inner)}


def _holds_data(value: object) -> bool:
    return bool(nnx.is_data(value) or nnx.has_data(value))


class _NnxPytree(Trackable):
    """An `nnx.Module`/`Optimizer`/`Rngs`/…: children by attribute, in assignment order.

    Only attributes holding data are children (Variables, arrays, sub-objects, containers
    of them); configuration (`tx`, `rate`, functions) is not saved.
    """

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def trackable_children(self) -> Mapping[str, object]:
        return {
            name: value
            for name, value in vars(self._obj).items()
            if not name.startswith("_") and _holds_data(value)
        }

    def replace_child(self, name: str, new: object) -> bool:
        setattr(self._obj, name, new)  # a raw JAX array attribute, restored as a new array
        return True


class _NnxState(Trackable):
    """An `nnx.State` (a mutable mapping; `nnx.List` entries have int keys)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def _keys(self) -> dict[str, Any]:
        return {str(key): key for key in self._state}

    def trackable_children(self) -> Mapping[str, object]:
        return {name: self._state[key] for name, key in self._keys().items()}

    def replace_child(self, name: str, new: object) -> bool:
        self._state[self._keys()[name]] = new
        return True


register(jax.Array, _ArrayNode)
register_finder(_find_pytree_node)
register_number_leaves(_find_number_leaves)
if nnx is not None:
    register(nnx.Variable, _NnxVariable)
    register(nnx.Pytree, _NnxPytree)
    register(nnx.State, _NnxState)
