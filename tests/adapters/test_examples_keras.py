"""The Keras examples run as their docstrings say (Keras on JAX), each in its own process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip(
        "needs keras and jax (pip install 'trackpoint[keras,jax]')", allow_module_level=True
    )

pytestmark = pytest.mark.keras

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, cwd: Path, *args: str) -> str:
    # Keras picks its backend at import: a fresh process with KERAS_BACKEND set.
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


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
