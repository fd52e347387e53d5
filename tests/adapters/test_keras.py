"""Keras 3 on the JAX and PyTorch backends against TensorFlow+Keras, both ways.

Keras picks its backend at import and this process may already hold TensorFlow, so every
Keras check runs in a fresh process (`keras_helper.py`, one task per process, many checks
per task) with `KERAS_BACKEND` set; the tests assert on the JSON it prints:

1. `tf_write` (TF backend): the seed fixture restored by TensorFlow itself, and four models
   (Dense MLP + Adam, Conv2D + BatchNormalization + SGD(momentum), Embedding + LSTM +
   RMSprop, a functional model + Adam) trained two steps and written by
   `tf.train.Checkpoint`.
2. `restore` on JAX and on PyTorch: trackpoint restores all of them, `assert_consumed()`.
   On JAX the models then train two more steps and trackpoint writes them;
3. `tf_restore` (TF backend): TensorFlow restores those, `assert_consumed()`.
4. `resume` (JAX): resume equivalence, deferred restoration and the error cases.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.keras

HELPER = Path(__file__).with_name("keras_helper.py")
KINDS = ("mlp", "conv", "lstm", "functional")
BACKENDS = ("jax", "torch")


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install 'trackpoint[test]')")


def run_helper(task: str, backend: str, work: Path, fixture: str = "") -> dict[str, Any]:
    """Run one helper task with Keras on `backend`; its JSON result."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(HELPER), task, str(work), fixture],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"keras_helper {task} on {backend} failed:\n{proc.stderr[-4000:]}")
    output = json.loads(proc.stdout.strip().splitlines()[-1])
    assert output["backend"] == backend
    result: dict[str, Any] = output["result"]
    return result


@pytest.fixture(scope="module")
def seed_prefix(tf_fixtures: Path) -> str:
    return str(tf_fixtures / "keras_adam" / "ckpt-1")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keras")


@pytest.fixture(scope="module")
def tf_written(tf: Any, work: Path, seed_prefix: str) -> dict[str, Any]:
    del tf  # only to skip without TensorFlow
    _require("keras")
    return run_helper("tf_write", "tensorflow", work, seed_prefix)


@pytest.fixture(scope="module")
def restored(tf_written: dict[str, Any], work: Path, seed_prefix: str) -> dict[str, Any]:
    """backend → the `restore` task's results (JAX also writes for TF and starts resume)."""
    _require("jax", "torch")
    return {backend: run_helper("restore", backend, work, seed_prefix) for backend in BACKENDS}


@pytest.fixture(scope="module")
def tf_restored(restored: dict[str, Any], work: Path) -> dict[str, Any]:
    return run_helper("tf_restore", "tensorflow", work)


@pytest.fixture(scope="module")
def resumed(restored: dict[str, Any], work: Path, seed_prefix: str) -> dict[str, Any]:
    return run_helper("resume", "jax", work, seed_prefix)


def decode(entry: dict[str, Any]) -> np.ndarray:
    """An array keras_helper.exact encoded (dtype, shape, bytes) back as the array."""
    data = bytes.fromhex(entry["hex"])
    return np.frombuffer(data, np.dtype(entry["dtype"])).reshape(entry["shape"])


def assert_close_predictions(ours: Any, theirs: Any) -> None:
    # Same weights, different kernels (XLA, ATen, TF): a few float32 ulps apart at most.
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-6)


# -- the seed's checkpoint, written by TensorFlow ------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_checkpoint_from_tensorflow_restores_like_tensorflow(restored, tf_written, backend):
    ours, theirs = restored[backend]["fixture"], tf_written["fixture"]
    # Bit for bit the values TensorFlow restored: weights and all optimizer variables
    # (iterations 1, learning rate 0.001, momentum and velocity of each variable).
    assert ours["weights"] == theirs["weights"]
    assert ours["optimizer"] == theirs["optimizer"] == ours["checkpoint_optimizer"]
    assert decode(ours["optimizer"][0]) == 1
    assert len(ours["optimizer"]) == 10
    assert_close_predictions(ours["predictions"], theirs["predictions"])


@pytest.mark.tf
def test_trackpoint_on_the_tensorflow_backend_restores_and_writes_like_tensorflow(tf_written):
    ours = tf_written["trackpoint_on_tf"]
    # The seed written by TF, restored by trackpoint into Keras-on-TF: same as TF's restore.
    assert ours["fixture"]["weights"] == tf_written["fixture"]["weights"]
    assert ours["fixture"]["optimizer"] == tf_written["fixture"]["optimizer"]
    for kind in KINDS:
        # Written by trackpoint on the TF backend: TF and trackpoint read back every bit.
        assert ours[kind]["read_by_tf"] == ours[kind]["written"], kind
        assert ours[kind]["read_by_trackpoint"] == ours[kind]["written"], kind


@pytest.mark.tf
def test_keras_layers_on_torch_get_the_keras_adapter_after_the_torch_one(restored):
    assert restored["torch"]["adapter_after_torch"] == "trackpoint.adapters.keras"


# -- four models: graphs, TF → JAX/PyTorch, JAX → TF ------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("kind", KINDS)
def test_object_graph_is_the_one_tensorflow_writes(restored, tf_written, kind):
    theirs = tf_written[kind]["tf_graph"]
    assert not any(node["slots"] for node in theirs)  # Keras 3: state by position, no slots
    assert tf_written[kind]["our_graph_on_tf_backend"] == theirs
    for backend in BACKENDS:
        assert restored[backend][kind]["graph"] == theirs, backend


@pytest.mark.tf
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_tensorflow_checkpoint_restores_on_backend(restored, tf_written, kind, backend):
    ours = restored[backend][kind]
    assert ours["optimizer"] == ours["checkpoint_optimizer"]
    assert decode(ours["optimizer"][0]) == 2  # two training steps
    assert_close_predictions(ours["predictions"], tf_written[kind]["predictions"])


@pytest.mark.tf
@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_written_from_jax_restores_in_tensorflow(restored, tf_restored, kind):
    jax_side, tf_side = restored["jax"][kind], tf_restored[kind]
    assert tf_side["optimizer"] == jax_side["optimizer_after"]
    assert decode(tf_side["optimizer"][0]) == 4  # two steps in TF, two more on JAX
    assert_close_predictions(tf_side["predictions"], jax_side["predictions_after"])


# -- resume, deferred restoration, errors (JAX) --------------------------------------------------


@pytest.mark.tf
def test_resumed_training_equals_straight_training_bit_for_bit(restored, resumed):
    straight = restored["jax"]["resume"]["straight"]
    assert resumed["resumed"]["weights"] == straight["weights"]
    assert resumed["resumed"]["optimizer"] == straight["optimizer"]
    assert decode(resumed["resumed"]["optimizer"][0]) == 6


@pytest.mark.tf
def test_unbuilt_model_and_optimizer_are_restored_when_built(resumed):
    errors = resumed["errors"]
    # Created with the optimizer, restored at once (as TF does).
    assert errors["unbuilt_iterations"] == 1
    assert errors["unbuilt_learning_rate"] == pytest.approx(0.001, rel=1e-7)
    unbuilt = errors["unbuilt_assert"]
    assert unbuilt["type"] == "MismatchError"
    assert unbuilt["assertion"]
    assert "wait for the program to create them" in unbuilt["message"]
    assert "model.dense_1._kernel" in unbuilt["message"]
    # After the model's first call only the optimizer's state still waits...
    model_built = errors["model_built_assert"]
    assert model_built["type"] == "MismatchError"
    assert "model.dense" not in model_built["message"]
    assert "optimizer._variables[2]" in model_built["message"]
    assert errors["model_built_weights"] == errors["fixture_weights"]
    # ...and `optimizer.build` restores it: nothing is skipped.
    assert errors["all_built_assert"] is None
    assert errors["all_built_optimizer"] == errors["fixture_optimizer"]


@pytest.mark.tf
@pytest.mark.parametrize("case", ["position_mismatch", "position_mismatch_deferred"])
def test_optimizer_state_on_a_reordered_var_list_is_refused_naming_both(resumed, case):
    error = resumed["errors"][case]
    assert error["type"] == "ShapeMismatchError"
    message = error["message"]
    # The checkpoint's position and shape, the program's variable there, and the fix.
    assert "optimizer._variables[2] is [4, 10] in the checkpoint but [2] in the program" in (
        message
    )
    assert "the program's variable there is" in message
    assert "bias_momentum' [2]" in message
    assert "restore their state by position" in message


@pytest.mark.tf
def test_changed_model_is_refused_with_both_shapes(resumed):
    error = resumed["errors"]["changed_model"]
    assert error["type"] == "ShapeMismatchError"
    assert "model.dense_1._kernel is [4, 10] in the checkpoint but [4, 11]" in error["message"]


@pytest.mark.tf
def test_model_only_restore_leaves_optimizer_values_unused(resumed):
    errors = resumed["errors"]
    assert errors["model_only_existing"] is None
    consumed = errors["model_only_consumed"]
    assert consumed["type"] == "MismatchError"
    assert "optimizer._iterations" in consumed["message"]


# -- what a restore says at the call (no TensorFlow needed) -----------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def messages(request: pytest.FixtureRequest, work: Path) -> dict[str, Any]:
    _require("keras", request.param)
    folder = work / f"messages-{request.param}"
    folder.mkdir(exist_ok=True)
    return run_helper("messages", request.param, folder)


def _one_warning(case: dict[str, Any]) -> str:
    found = [w for w in case["warnings"] if w["category"] == "PartialRestoreWarning"]
    assert len(found) == 1, case["warnings"]
    assert found[0]["here"]  # attributed to the caller's line, raised during the call
    message: str = found[0]["message"]
    return message


def test_renamed_keras_layer_names_both_sides(messages):
    message = _one_warning(messages["rename"])
    assert "model.hidden in the program and model.dense_1 in the checkpoint" in message
    assert "same variables and shapes" in message


def test_forgotten_keras_optimizer_warns_with_the_checkpoint_fix(messages):
    message = _one_warning(messages["forgotten_optimizer"])
    assert "pass Checkpoint(model=model, optimizer=optimizer)" in message
    consumed = messages["forgotten_optimizer_consumed"]
    assert consumed["type"] == "MismatchError"


def test_load_weights_into_an_uncompiled_model_speaks_of_load_weights(messages):
    # A compiled model's optimizer is saved with it (model.optimizer is tracked, as in TF).
    assert any(k.startswith("optimizer/") for k in messages["weights_keys"])
    message = _one_warning(messages["load_weights_uncompiled"])
    assert "Checkpoint(" not in message  # the user never made a Checkpoint
    assert "model.compile(optimizer=...)" in message
    assert "load_weights(..., expect_partial=True)" in message
    assert messages["load_weights_expect_partial"]["warnings"] == []
