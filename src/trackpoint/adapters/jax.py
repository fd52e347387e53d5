"""JAX, Flax NNX and Optax objects as trackables.

Imported by trackpoint the first time a JAX, Flax or Optax object is checkpointed (or an
object of an unknown type is met while JAX is imported); it registers:

- `jax.Array` → a variable (`VARIABLE_VALUE`). JAX arrays are immutable, so restoring one
  builds a new array from the checkpoint's buffer with the target's dtype, sharding and
  weak type, and the parent receives it (dicts and lists in place; tuples, namedtuples
  and pytree nodes rebuilt with the same type, up to the first mutable parent — a
  `trackpoint.Checkpoint` attribute then holds the restored tree). Typed PRNG keys are
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

Python numbers, strings and functions inside a pytree (static fields, hyperparameters
given as floats) are not saved: they are part of the program, as Python attributes are
in TensorFlow, and a restore keeps the target's. A number held by an `nnx.Variable` is
state, and is saved as a 0-d tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from trackpoint.errors import InvalidValueError, NotTrackableError
from trackpoint.graph import ArrayValue, Trackable, Value, register, register_finder, to_trackable

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
    """A node registered with `jax.tree_util`: children by key, rebuilt on restore."""

    def __init__(self, node: object) -> None:
        entries, self._treedef = jax.tree_util.tree_flatten_with_path(
            node, is_leaf=lambda x: x is not node
        )
        self._names = [_key_name(path[0]) for path, _ in entries]
        self._children = [child for _, child in entries]

    def trackable_children(self) -> Mapping[str, object]:
        return {
            name: child
            for name, child in zip(self._names, self._children, strict=True)
            if _is_child(child)
        }

    def with_children(self, replacements: Mapping[str, object]) -> object:
        children = list(self._children)
        for name, new in replacements.items():
            children[self._names.index(name)] = new
        return jax.tree_util.tree_unflatten(self._treedef, children)


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
    """A Python number held by an `nnx.Variable`, saved as a 0-d tensor."""

    def __init__(self, number: bool | int | float | complex) -> None:
        self.number = number
        array = np.asarray(number)
        self.shape = ()
        self.dtype = array.dtype

    def read(self) -> NDArray[Any]:
        return np.asarray(self.number)

    def assign(self, value: NDArray[Any]) -> object:
        return type(self.number)(value.item())


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
if nnx is not None:
    register(nnx.Variable, _NnxVariable)
    register(nnx.Pytree, _NnxPytree)
    register(nnx.State, _NnxState)
