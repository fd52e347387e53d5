"""The JAX / Flax examples run as users run them: a script per process, in a fresh folder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("flax.nnx")

import trackpoint

from ._examples import run_example

pytestmark = pytest.mark.jax


def _run(cwd: Path, script: str, *args: str) -> str:
    return run_example(script, cwd, *args)


def test_checkpoint_then_restore_in_a_new_process(tmp_path):
    saved = _run(tmp_path, "jax_checkpoint.py").splitlines()
    assert saved[0] == "saved runs/a/ckpt-5"
    assert sorted(p.name for p in (tmp_path / "runs" / "a").glob("*.index")) == [
        "ckpt-3.index",
        "ckpt-4.index",
        "ckpt-5.index",
    ]
    restored = _run(tmp_path, "jax_restore.py").splitlines()
    assert restored[0] == "restored step 5"
    assert restored[1] == saved[1]  # the same loss: the same parameters
    assert trackpoint.latest_checkpoint(tmp_path / "runs" / "a") == str(
        tmp_path / "runs" / "a" / "ckpt-5"
    )


def test_flax_nnx_save_weights_and_load_weights(tmp_path):
    out = _run(tmp_path, "flax_nnx_weights.py", "weights/mlp")
    assert "loaded: same predictions; same Param objects: True" in out
    keys = dict(trackpoint.list_variables(tmp_path / "weights" / "mlp"))
    assert "dense_1/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "norm/mean/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_flax_linen_train_state_resumes_in_a_new_process_bit_for_bit(tmp_path):
    first = _run(tmp_path, "flax_linen_trainstate.py", "split", "3")
    assert "resumed" not in first
    assert first.startswith("step 3 ")
    resumed = _run(tmp_path, "flax_linen_trainstate.py", "split", "6").splitlines()
    assert resumed[0] == "resumed from split/ckpt-3 at step 3"
    whole = _run(tmp_path, "flax_linen_trainstate.py", "whole", "6").splitlines()
    assert resumed[1] == whole[0]  # the same loss at step 6 as one uninterrupted run
    split = trackpoint.load_checkpoint(tmp_path / "split")
    assert int(split.get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE")) == 6
