"""NumPy building blocks: `Variable`, `Module` (auto-tracking, like `tf.Module`) and `PythonState`.

For users with no framework, and for tests: a `Module` tracks every `Variable`, `Module`,
NumPy array, other trackable, or list/dict/tuple holding them that is assigned to one of
its attributes, in assignment order — the order TensorFlow's `AutoTrackable` uses, so the
same tree gives the same checkpoint keys as a tree of `tf.Module`s.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import DTypeMismatchError, ShapeMismatchError

from ._keys import PYTHON_STATE, VARIABLE_VALUE
from ._trackable import Trackable, Value, _is_trackable_element
from ._walk import walk

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["JSONState", "Module", "PythonState", "Variable"]


class Variable(Trackable, Value):
    """A NumPy-backed variable: a value with a fixed shape and dtype, restored in place.

    Args:
        initial_value: The value; it is copied into the variable's own array.
        name: A TF1-style name (`"dense/kernel"`), used as `full_name` in the object graph
            and to match name-based (TF1) checkpoints. Defaults to `"Variable"` like TF.
        dtype: Convert the initial value to this dtype.

    Example:
        >>> from trackpoint import Variable
        >>> v = Variable([1.0, 2.0], dtype="float32")
        >>> v.assign([3.0, 4.0])
        >>> v.numpy()
        array([3., 4.], dtype=float32)
    """

    def __init__(
        self, initial_value: ArrayLike, *, name: str | None = None, dtype: DTypeLike | None = None
    ) -> None:
        self._array: NDArray[Any] = _bytes_if_text(
            np.array(initial_value, dtype=dtype, order="C", copy=True)
        )
        self.name = "Variable" if name is None else name
        self.shape = tuple(self._array.shape)
        self.dtype = self._array.dtype

    # -- the array API ---------------------------------------------------------------

    def numpy(self) -> NDArray[Any]:
        """The variable's array itself (writes to it change the variable)."""
        return self._array

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NDArray[Any]:
        if dtype is None and not copy:
            return self._array
        return np.array(self._array, dtype=dtype, copy=True)

    def assign(self, value: ArrayLike) -> None:
        """Set the value in place; the shape must match and the dtype must be castable safely."""
        array = _bytes_if_text(np.asarray(value))
        if array.shape != self.shape:
            raise ShapeMismatchError(
                f"cannot assign a value of shape {list(array.shape)} to variable '{self.name}' "
                f"of shape {list(self.shape)}"
            )
        if not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
            raise DTypeMismatchError(
                f"cannot assign a {array.dtype} value to {self.dtype} variable '{self.name}'"
            )
        np.copyto(self._array, array, casting="same_kind")

    def __repr__(self) -> str:
        return f"<trackpoint.Variable {self.name!r} shape={list(self.shape)} dtype={self.dtype}>"

    # -- Trackable / Value --------------------------------------------------------------

    def trackable_values(self) -> Mapping[str, Value]:
        return {VARIABLE_VALUE: self}

    @property
    def trackable_name(self) -> str:
        return self.name

    def read(self) -> NDArray[Any]:
        return self._array

    def restore_buffer(self) -> NDArray[Any] | None:
        return self._array if self._array.dtype.kind != "O" else None


def _bytes_if_text(array: NDArray[Any]) -> NDArray[Any]:
    """Fixed-width str/bytes arrays as object arrays of bytes, like a `tf.string` variable.

    NumPy's `<U5`/`S5` would truncate a longer restored string (and refuse the restore);
    object arrays hold strings of any length. `str` is stored UTF-8 encoded, as TF does.
    """
    if array.dtype.kind not in "US":
        return array
    out = np.empty(array.shape, dtype=object)
    for index, item in np.ndenumerate(array):
        out[index] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return out


class Module(Trackable):
    """An object whose attributes are tracked as checkpoint children, like `tf.Module`.

    Assigning a `Variable`, a `Module`, a NumPy array, any trackable, or a list/dict/tuple
    holding them to an attribute tracks it under the attribute's name, in assignment order.
    Attributes whose name starts with `_` are not tracked. A value restored before its
    attribute exists (a layer created after `restore`) is applied when it is assigned.

    Example:
        >>> import numpy as np
        >>> from trackpoint import Module, Variable
        >>> class Dense(Module):
        ...     def __init__(self, n_in, n_out):
        ...         self.kernel = Variable(np.zeros((n_in, n_out), np.float32))
        ...         self.bias = Variable(np.zeros(n_out, np.float32))
        >>> list(Dense(3, 2).trackable_children())
        ['kernel', 'bias']
    """

    _tp_children: dict[str, object]
    _tp_deferred: dict[str, list[Callable[[object], None]]]

    # Set before any subclass __init__ runs, so __setattr__ works from the first line.
    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        del args, kwargs
        self = super().__new__(cls)
        object.__setattr__(self, "_tp_children", {})
        object.__setattr__(self, "_tp_deferred", {})
        return self

    if TYPE_CHECKING:
        # Modules hold whatever attributes their code assigns; let type checkers know.
        def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name.startswith("_"):
            return
        children: dict[str, object] = self._tp_children
        if _is_trackable_element(value):
            children[name] = value
            callbacks = self._tp_deferred.pop(name, ())
            for callback in callbacks:
                callback(value)
        else:
            children.pop(name, None)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._tp_children.pop(name, None)

    def trackable_children(self) -> Mapping[str, object]:
        return dict(self._tp_children)

    def lookup_child(self, name: str) -> object | None:
        return self._tp_children.get(name)

    def replace_child(self, name: str, new: object) -> bool:
        setattr(self, name, new)
        return True

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        self._tp_deferred.setdefault(name, []).append(callback)
        return True

    @property
    def variables(self) -> list[Variable]:
        """Every `Variable` reachable from this module, each once, in breadth-first order."""
        return [obj for obj in walk(self) if isinstance(obj, Variable)]


class PythonState(Trackable):
    """Python state saved as a string tensor (`py_state`), like `tf.train.experimental.PythonState`.

    Subclasses implement `serialize()` → str and `deserialize(str)`.
    """

    @abstractmethod
    def serialize(self) -> str:
        """The state as a string."""

    @abstractmethod
    def deserialize(self, text: str) -> None:
        """Set the state from a string made by `serialize`."""

    def trackable_values(self) -> Mapping[str, Value]:
        return {PYTHON_STATE: _PythonStateValue(self)}


class _PythonStateValue(Value):
    def __init__(self, owner: PythonState) -> None:
        self._owner = owner
        self.shape = ()
        self.dtype = np.dtype(object)

    def read(self) -> NDArray[Any]:
        out = np.empty((), dtype=object)
        out[()] = self._owner.serialize().encode("utf-8")
        return out

    def assign(self, value: NDArray[Any]) -> None:
        raw: object = value[()]
        self._owner.deserialize(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))


class JSONState(PythonState, dict):  # type: ignore[type-arg]
    """A dict of JSON-serializable Python values (counters, configs) saved as `py_state`.

    Example:
        >>> from trackpoint import JSONState
        >>> state = JSONState(epoch=3, best_loss=0.25)
        >>> state.serialize()
        '{"best_loss": 0.25, "epoch": 3}'
    """

    def __hash__(self) -> int:  # type: ignore[override]  # tracked by identity, like objects
        return id(self)

    def serialize(self) -> str:
        return json.dumps(self, sort_keys=True)

    def deserialize(self, text: str) -> None:
        self.clear()
        self.update(json.loads(text))
