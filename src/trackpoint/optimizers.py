"""NumPy optimizers with TF1-style slot variables, for NumPy models, examples and tests.

`Adam` keeps the slots `m` and `v` per variable and the children `beta1_power` and
`beta2_power`, exactly as `tf.compat.v1.train.AdamOptimizer` does, so checkpoints move
between the two; `SGD` keeps the slot `momentum` like `tf.compat.v1.train.MomentumOptimizer`.
Restoring into an optimizer that has not stepped yet creates its slots from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NotTrackableError
from .graph import Trackable, Variable

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["SGD", "Adam"]

GradsAndVars = Iterable[tuple["NDArray[Any]", "Variable | NDArray[Any]"]]


def _array(variable: object) -> NDArray[Any]:
    if isinstance(variable, Variable):
        return variable.numpy()
    if isinstance(variable, np.ndarray):
        return variable
    raise NotTrackableError(
        f"NumPy optimizers update trackpoint.Variable or numpy arrays, not {type(variable)}"
    )


class _SlotOptimizer(Trackable):
    """Slots stored per variable object (by identity), TF1-style."""

    _SLOTS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots: dict[int, tuple[object, dict[str, Variable]]] = {}

    def slot_names(self) -> Sequence[str]:
        return self._SLOTS

    def get_slot(self, variable: object, slot_name: str) -> object | None:
        entry = self._slots.get(id(variable))
        return None if entry is None else entry[1].get(slot_name)

    def create_slot(self, variable: object, slot_name: str, value: NDArray[Any]) -> object:
        if slot_name not in self._SLOTS:
            return super().create_slot(variable, slot_name, value)
        array = _array(variable)
        slot = Variable(np.asarray(value, dtype=array.dtype).reshape(array.shape))
        self._slots.setdefault(id(variable), (variable, {}))[1][slot_name] = slot
        return slot

    def _slot(self, variable: object, slot_name: str) -> NDArray[Any]:
        slot = self.get_slot(variable, slot_name)
        if slot is None:
            slot = self.create_slot(variable, slot_name, np.zeros_like(_array(variable)))
        assert isinstance(slot, Variable)  # noqa: S101 - only Variables are created
        return slot.numpy()


class SGD(_SlotOptimizer):
    """Stochastic gradient descent with optional momentum (slot `momentum`).

    Example:
        >>> w = Variable(np.ones(2, np.float32))
        >>> SGD(0.5).apply_gradients([(np.ones(2, np.float32), w)])
        >>> w.numpy()
        array([0.5, 0.5], dtype=float32)
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.momentum = momentum
        self._SLOTS = ("momentum",) if momentum else ()

    def apply_gradients(self, grads_and_vars: GradsAndVars) -> None:
        """Update each variable in place from its gradient."""
        for grad, variable in grads_and_vars:
            array = _array(variable)
            if self.momentum:
                accum = self._slot(variable, "momentum")
                accum *= self.momentum
                accum += grad
                array -= (self.learning_rate * accum).astype(array.dtype)
            else:
                array -= (self.learning_rate * np.asarray(grad)).astype(array.dtype)


class Adam(_SlotOptimizer):
    """Adam as `tf.compat.v1.train.AdamOptimizer` computes and checkpoints it.

    Slots `m` and `v` per variable; children `beta1_power` and `beta2_power`.
    """

    _SLOTS = ("m", "v")

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.beta1_power = Variable(np.float32(beta1), name="beta1_power")
        self.beta2_power = Variable(np.float32(beta2), name="beta2_power")

    def trackable_children(self) -> Mapping[str, object]:
        """`beta1_power` and `beta2_power`, as TF1's AdamOptimizer tracks them."""
        return {"beta1_power": self.beta1_power, "beta2_power": self.beta2_power}

    def apply_gradients(self, grads_and_vars: GradsAndVars) -> None:
        """One Adam step on every (gradient, variable) pair, in place.

        Computed in each variable's dtype with TF's kernel formulas (`ApplyAdam`), so
        float32 results are bit-identical to `tf.compat.v1.train.AdamOptimizer`'s.
        """
        b1p, b2p = self.beta1_power.numpy(), self.beta2_power.numpy()
        for grad, variable in grads_and_vars:
            array = _array(variable)
            t = array.dtype.type
            one, beta1, beta2 = t(1), t(self.beta1), t(self.beta2)
            alpha = t(self.learning_rate) * np.sqrt(one - t(b2p)) / (one - t(b1p))
            g = np.asarray(grad, dtype=array.dtype)
            m = self._slot(variable, "m")
            v = self._slot(variable, "v")
            m += (g - m) * (one - beta1)
            v += (g * g - v) * (one - beta2)
            array -= (m * alpha) / (np.sqrt(v) + t(self.epsilon))
        self.beta1_power.assign(b1p * np.float32(self.beta1))
        self.beta2_power.assign(b2p * np.float32(self.beta2))
