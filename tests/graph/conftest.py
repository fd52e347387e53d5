"""A small NumPy model shared by the object-layer tests."""

from __future__ import annotations

import numpy as np

import trackpoint


class Dense(trackpoint.Module):
    def __init__(self, n_in: int, n_out: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.kernel = trackpoint.Variable(rng.standard_normal((n_in, n_out)).astype(np.float32))
        self.bias = trackpoint.Variable(np.zeros(n_out, np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x @ self.kernel.numpy() + self.bias.numpy()
        return out


class Net(trackpoint.Module):
    def __init__(self, seed: int = 0, first: str = "dense_1") -> None:
        setattr(self, first, Dense(4, 10, seed))
        self.dense_2 = Dense(10, 2, seed + 1)
