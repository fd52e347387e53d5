"""The PyTorch examples run as their docstrings say, each in its own process."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from ._examples import run_example

pytestmark = pytest.mark.torch

_run = run_example


def _weight_sum(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("weight sum"))


def test_checkpoint_then_restore_in_a_new_process(tmp_path: Path) -> None:
    saved = _run("torch_checkpoint.py", tmp_path)
    assert "saved runs/a/ckpt-1" in saved
    assert (tmp_path / "runs" / "a" / "checkpoint").is_file()
    restored = _run("torch_restore.py", tmp_path)
    assert "restored runs/a/ckpt-1: Adam state at step 20" in restored
    assert _weight_sum(restored) == _weight_sum(saved)


def test_save_weights_then_load_weights(tmp_path: Path) -> None:
    output = _run("torch_weights.py", tmp_path)
    assert "'0/weight/.ATTRIBUTES/VARIABLE_VALUE'" in output
    assert "weights equal = True" in output
    assert (tmp_path / "weights" / "model.index").is_file()
