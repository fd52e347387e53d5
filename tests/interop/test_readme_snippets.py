"""README's JAX lines run as shown, and TensorFlow restores their checkpoint with the
README's TF-side lines (issue 12: the exact TensorFlow lines, checked against TF)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

import trackpoint

README = Path(__file__).resolve().parents[2] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(heading) + r"\n.*?```python\n(.*?)```", text, re.S)
    assert match is not None, f"README has no python block under {heading!r}"
    return match.group(1)


def _run(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README


@pytest.mark.jax
def test_readme_jax_lines_save_and_restore_the_trees(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jax_lines = _block_after("### JAX and Flax")
    _run(jax_lines, {})  # first run: nothing to restore, trains one step, saves ckpt-1
    second: dict[str, Any] = {}
    _run(jax_lines, second)  # a new run restores ckpt-1 and saves ckpt-2
    assert int(second["opt_state"][0].count) == 2
    assert trackpoint.latest_checkpoint("runs/jax") == "runs/jax/ckpt-2"


@pytest.mark.tf
@pytest.mark.jax
def test_tensorflow_restores_the_readme_checkpoint_with_the_readme_lines(
    tmp_path, monkeypatch, tf, capsys
):
    monkeypatch.chdir(tmp_path)
    saved: dict[str, Any] = {}
    _run(_block_after("### JAX and Flax"), saved)
    capsys.readouterr()
    restored: dict[str, Any] = {"tf": tf}
    _run(_block_after("### Back in TensorFlow"), restored)
    kernel = np.asarray(saved["ckpt"].params["dense"]["kernel"])
    np.testing.assert_array_equal(restored["tf_params"]["dense"]["kernel"].numpy(), kernel)
    np.testing.assert_array_equal(
        restored["tf_params"]["dense"]["bias"].numpy(),
        np.asarray(saved["ckpt"].params["dense"]["bias"]),
    )
    assert not np.array_equal(kernel, np.ones((4, 2)))  # the trained values, not the initial
    assert "[[" in capsys.readouterr().out
