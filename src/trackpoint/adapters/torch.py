"""PyTorch adapter: modules, tensors, optimizers, schedulers, scalers and RNG state as trackables.

Imported by trackpoint the first time a torch object is checkpointed (never by
`import trackpoint`); it imports torch and registers factories with `trackpoint.register`.
Uses only trackpoint's public API.

What each torch object becomes in TensorFlow's object graph:

- `torch.Tensor` (parameters, buffers, optimizer state, bare tensors): a variable node with
  one value, `VARIABLE_VALUE`. Saving reads a zero-copy host view of a CPU contiguous
  tensor (bfloat16/float8 viewed as `ml_dtypes` without a copy; a GPU tensor is copied to
  the host). Restoring writes **in place**: the checkpoint's bytes are read straight into
  the memory of a CPU contiguous tensor, any other tensor takes `tensor.copy_()` under
  `torch.no_grad()`. The tensor object, its `requires_grad`, device and dtype stay as
  they are, so an optimizer holding the parameters keeps working. (Bytes read straight
  into a tensor's memory do not bump its autograd version counter: restore between
  steps, not while a backward pass still needs the old values.)
- `nn.Module`: children are its submodules (`_modules`, the order of `named_children()`,
  so `Sequential`/`ModuleList` give `"0"`, `"1"`, … and `ModuleDict` its keys), then its
  own parameters, then its persistent buffers, each group in the order the module
  registered them (torch keeps the three kinds in separate dicts, so the order *between*
  kinds is not known; this fixed order keeps keys stable). Non-persistent buffers are not
  saved. A parameter shared by two modules (tied weights) is one node, saved once, under
  the first path a breadth-first walk meets. A module with `get_extra_state()` gets a
  child `_extra_state` (JSON and tensors, as below).
- `torch.optim.Optimizer` (any, generically): per-parameter tensor state (`exp_avg`,
  `exp_avg_sq` and `step` for Adam, `momentum_buffer` for SGD, …) becomes *slot variables*
  of the parameter's node (`model/fc/weight/.OPTIMIZER_SLOT/optimizer/exp_avg/...`), so the
  state follows the parameter, not its position in a list. Restoring into a freshly built
  optimizer with empty state creates the state tensors (shape and dtype from the
  checkpoint; on the parameter's device, except `step`, which stays on the CPU unless the
  group is `capturable` or `fused` — as `Optimizer.load_state_dict` does). The
  param-group hyperparameters (`lr`, `betas`, …; not the parameter lists) are a JSON child
  `param_groups`; per-parameter state that is not a tensor (no built-in optimizer above
  has any) is a JSON child `state`, keyed by the parameter's position `"<group>/<index>"`.
  As in TF, state is saved only for parameters that are in the checkpoint too (pass the
  model beside the optimizer); saved state for a parameter the restoring optimizer does
  not update (fine-tuning a part) stays unused, and the status says so.
- LR schedulers, `torch.amp.GradScaler` and any other object with `state_dict()` and
  `load_state_dict()` (found by those methods once torch is imported; `StateDict(obj)`
  says it explicitly): tensors in the state dict become values of the node, everything
  else one JSON string (`py_state`, as TF's `PythonState`). Never pickle.
- `torch.Generator`: its state bytes, restored with `set_state`.
- `RNGState()` (opt-in): torch's CPU (and CUDA) generator, NumPy's global RNG and
  Python's `random`, so that a resumed run draws the same numbers.

Example:
    >>> import tempfile, torch, trackpoint
    >>> model = torch.nn.Linear(3, 2)
    >>> prefix = trackpoint.save_weights(model, tempfile.mkdtemp() + "/weights")
    >>> weight = model.weight
    >>> with torch.no_grad():
    ...     _ = model.weight.zero_()
    >>> _ = trackpoint.load_weights(model, prefix).assert_consumed()
    >>> model.weight is weight and bool(model.weight.abs().sum() > 0)
    True
"""

from __future__ import annotations

import json
import random
import weakref
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import torch
from torch import nn

from trackpoint import (
    InvalidValueError,
    NotTrackableError,
    PythonState,
    Trackable,
    register,
)
from trackpoint.graph import Value, register_finder

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from numpy.typing import NDArray

__all__ = ["RNGState", "StateDict"]

VARIABLE_VALUE = "VARIABLE_VALUE"

# ---------------------------------------------------------------------------------------
# dtypes and host views

#: torch dtypes NumPy has natively: `tensor.numpy()` is a zero-copy view.
_NATIVE: dict[torch.dtype, np.dtype[Any]] = {
    torch.bool: np.dtype(np.bool_),
    torch.uint8: np.dtype(np.uint8),
    torch.uint16: np.dtype(np.uint16),
    torch.uint32: np.dtype(np.uint32),
    torch.uint64: np.dtype(np.uint64),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}
#: torch dtypes NumPy lacks: viewed through an integer of the same width, then as ml_dtypes.
_VIEWED: dict[torch.dtype, tuple[np.dtype[Any], torch.dtype]] = {
    torch.bfloat16: (np.dtype(ml_dtypes.bfloat16), torch.int16),
    torch.float8_e4m3fn: (np.dtype(ml_dtypes.float8_e4m3fn), torch.uint8),
    torch.float8_e5m2: (np.dtype(ml_dtypes.float8_e5m2), torch.uint8),
    torch.float8_e4m3fnuz: (np.dtype(ml_dtypes.float8_e4m3fnuz), torch.uint8),
    torch.float8_e5m2fnuz: (np.dtype(ml_dtypes.float8_e5m2fnuz), torch.uint8),
}
_CARRIER_NUMPY = {torch.int16: np.dtype(np.int16), torch.uint8: np.dtype(np.uint8)}


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    if dtype in _NATIVE:
        return _NATIVE[dtype]
    if dtype in _VIEWED:
        return _VIEWED[dtype][0]
    raise NotTrackableError(
        f"a torch.Tensor of dtype {dtype} cannot be checkpointed: TensorFlow's format has no "
        "such dtype; convert it (e.g. tensor.float()) or keep it out of the checkpoint"
    )


def _numpy_view(tensor: torch.Tensor) -> NDArray[Any]:
    """A NumPy array sharing the memory of a CPU, contiguous, detached tensor."""
    viewed = _VIEWED.get(tensor.dtype)
    if viewed is None:
        return tensor.numpy()
    np_dtype, carrier = viewed
    return tensor.view(carrier).numpy().view(np_dtype)


def _host_array(tensor: torch.Tensor) -> NDArray[Any]:
    """A host array of `tensor`'s value: a view when it is on the CPU and contiguous."""
    host = tensor.detach()
    if host.device.type != "cpu":
        host = host.cpu()
    host = host.resolve_conj().resolve_neg()
    if not host.is_contiguous():
        host = host.contiguous()
    return _numpy_view(host)


def _to_torch(array: NDArray[Any], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` holding `array` (copied: restored arrays may be read-only)."""
    view = _torch_view(np.array(array, copy=True, order="C"), dtype)
    assert view is not None  # noqa: S101 - a fresh copy is writeable and contiguous
    return view


def _torch_view(array: NDArray[Any], dtype: torch.dtype) -> torch.Tensor | None:
    """A CPU tensor of `dtype` sharing `array`'s memory; None if it is not C-contiguous."""
    if not array.flags.c_contiguous:
        return None
    viewed = _VIEWED.get(dtype)
    if viewed is None:
        return torch.from_numpy(array)
    carrier = viewed[1]
    return torch.from_numpy(array.view(_CARRIER_NUMPY[carrier])).view(dtype)


def _check_tensor(tensor: torch.Tensor) -> None:
    if tensor.layout != torch.strided:
        raise NotTrackableError(
            f"a {tensor.layout} torch.Tensor cannot be checkpointed; convert it with "
            "tensor.to_dense() first"
        )
    if tensor.device.type == "meta":
        raise NotTrackableError(
            f"a torch.Tensor on the meta device (shape {list(tensor.shape)}) has no values; "
            "materialize the module first (module.to_empty(device='cpu'))"
        )
    if isinstance(tensor, (nn.parameter.UninitializedParameter, nn.parameter.UninitializedBuffer)):
        raise NotTrackableError(
            "a lazy module's parameter is not initialized yet; run the model once on an "
            "example input before saving or restoring it"
        )
    _numpy_dtype(tensor.dtype)


class _TensorValue(Value):
    """A live tensor's value, restored in place (identity, device, dtype, grad kept)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        _check_tensor(tensor)
        self.tensor = tensor
        self.shape = tuple(tensor.shape)
        self.dtype = _numpy_dtype(tensor.dtype)

    def read(self) -> NDArray[Any]:
        return _host_array(self.tensor)

    def restore_buffer(self) -> NDArray[Any] | None:
        tensor = self.tensor
        if (
            tensor.device.type == "cpu"
            and tensor.is_contiguous()
            and not tensor.is_conj()
            and not tensor.is_neg()
        ):
            return _numpy_view(tensor.detach())
        return None

    def staging_buffer(self) -> NDArray[Any]:
        if self.tensor.device.type == "cuda":
            # Read into pinned host memory so the copy to the GPU is one DMA transfer;
            # torch's caching host allocator hands the block out again on the next restore.
            pinned = torch.empty(tuple(self.tensor.shape), dtype=self.tensor.dtype, pin_memory=True)
            return _numpy_view(pinned)
        return super().staging_buffer()

    def assign(self, value: NDArray[Any]) -> None:
        # A writeable buffer (the restore's staging buffer) is viewed, not copied: copy_
        # below is the one copy into the live tensor.
        source = _torch_view(value, self.tensor.dtype) if value.flags.writeable else None
        if source is None:
            source = _to_torch(value, self.tensor.dtype)
        with torch.no_grad():
            self.tensor.copy_(source)


class _TensorTrackable(Trackable):
    """A tensor as a variable node (`VARIABLE_VALUE`)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._value = _TensorValue(tensor)

    def trackable_values(self) -> Mapping[str, Value]:
        return {VARIABLE_VALUE: self._value}


# ---------------------------------------------------------------------------------------
# Python structures with tensors in them: JSON plus tensor values


def _join(path: str, key: object) -> str:
    return f"{path}/{key}" if path else str(key)


def _encode(obj: object, path: str, tensors: dict[str, torch.Tensor], owner: str) -> Any:
    """`obj` as JSON; tensors are replaced by `{"__tensor__": name}` and collected."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        name = path or "value"
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, list):
        return [_encode(v, _join(path, i), tensors, owner) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {
            "__tuple__": [_encode(v, _join(path, i), tensors, owner) for i, v in enumerate(obj)]
        }
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, _join(path, k), tensors, owner) for k, v in obj.items()}
        # Non-string keys (ints, tuples) survive JSON as a list of pairs.
        return {
            "__items__": [
                [
                    _encode(k, _join(path, f"key{i}"), tensors, owner),
                    _encode(v, _join(path, k), tensors, owner),
                ]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    where = f"'{path}' of " if path else ""
    raise NotTrackableError(
        f"the state {where}{owner} holds a {type(obj).__module__}.{type(obj).__qualname__}, "
        "which trackpoint does not save (only tensors and JSON values: numbers, strings, "
        "lists, tuples, dicts; never pickle); keep it out of the state"
    )


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            name = obj["__tensor__"]
            if name not in tensors:
                raise InvalidValueError(
                    f"the checkpoint's state names a tensor {name!r} that the program's object "
                    "does not have; build the object as it was when saved"
                )
            return tensors[name]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


class _LeafValue(Value):
    """A tensor inside a Python structure: saved as is, restored into `pending` first."""

    def __init__(self, tensor: torch.Tensor, name: str, pending: dict[str, NDArray[Any]]) -> None:
        _check_tensor(tensor)
        self.tensor = tensor
        self.shape = tuple(tensor.shape)
        self.dtype = _numpy_dtype(tensor.dtype)
        self._name = name
        self._pending = pending

    def read(self) -> NDArray[Any]:
        return _host_array(self.tensor)

    def assign(self, value: NDArray[Any]) -> None:
        self._pending[self._name] = np.array(value, copy=True)


class _TreeState(PythonState):
    """A Python structure (JSON values and tensors) read by `get` and restored by `put`.

    Saved as one `py_state` JSON string plus one value per tensor (named by its path in
    the structure, `0/lr`). The JSON is the node's last value, so on restore it arrives
    after the tensors it names; `put` then receives the whole structure at once.
    """

    def __init__(self, get: Callable[[], object], put: Callable[[Any], None], owner: str) -> None:
        self._get = get
        self._put = put
        self._owner = owner
        self._encoded: Any = None
        self._live: dict[str, torch.Tensor] = {}
        self._pending: dict[str, NDArray[Any]] = {}

    def _snapshot(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        self._encoded = _encode(self._get(), "", tensors, self._owner)
        self._live = tensors
        self._pending = {}

    def trackable_values(self) -> Mapping[str, Value]:
        self._snapshot()
        values: dict[str, Value] = {
            name: _LeafValue(tensor, name, self._pending) for name, tensor in self._live.items()
        }
        values.update(super().trackable_values())  # py_state last: see the class docstring
        return values

    def serialize(self) -> str:
        if self._encoded is None:
            self._snapshot()
        return json.dumps(self._encoded, sort_keys=True)

    def deserialize(self, text: str) -> None:
        # Values exist only for the live object's tensors, so every pending name is live.
        restored = {
            name: _to_torch(array, self._live[name].dtype) for name, array in self._pending.items()
        }
        self._put(_decode(json.loads(text), {**self._live, **restored}))
        self._pending.clear()


class StateDict(_TreeState):
    """Checkpoint any object with `state_dict()` and `load_state_dict()` (no pickle).

    Tensors in the state dict become values of the node; everything else (numbers,
    strings, lists, tuples, dicts) is saved as JSON. LR schedulers and `GradScaler` are
    registered with it already; register your own types the same way.

    Args:
        obj: The object.

    Example:
        >>> import torch, trackpoint
        >>> from trackpoint.adapters.torch import StateDict
        >>> class Counter:
        ...     def __init__(self):
        ...         self.n = 0
        ...     def state_dict(self):
        ...         return {"n": self.n}
        ...     def load_state_dict(self, state):
        ...         self.n = state["n"]
        >>> trackpoint.register(Counter, StateDict)
        >>> StateDict(Counter()).serialize()
        '{"n": 0}'
    """

    def __init__(self, obj: Any) -> None:
        def put(state: Any) -> None:
            # An empty saved state has nothing to load (GradScaler refuses an empty dict).
            if state:
                obj.load_state_dict(state)

        super().__init__(obj.state_dict, put, f"{type(obj).__qualname__}")


# ---------------------------------------------------------------------------------------
# Modules


def _has_extra_state(module: nn.Module) -> bool:
    return type(module).get_extra_state is not nn.Module.get_extra_state


#: Stable child objects per module/optimizer: restore and the status look children up by
#: identity, so the same live object must come back each time it is asked for.
_EXTRA_STATE: weakref.WeakKeyDictionary[nn.Module, _TreeState] = weakref.WeakKeyDictionary()


def _extra_state(module: nn.Module) -> _TreeState:
    state = _EXTRA_STATE.get(module)
    if state is None:
        ref = weakref.ref(module)

        def get() -> object:
            live = ref()
            return None if live is None else live.get_extra_state()

        def put(value: Any) -> None:
            live = ref()
            if live is not None:
                live.set_extra_state(value)

        state = _TreeState(get, put, f"{type(module).__qualname__}.get_extra_state()")
        _EXTRA_STATE[module] = state
    return state


class _ModuleTrackable(Trackable):
    """An `nn.Module`: submodules, then parameters, then persistent buffers (module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module

    def trackable_children(self) -> Mapping[str, object]:
        module = self._module
        children: dict[str, object] = {
            name: child for name, child in module._modules.items() if child is not None
        }
        children.update(
            (name, param) for name, param in module._parameters.items() if param is not None
        )
        children.update(
            (name, buffer)
            for name, buffer in module._buffers.items()
            if buffer is not None and name not in module._non_persistent_buffers_set
        )
        if _has_extra_state(module):
            children["_extra_state"] = _extra_state(module)
        return children

    def lookup_child(self, name: str) -> object | None:
        module = self._module
        if name in module._modules:
            return module._modules[name]
        if name in module._parameters:
            return module._parameters[name]
        if name in module._buffers and name not in module._non_persistent_buffers_set:
            return module._buffers[name]
        if name == "_extra_state" and _has_extra_state(module):
            return _extra_state(module)
        return None


# ---------------------------------------------------------------------------------------
# Optimizers


class _OptimizerParts:
    """The JSON children of one optimizer, kept so that their identity is stable."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        ref = weakref.ref(optimizer)
        name = type(optimizer).__qualname__

        def live() -> torch.optim.Optimizer:
            opt = ref()
            if opt is None:  # pragma: no cover - the optimizer outlives its checkpoint use
                raise InvalidValueError("the optimizer was garbage-collected")
            return opt

        self.param_groups = _TreeState(
            lambda: _hyperparameters(live()),
            lambda saved: _put_hyperparameters(live(), saved),
            f"{name}.param_groups",
        )
        self.state = _TreeState(
            lambda: _plain_param_state(live()),
            lambda saved: _put_plain_param_state(live(), saved),
            f"{name}.state",
        )


_OPTIMIZER_PARTS: weakref.WeakKeyDictionary[torch.optim.Optimizer, _OptimizerParts] = (
    weakref.WeakKeyDictionary()
)


def _parts(optimizer: torch.optim.Optimizer) -> _OptimizerParts:
    parts = _OPTIMIZER_PARTS.get(optimizer)
    if parts is None:
        parts = _OptimizerParts(optimizer)
        _OPTIMIZER_PARTS[optimizer] = parts
    return parts


def _hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _put_hyperparameters(optimizer: torch.optim.Optimizer, saved: list[dict[str, Any]]) -> None:
    groups = optimizer.param_groups
    if len(saved) != len(groups):
        raise InvalidValueError(
            f"the checkpoint's {type(optimizer).__name__} has {len(saved)} param group(s) but "
            f"the program's has {len(groups)}; build the optimizer with the same groups"
        )
    for group, values in zip(groups, saved, strict=True):
        for key, value in values.items():
            current = group.get(key)
            if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
                with torch.no_grad():
                    current.copy_(value)  # a tensor lr stays the same tensor
            else:
                group[key] = value


def _positions(optimizer: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    return [
        (f"{g}/{i}", param)
        for g, group in enumerate(optimizer.param_groups)
        for i, param in enumerate(group["params"])
    ]


def _plain_param_state(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for position, param in _positions(optimizer):
        state = optimizer.state.get(param)
        plain = {k: v for k, v in (state or {}).items() if not isinstance(v, torch.Tensor)}
        if plain:
            out[position] = plain
    return out


def _put_plain_param_state(
    optimizer: torch.optim.Optimizer, saved: dict[str, dict[str, Any]]
) -> None:
    params = dict(_positions(optimizer))
    for position, values in saved.items():
        param = params.get(position)
        if param is not None:
            optimizer.state[param].update(values)


class _OptimizerTrackable(Trackable):
    """A torch optimizer: tensor state as slots of each parameter, the rest as JSON."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self._optimizer = optimizer

    def trackable_children(self) -> Mapping[str, object]:
        parts = _parts(self._optimizer)
        children: dict[str, object] = {"param_groups": parts.param_groups}
        if _plain_param_state(self._optimizer):
            children["state"] = parts.state
        return children

    def lookup_child(self, name: str) -> object | None:
        parts = _parts(self._optimizer)
        return {"param_groups": parts.param_groups, "state": parts.state}.get(name)

    def slot_names(self) -> Sequence[str]:
        names: dict[str, None] = {}
        for state in self._optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    names[key] = None
        return list(names)

    def get_slot(self, variable: object, slot_name: str) -> object | None:
        if not isinstance(variable, torch.Tensor):
            return None
        state = self._optimizer.state.get(variable)  # .get: the defaultdict must not grow
        value = None if state is None else state.get(slot_name)
        return value if isinstance(value, torch.Tensor) else None

    def _group_of(self, param: torch.Tensor) -> dict[str, Any] | None:
        for group in self._optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return None

    def create_slot(self, variable: object, slot_name: str, value: NDArray[Any]) -> object | None:
        group = self._group_of(variable) if isinstance(variable, torch.Tensor) else None
        if group is None or not isinstance(variable, torch.Tensor):
            return None  # not a parameter of this optimizer: the value stays unused
        device = variable.device
        # As Optimizer.load_state_dict: `step` stays on the CPU unless the kernels want it
        # on the parameter's device (capturable / fused).
        if slot_name == "step" and not (group.get("capturable") or group.get("fused")):
            device = torch.device("cpu")
        dtype = _torch_dtype(value.dtype)
        slot = _to_torch(value, dtype).to(device=device)
        self._optimizer.state[variable][slot_name] = slot
        return slot


def _torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    for torch_dtype, np_dtype in _NATIVE.items():
        if np_dtype == dtype:
            return torch_dtype
    for torch_dtype, (np_dtype, _) in _VIEWED.items():
        if np_dtype == dtype:
            return torch_dtype
    raise NotTrackableError(f"the checkpoint's {dtype} has no torch dtype")


# ---------------------------------------------------------------------------------------
# Generators and RNG state


class _GeneratorValue(Value):
    def __init__(self, generator: torch.Generator) -> None:
        self._generator = generator
        state = generator.get_state()
        self.shape = tuple(state.shape)
        self.dtype = np.dtype(np.uint8)

    def read(self) -> NDArray[Any]:
        return self._generator.get_state().numpy()

    def assign(self, value: NDArray[Any]) -> None:
        self._generator.set_state(_to_torch(value, torch.uint8))


class _GeneratorTrackable(Trackable):
    """A `torch.Generator` (a DataLoader's, say): its state bytes as the value `state`."""

    def __init__(self, generator: torch.Generator) -> None:
        self._value = _GeneratorValue(generator)

    def trackable_values(self) -> Mapping[str, Value]:
        return {"state": self._value}


class _TorchRNGValue(Value):
    def __init__(self) -> None:
        self.shape = tuple(torch.get_rng_state().shape)
        self.dtype = np.dtype(np.uint8)

    def read(self) -> NDArray[Any]:
        return torch.get_rng_state().numpy()

    def assign(self, value: NDArray[Any]) -> None:
        torch.set_rng_state(_to_torch(value, torch.uint8))


class RNGState(PythonState):
    """The global random number generators, so that a resumed run draws the same numbers.

    Opt-in: add it to the checkpoint (`Checkpoint(model=..., rng=RNGState())`). Saves
    torch's CPU generator (the value `torch`) and, as JSON in `py_state`, the CUDA
    generators (when CUDA is initialized), NumPy's global `np.random` state and Python's
    `random` state; restoring sets all of them.

    Args:
        torch: Include torch's generators.
        numpy: Include NumPy's global RNG (`np.random.seed`'s, not `default_rng()`s).
        python: Include Python's `random` module.

    Example:
        >>> import tempfile, torch, trackpoint
        >>> from trackpoint.adapters.torch import RNGState
        >>> ckpt = trackpoint.Checkpoint(rng=RNGState())
        >>> path = ckpt.save(tempfile.mkdtemp() + "/ckpt")
        >>> first = torch.rand(3)
        >>> _ = ckpt.restore(path).assert_consumed()
        >>> bool(torch.equal(torch.rand(3), first))
        True
    """

    def __init__(self, *, torch: bool = True, numpy: bool = True, python: bool = True) -> None:
        self._torch = torch
        self._numpy = numpy
        self._python = python

    def trackable_values(self) -> Mapping[str, Value]:
        """`torch` (the CPU generator's state bytes) and `py_state` (the rest, JSON)."""
        values: dict[str, Value] = {"torch": _TorchRNGValue()} if self._torch else {}
        values.update(super().trackable_values())
        return values

    def serialize(self) -> str:
        """CUDA, NumPy and Python generator states as JSON (exact: integers and reprs)."""
        state: dict[str, Any] = {}
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        if self._torch and cuda:
            state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        if self._numpy:
            algorithm, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
            state["numpy"] = {
                "algorithm": algorithm,
                "keys": np.asarray(keys).tolist(),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            }
        if self._python:
            version, internal, gauss_next = random.getstate()
            state["python"] = {
                "version": version,
                "state": list(internal),
                "gauss_next": gauss_next,
            }
        return json.dumps(state, sort_keys=True)

    def deserialize(self, text: str) -> None:
        """Set the generators from `serialize`'s JSON."""
        state = json.loads(text)
        if self._torch and "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
            )
        if self._numpy and "numpy" in state:
            saved = state["numpy"]
            np.random.set_state(
                (
                    saved["algorithm"],
                    np.array(saved["keys"], dtype=np.uint32),
                    saved["pos"],
                    saved["has_gauss"],
                    saved["cached_gaussian"],
                )
            )
        if self._python and "python" in state:
            saved = state["python"]
            random.setstate((saved["version"], tuple(saved["state"]), saved["gauss_next"]))


# ---------------------------------------------------------------------------------------

register(torch.Tensor, _TensorTrackable)
register(nn.Module, _ModuleTrackable)
register(torch.optim.Optimizer, _OptimizerTrackable)
register(torch.optim.lr_scheduler.LRScheduler, StateDict)
register(torch.optim.lr_scheduler.ReduceLROnPlateau, StateDict)
register(torch.amp.GradScaler, StateDict)
register(torch.Generator, _GeneratorTrackable)


def _find_stateful(obj: object) -> Callable[[Any], Trackable] | None:
    """Any other object with `state_dict()` and `load_state_dict()` is saved by `StateDict`."""
    stateful = callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )
    return StateDict if stateful and not isinstance(obj, type) else None


register_finder(_find_stateful)
