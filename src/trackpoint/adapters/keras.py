"""Keras 3 adapter: models, layers, optimizers and variables as TensorFlow+Keras tracks them.

Imported lazily, the first time a Keras object is checkpointed. On every backend (JAX,
PyTorch, TensorFlow) the object graph and keys are those TensorFlow writes for the same
model on the TensorFlow backend (TF format doc §7.5), so checkpoints move between
backends and to and from `tf.train.Checkpoint`:

- A layer's or model's children are its attributes that TensorFlow would track, in
  assignment order: sub-layers, optimizers and `keras.Variable`s (Dense's `_kernel`,
  `bias`), and the lists, dicts and tuples TensorFlow wraps as container nodes even when
  they hold no variables (a functional model's `_operations`, `_inbound_nodes`, …).
  TensorFlow wraps only containers of the exact built-in types, and Keras turns a
  container into a `TrackedList`/`TrackedDict` when its own tracking is on, so the
  stored type says what TensorFlow tracked. Attributes Keras assigns with TensorFlow's
  tracking switched off (the tracker's stores, a functional model's input/output
  structures) are left out, as TensorFlow leaves them out.
- An optimizer's children are the same, except that every list and dict is a container
  (on TensorFlow its wrapping runs before Keras's). Its state is the list `_variables`,
  restored **by position**: `optimizer/_variables/N` is the N-th of `optimizer.variables`.
- A variable is a node with one value, `VARIABLE_VALUE`, restored with
  `variable.assign(value)` in its own dtype. Keras's `"int"` counters (an optimizer's
  `iteration`, LossScaleOptimizer's `step_counter`, Normalization's `count`) are int64
  on TensorFlow but int32 elsewhere; they are saved as int64 everywhere, as TF does.

On the TensorFlow backend the children are taken from TF's own dependency list (Keras
objects are TF trackables there), which is the reference the rules above reproduce.

Deferred restoration: a value whose layer or optimizer has not created it yet (an unbuilt
model, an optimizer before `build`) waits, and is restored the moment that object's
`build` returns — a model built by its first call, `optimizer.build(vars)` or the first
`apply_gradients`. Until then `assert_consumed()` fails and names the waiting values.

Limitations: on the PyTorch backend sub-layers live in `torch.nn.Module._modules`, apart
from the other attributes, so a layer that mixes own variables and sub-layers lists the
sub-layers first (TensorFlow lists them in assignment order): node ids can differ from
TF's, keys and restore do not. An attribute that first held None and later a trackable
is ordered by its first assignment (TF orders it by the later one).
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import keras
import ml_dtypes
import numpy as np

from trackpoint import NotTrackableError, ShapeMismatchError
from trackpoint.graph import Trackable, Value, register, to_trackable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from numpy.typing import NDArray

__all__: list[str] = []

_BACKEND = keras.backend.backend()

#: Layer attributes Keras assigns inside `_initialize_tracker` and `Function.__init__`
#: with TensorFlow's attribute tracking switched off (`_self_setattr_tracking = False`,
#: keras/src/layers/layer.py and keras/src/ops/function.py): never tracked by TF.
_UNTRACKED_LAYER_ATTRIBUTES = frozenset(
    {
        "_tracker",
        "_trainable_variables",
        "_non_trainable_variables",
        "_layers",
        "_metrics",
        "_seed_generators",
        "_inputs_struct",
        "_outputs_struct",
        "_inputs",
        "_outputs",
        # Keras's PyTorch backend keeps the variables' tensors here too; not a Keras attribute.
        "_torch_params",
    }
)

#: Keras variables declared with dtype "int": int64 on TensorFlow, int32 on other backends
#: (keras/src/backend/common/dtypes.py). Saved as int64 so that every backend and TF agree.
_TF_INT_VARIABLES = frozenset({"iteration", "step_counter", "count"})


def _torch_module_attributes() -> frozenset[str]:
    if _BACKEND != "torch":
        return frozenset()
    import torch

    return frozenset(vars(torch.nn.Module()))


#: On the PyTorch backend a layer is a `torch.nn.Module`; its bookkeeping dicts are not
#: Keras attributes and TF never sees them.
_TORCH_MODULE_ATTRIBUTES = _torch_module_attributes()


def _is_keras_trackable(value: object) -> bool:
    """Objects that are TensorFlow `Trackable`s on the TF backend (checked there)."""
    return isinstance(value, (keras.Variable, keras.layers.Layer, keras.optimizers.Optimizer))


def _is_wrapped_container(value: object) -> bool:
    """Containers TensorFlow's `wrap_or_unwrap` wraps: exact list/dict, or a tuple of such."""
    kind = type(value)
    if kind in (list, dict, OrderedDict):
        return True
    return isinstance(value, tuple) and _tuple_needs_wrapping(value)


def _tuple_needs_wrapping(value: tuple[Any, ...]) -> bool:
    # TF's `_should_wrap_tuple`: a tuple is tracked when it holds something trackable.
    return any(
        _is_keras_trackable(item)
        or type(item) in (list, dict, OrderedDict)
        or (isinstance(item, tuple) and _tuple_needs_wrapping(item))
        for item in value
    )


# ---------------------------------------------------------------------------------------
# Deferred restoration: callbacks waiting on an object's `build`

#: id(owner) → {attribute path below the owner: callbacks waiting for it}.
_PENDING: dict[int, dict[tuple[str, ...], list[Callable[[object], None]]]] = {}


def _defer(owner: object, path: tuple[str, ...], callback: Callable[[object], None]) -> bool:
    """Call `callback(child)` once `owner`'s `build` has returned and `path` exists."""
    build = getattr(owner, "build", None)
    if build is None:
        return False
    key = id(owner)
    if key not in _PENDING:
        _PENDING[key] = {}
        weakref.finalize(owner, _PENDING.pop, key, None)
    _PENDING[key].setdefault(path, []).append(callback)
    if not getattr(build, "_trackpoint_build_hook", False):
        _install_build_hook(owner, build)
    return True


def _install_build_hook(owner: object, build: Callable[..., Any]) -> None:
    # Keras itself replaces `layer.build` by an instance attribute (Layer.__new__); the
    # hook wraps whatever is there. Set with object.__setattr__ so neither Keras's nor
    # TF's attribute tracking sees a new attribute.
    owner_ref = weakref.ref(owner)

    @functools.wraps(build)
    def build_then_restore(*args: Any, **kwargs: Any) -> Any:
        result = build(*args, **kwargs)
        live = owner_ref()
        if live is not None:
            _fire_pending(live)
        return result

    build_then_restore._trackpoint_build_hook = True  # type: ignore[attr-defined]
    object.__setattr__(owner, "build", build_then_restore)


def _fire_pending(owner: object) -> None:
    pending = _PENDING.get(id(owner))
    if not pending:
        return
    # Shortest paths first: a container must exist before what it holds.
    for path in sorted(pending, key=len):
        child = _resolve(owner, path)
        if child is None:
            continue
        for callback in pending.pop(path):
            callback(child)


def _resolve(owner: object, path: tuple[str, ...]) -> object | None:
    obj: object | None = owner
    for name in path:
        if obj is None:
            return None
        obj = to_trackable(obj).lookup_child(name)
    return obj


_POSITION_HINT = (
    "Keras optimizers restore their state by position (optimizer/_variables/N, as TF+Keras "
    "does), so the optimizer must be built with the same variables in the same order as "
    "when it was saved: optimizer.build(model.trainable_variables) on the same model"
)


def _describe(value: object) -> str:
    if isinstance(value, keras.Variable):
        return f"'{value.path}' {list(value.shape)}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# Trackables


def _numpy_dtype(name: str) -> np.dtype[Any]:
    # bfloat16 and the float8 kinds are NumPy dtypes only through ml_dtypes.
    found = getattr(ml_dtypes, name, None)
    return np.dtype(found if found is not None else name)


class _KerasVariableValue(Value):
    """A `keras.Variable`'s value: read to the host, restored with `assign`."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable
        self.shape = tuple(int(d) for d in variable.shape)
        own = _numpy_dtype(keras.backend.standardize_dtype(variable.dtype))
        self._widen = (
            own == np.int32 and self.shape == () and variable.name in _TF_INT_VARIABLES
        ) and _BACKEND != "tensorflow"
        self.dtype = np.dtype(np.int64) if self._widen else own
        self._own_dtype = own

    def read(self) -> NDArray[Any]:
        array = np.asarray(keras.ops.convert_to_numpy(self.variable.value))
        return array.astype(self.dtype, copy=False)

    def assign(self, value: NDArray[Any]) -> None:
        array = np.asarray(value)
        if self._widen:
            info = np.iinfo(self._own_dtype)
            if array.min(initial=0) < info.min or array.max(initial=0) > info.max:
                raise ShapeMismatchError(
                    f"'{self.variable.path}' is int32 on the {_BACKEND} backend and cannot "
                    f"hold the checkpoint's value {array.tolist()}"
                )
            array = array.astype(self._own_dtype)
        variable = self.variable
        if getattr(variable, "_value", False) is None and callable(
            getattr(variable, "_initializer", None)
        ):
            # Created inside a StatelessScope (a model built by its first call runs
            # `call` symbolically): an assign now would be dropped with the scope, and
            # Keras initializes the variable when the scope ends. Make the checkpoint's
            # value its initial value instead (the TF quirk of format doc §7.7).
            variable._initializer = _Constant(array)
            return
        variable.assign(array)


class _Constant:
    """An initializer that returns the restored value (for deferred-initialized variables)."""

    def __init__(self, array: NDArray[Any]) -> None:
        self.array = array

    def __call__(self, shape: Any, dtype: Any = None) -> NDArray[Any]:
        del shape, dtype  # checked against the variable before restore
        return self.array


class _KerasVariable(Trackable):
    """A `keras.Variable`: one value, `VARIABLE_VALUE` (TF's own serialization of it)."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable

    def trackable_values(self) -> Mapping[str, Value]:
        return {"VARIABLE_VALUE": _KerasVariableValue(self.variable)}

    @property
    def trackable_name(self) -> str:
        return str(self.variable.path)

    @property
    def mismatch_hint(self) -> str:
        """Read by restore when the checkpoint's shape differs: names the live variable."""
        hint = f"the program's variable there is {_describe(self.variable)}"
        known = _OPTIMIZER_STATE.get(id(self.variable))
        if known is not None and known() is self.variable:
            hint += f". {_POSITION_HINT}"
        return hint


#: id(variable) → weak reference to it, for the variables in some optimizer's `_variables`:
#: their restore is positional, so a shape mismatch there means a different var_list.
_OPTIMIZER_STATE: dict[int, weakref.ref[Any]] = {}


def _note_optimizer_state(optimizer: Any) -> None:
    for variable in getattr(optimizer, "_variables", ()):
        key = id(variable)
        known = _OPTIMIZER_STATE.get(key)
        if known is None or known() is not variable:
            _OPTIMIZER_STATE[key] = weakref.ref(variable, functools.partial(_forget, key))


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    if _OPTIMIZER_STATE.get(key) is ref:
        del _OPTIMIZER_STATE[key]


#: Container views, kept while something (a restore) holds them, so that the same live
#: container is the same object each time it is asked for (matching works by identity).
_CONTAINERS: weakref.WeakValueDictionary[tuple[int, tuple[str, ...], int], _KerasContainer] = (
    weakref.WeakValueDictionary()
)


def _container(owner: object, path: tuple[str, ...], items: Any, every_list: bool) -> object:
    key = (id(owner), path, id(items))
    found = _CONTAINERS.get(key)
    if found is None or found.items is not items:
        found = _KerasContainer(owner, path, items, every_list)
        _CONTAINERS[key] = found
    return found


class _KerasContainer(Trackable):
    """A list, dict or tuple attribute, tracked as TensorFlow's `ListWrapper`/`_DictWrapper`.

    Elements are children by index (lists, tuples) or key (dicts); only trackable
    elements and nested containers count. Deferred children wait for the owning layer's
    or optimizer's `build` (an optimizer's `_variables` list grows there).
    """

    def __init__(self, owner: object, path: tuple[str, ...], items: Any, every_list: bool) -> None:
        self.owner = owner
        self.path = path
        self.items = items
        self._every_list = every_list

    def _entries(self) -> Iterator[tuple[str, object]]:
        items = self.items
        if isinstance(items, dict):
            for key, value in items.items():
                if isinstance(key, str):
                    yield key, value
                elif _is_keras_trackable(value) or _is_wrapped_container(value):
                    raise NotTrackableError(
                        f"'{'.'.join(self.path)}' of {type(self.owner).__name__} has the "
                        f"non-string key {key!r} holding a trackable object; TensorFlow cannot "
                        "checkpoint such a dict either: use string keys"
                    )
            return
        fields = getattr(items, "_fields", None) if isinstance(items, tuple) else None
        if fields is not None:  # a namedtuple: by field name first, as TF's _TupleWrapper
            yield from zip(fields, items, strict=True)
        for index, value in enumerate(items):
            yield str(index), value

    def trackable_children(self) -> Mapping[str, object]:
        children: dict[str, object] = {}
        for name, value in self._entries():
            if _is_keras_trackable(value):
                children[name] = value
            elif _is_wrapped_container(value) or (
                self._every_list and isinstance(value, (list, dict))
            ):
                children[name] = _container(self.owner, (*self.path, name), value, self._every_list)
        return children

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        return _defer(self.owner, (*self.path, name), callback)


class _KerasObject(Trackable):
    """A Keras layer, model or optimizer: attributes TensorFlow tracks, in assignment order."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self._optimizer = isinstance(obj, keras.optimizers.Optimizer)

    def _attributes(self) -> Iterator[tuple[str, object]]:
        attributes = vars(self.obj)
        if _BACKEND == "torch" and "_modules" in attributes:
            # torch.nn.Module keeps sub-modules (sub-layers) apart from other attributes.
            yield from attributes["_modules"].items()
        for name, value in attributes.items():
            if name not in _TORCH_MODULE_ATTRIBUTES:
                yield name, value

    def trackable_children(self) -> Mapping[str, object]:
        if self._optimizer:
            _note_optimizer_state(self.obj)
        if _BACKEND == "tensorflow":
            return self._tf_children()
        children: dict[str, object] = {}
        if not self._optimizer and type(getattr(self.obj, "_losses", None)) is list:
            # Layer.__init__ ran with Keras's tracking off (a functional model): on the TF
            # backend its first attribute, TFLayer's `_tracked = []`, became a node.
            children["_tracked"] = _container(self.obj, ("_tracked",), [], False)
        for name, value in self._attributes():
            if name in children or name.startswith("_self_"):
                continue
            if not self._optimizer and name in _UNTRACKED_LAYER_ATTRIBUTES:
                continue
            if _is_keras_trackable(value):
                if value is not self.obj:
                    children[name] = value
            elif _is_wrapped_container(value) or (
                self._optimizer and isinstance(value, (list, dict)) and name != "_tracker"
            ):
                children[name] = _container(self.obj, (name,), value, self._optimizer)
        return children

    def _tf_children(self) -> dict[str, object]:
        # On the TF backend, TF's own dependency list is the truth (same order, same
        # names); its list/dict wrappers become container views.
        children: dict[str, object] = {}
        for name, child in self.obj._trackable_children(save_type="checkpoint").items():
            if _is_keras_trackable(child):
                children[name] = child
            else:
                children[name] = _TFContainer(self.obj, (name,), child)
        return children

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        return _defer(self.obj, (name,), callback)


class _TFContainer(Trackable):
    """A TF `ListWrapper`/`_DictWrapper` of a Keras object on the TensorFlow backend."""

    def __init__(self, owner: object, path: tuple[str, ...], wrapper: Any) -> None:
        self.owner = owner
        self.path = path
        self.wrapper = wrapper

    def trackable_children(self) -> Mapping[str, object]:
        children: dict[str, object] = {}
        for name, child in self.wrapper._trackable_children(save_type="checkpoint").items():
            if _is_keras_trackable(child):
                children[name] = child
            else:
                children[name] = _TFContainer(self.owner, (*self.path, name), child)
        return children

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        return _defer(self.owner, (*self.path, name), callback)


register(keras.Variable, _KerasVariable)
register(keras.layers.Layer, _KerasObject)
register(keras.optimizers.Optimizer, _KerasObject)
