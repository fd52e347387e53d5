"""Python numbers held by the dicts, lists and tuples of a JAX tree are state (issue 12, point 1).

`Checkpoint(state={"params": params, "opt_state": opt_state, "step": 0})`: `jax.tree_util`
flattens `step` as a leaf and a jitted step returns it as an array, so it is saved and
restored with its Python type, and a jitted and an unjitted run restore into each other.
Containers that hold no JAX array (NumPy, PyTorch programs) keep TensorFlow's rule: their
numbers are part of the program, not saved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

for _framework in ("jax", "optax"):
    pytest.importorskip(_framework)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import trackpoint  # noqa: E402

pytestmark = pytest.mark.jax

SRC = Path(__file__).resolve().parents[2] / "src"
TX = optax.adam(1e-2)


def _fresh(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.standard_normal((4, 2)).astype(np.float32))}
    return {"params": params, "opt_state": TX.init(params), "step": 0}


def _step(state: dict[str, Any], x: jax.Array) -> dict[str, Any]:
    def loss(params: Any) -> jax.Array:
        return jnp.mean((x @ params["w"]) ** 2)

    updates, opt_state = TX.update(jax.grad(loss)(state["params"]), state["opt_state"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}


_jitted_step = jax.jit(_step)
X = jnp.ones((3, 4), jnp.float32)


def _train(steps: int, *, jit: bool) -> dict[str, Any]:
    state = _fresh(0)
    for _ in range(steps):
        state = (_jitted_step if jit else _step)(state, X)
    return state


def _leaves_equal(actual: Any, expected: Any) -> None:
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_step_held_by_a_jax_dict_state_is_saved_and_restored_as_a_python_int(tmp_path):
    trained = _train(3, jit=False)
    assert type(trained["step"]) is int
    path = trackpoint.Checkpoint(state=trained).save(tmp_path / "ckpt")
    saved = trackpoint.load_checkpoint(path).get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE")
    assert (saved.dtype.name, saved.item()) == ("int64", 3)

    state = _fresh(1)
    state = trackpoint.Checkpoint(state=state).restore_trees(path, "state")
    assert type(state["step"]) is int
    assert state["step"] == 3
    _leaves_equal(state, trained)


@pytest.mark.parametrize(("saved_jit", "target_jit"), [(True, False), (False, True)])
def test_jitted_and_unjitted_dict_states_restore_into_each_other(tmp_path, saved_jit, target_jit):
    trained = _train(3, jit=saved_jit)
    path = trackpoint.Checkpoint(state=trained).save(tmp_path / "ckpt")
    target = _train(1, jit=target_jit)
    step_type = type(target["step"])
    target = trackpoint.Checkpoint(state=target).restore_trees(path, "state")
    assert type(target["step"]) is step_type  # the program's type is kept
    assert int(target["step"]) == 3
    _leaves_equal(target["params"], trained["params"])
    # Training goes on from the restored state exactly as from the saved one.
    _leaves_equal(_jitted_step(target, X), _jitted_step(trained, X))


def test_numbers_in_lists_and_tuples_of_a_jax_tree_round_trip_with_their_types(tmp_path):
    def state(scale: float, count: int, flag: bool, half: Any) -> dict[str, Any]:
        w = jnp.full(2, scale, jnp.float32)
        return {"pair": (w, count), "log": [w + 1, scale, flag], "half": half}

    saved = state(2.5, 7, True, np.float16(1.5))
    path = trackpoint.Checkpoint(state=saved).save(tmp_path / "ckpt")
    restored = state(0.0, 0, False, np.float16(0.0))
    restored = trackpoint.Checkpoint(state=restored).restore_trees(path, "state")
    assert (type(restored["pair"][1]), restored["pair"][1]) == (int, 7)
    assert restored["log"][1:] == [2.5, True]
    assert [type(n) for n in restored["log"][1:]] == [float, bool]
    assert (type(restored["half"]), restored["half"]) == (np.float16, np.float16(1.5))
    _leaves_equal(restored, saved)


def test_numbers_of_containers_without_jax_arrays_follow_tensorflows_rule(tmp_path):
    # The NumPy dict beside a JAX one is a NumPy program's: TF ignores its numbers, so do we.
    ckpt = trackpoint.Checkpoint(
        jax_state={"w": jnp.ones(2), "step": 4}, np_state={"w": np.ones(2), "step": 4}
    )
    path = ckpt.write(tmp_path / "ckpt")
    keys = [key for key, _ in trackpoint.list_variables(path)]
    assert "jax_state/step/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not [key for key in keys if key.startswith("np_state/step")]
    np_state = {"w": np.zeros(2), "step": 0}
    trackpoint.Checkpoint(jax_state={"w": jnp.zeros(2), "step": 0}, np_state=np_state).read(
        path
    ).assert_consumed()
    assert np_state["step"] == 0  # the program's own
    np.testing.assert_array_equal(np_state["w"], np.ones(2))


def test_a_new_process_saves_the_number_of_a_dict_met_before_any_jax_array(tmp_path):
    # The dict is walked before the arrays in it load the JAX adapter.
    code = (
        "import sys, jax.numpy as jnp, trackpoint\n"
        "assert trackpoint.__file__.startswith(sys.argv[2]), trackpoint.__file__\n"
        "ckpt = trackpoint.Checkpoint(state={'step': 5, 'w': jnp.ones(2)})\n"
        "print(*[k for k, _ in trackpoint.list_variables(ckpt.write(sys.argv[1]))])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ckpt"), str(SRC)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert "state/step/.ATTRIBUTES/VARIABLE_VALUE" in result.stdout.split()


def test_a_number_changed_in_place_after_a_restore_is_saved_as_it_is_now(tmp_path):
    ckpt = trackpoint.Checkpoint(state={"w": jnp.ones(2), "step": 3})
    path = ckpt.save(tmp_path / "ckpt")
    state: dict[str, Any] = {"w": jnp.zeros(2), "step": 0}
    again = trackpoint.Checkpoint(state=state)
    status = again.restore(path)
    status.assert_consumed()
    state["step"] += 1  # the training loop goes on, the status still alive
    saved = again.save(tmp_path / "ckpt")
    reader = trackpoint.load_checkpoint(saved)
    assert reader.get_tensor("state/step/.ATTRIBUTES/VARIABLE_VALUE").item() == 4
