"""The Keras examples run as their docstrings say (Keras on JAX), each in its own process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip(
        "needs keras and jax (pip install 'trackpoint[keras,jax]')", allow_module_level=True
    )

from ._examples import run_example

pytestmark = pytest.mark.keras


def _run(name: str, cwd: Path, *args: str) -> str:
    # Keras picks its backend at import: a fresh process with KERAS_BACKEND set.
    return run_example(name, cwd, *args, env={"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"})


def _kernel_sum(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("kernel sum"))


def test_checkpoint_then_restore_in_a_new_process(tmp_path: Path) -> None:
    saved = _run("keras_checkpoint.py", tmp_path)
    assert "saved runs/a/ckpt-1" in saved
    assert (tmp_path / "runs" / "a" / "checkpoint").is_file()
    restored = _run("keras_restore.py", tmp_path)
    assert "restored runs/a/ckpt-1: Adam at iteration 5" in restored
    assert _kernel_sum(restored) == _kernel_sum(saved)


def test_save_weights_then_load_weights(tmp_path: Path) -> None:
    output = _run("keras_weights.py", tmp_path)
    assert "'dense_1/_kernel/.ATTRIBUTES/VARIABLE_VALUE'" in output
    assert "weights equal = True" in output
    assert (tmp_path / "weights" / "model.index").is_file()
