"""Flax linen `TrainState` and Optax trees: numbers that are pytree leaves are state, and a
JAX restore hands back the restored trees (issue 12, points 1 and 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

for _framework in ("jax", "optax", "flax.linen"):
    pytest.importorskip(_framework)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import linen, struct  # noqa: E402
from flax.training.train_state import TrainState  # noqa: E402

import trackpoint  # noqa: E402
from trackpoint.errors import DTypeMismatchError, MismatchError, TrackpointWarning  # noqa: E402

pytestmark = pytest.mark.jax

STEP_KEY = "state/step/.ATTRIBUTES/VARIABLE_VALUE"


class MLP(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.Dense(1)(linen.relu(linen.Dense(8)(x)))


def _data() -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x.sum(axis=1, keepdims=True))


def _fresh_state(seed: int) -> TrainState:
    model = MLP()
    params = model.init(jax.random.key(seed), jnp.ones((1, 4)))["params"]
    state: TrainState = TrainState.create(  # type: ignore[no-untyped-call]
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2)
    )
    return state


def _step(state: TrainState, x: jax.Array, y: jax.Array) -> TrainState:
    def loss(params: Any) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    new: TrainState = state.apply_gradients(grads=jax.grad(loss)(state.params))  # type: ignore[no-untyped-call]
    return new


_jitted_step = jax.jit(_step)


def _train(steps: int, *, jit: bool) -> TrainState:
    state = _fresh_state(0)
    x, y = _data()
    for _ in range(steps):
        state = (_jitted_step if jit else _step)(state, x, y)
    return state


def _leaves_equal(actual: Any, expected: Any) -> None:
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ---------------------------------------------------------------------------------------
# 1. Python numbers that are leaves of a pytree are saved and restored


def test_unjitted_train_state_step_is_saved_and_restored_as_a_python_int(tmp_path):
    trained = _train(3, jit=False)
    assert type(trained.step) is int  # what the user hit: a Python int leaf
    path = trackpoint.Checkpoint(state=trained).write(tmp_path / "ckpt")
    assert STEP_KEY in dict(trackpoint.list_variables(path))

    ckpt = trackpoint.Checkpoint(state=_fresh_state(1))
    ckpt.read(path).assert_consumed()
    assert type(ckpt.state.step) is int
    assert ckpt.state.step == 3
    _leaves_equal(ckpt.state.params, trained.params)
    _leaves_equal(ckpt.state.opt_state, trained.opt_state)


@pytest.mark.parametrize(("saved_jit", "target_jit"), [(True, False), (False, True)])
def test_jitted_and_unjitted_runs_restore_into_each_other(tmp_path, saved_jit, target_jit):
    trained = _train(3, jit=saved_jit)
    path = trackpoint.Checkpoint(state=trained).write(tmp_path / "ckpt")
    # A state of the other kind (step an int or an array), not held: see the tests of 2.
    ckpt = trackpoint.Checkpoint(state=_train(1, jit=target_jit))
    target_step_type = type(ckpt.state.step)
    ckpt.read(path).assert_consumed()
    assert type(ckpt.state.step) is target_step_type  # the program's type is kept
    assert int(ckpt.state.step) == 3
    _leaves_equal(ckpt.state.params, trained.params)
    # Training goes on from the restored state exactly as from the saved one.
    x, y = _data()
    _leaves_equal(_jitted_step(ckpt.state, x, y), _jitted_step(trained, x, y))


def test_jitted_and_unjitted_runs_write_the_same_keys_and_shapes(tmp_path):
    jitted = trackpoint.Checkpoint(state=_train(2, jit=True)).write(tmp_path / "jit")
    eager = trackpoint.Checkpoint(state=_train(2, jit=False)).write(tmp_path / "eager")
    jitted_reader = trackpoint.load_checkpoint(jitted)
    eager_reader = trackpoint.load_checkpoint(eager)
    assert jitted_reader.get_variable_to_shape_map() == eager_reader.get_variable_to_shape_map()
    # The Python int is saved exactly, as int64 (NumPy's int, TF's step counters' dtype);
    # the jitted run's step is the weakly typed int32 array JAX made of it.
    eager_step, jitted_step = eager_reader.get_tensor(STEP_KEY), jitted_reader.get_tensor(STEP_KEY)
    assert (eager_step.dtype.name, eager_step.shape, eager_step.item()) == ("int64", (), 2)
    assert (jitted_step.dtype.name, jitted_step.item()) == ("int32", 2)


@struct.dataclass
class Scalars:
    count: Any
    again: Any
    scale: Any
    flag: Any
    np_scale: Any
    name: str = struct.field(pytree_node=False, default="static")  # type: ignore[no-untyped-call]


def test_number_leaves_of_every_kind_round_trip_with_their_python_type(tmp_path):
    # count and again are the same (interned) int object: still two leaves, saved twice.
    saved = Scalars(count=7, again=7, scale=0.1, flag=True, np_scale=np.float32(1.5))
    path = trackpoint.Checkpoint(s=saved).write(tmp_path / "ckpt")
    keys = dict(trackpoint.list_variables(path))
    for field in ("count", "again", "scale", "flag", "np_scale"):
        assert f"s/{field}/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "s/name/.ATTRIBUTES/VARIABLE_VALUE" not in keys  # a static field is the program's

    ckpt = trackpoint.Checkpoint(
        s=Scalars(count=0, again=1, scale=0.0, flag=False, np_scale=np.float32(0), name="new")
    )
    ckpt.read(path).assert_consumed()
    got = ckpt.s
    assert (type(got.count), got.count, type(got.again), got.again) == (int, 7, int, 7)
    assert (type(got.scale), got.scale) == (float, 0.1)  # exactly: saved as float64
    assert (type(got.flag), got.flag) == (bool, True)
    assert (type(got.np_scale), got.np_scale) == (np.float32, np.float32(1.5))
    assert got.name == "new"


@struct.dataclass
class WithStep:
    params: Any
    step: Any


@struct.dataclass
class StaticStep:  # step is static: not a leaf, not saved
    params: Any
    step: Any = struct.field(pytree_node=False, default=0)  # type: ignore[no-untyped-call]


def test_a_number_leaf_missing_from_the_checkpoint_is_reported(tmp_path):
    path = trackpoint.Checkpoint(state=StaticStep(params={"w": jnp.ones(2)}, step=4)).write(
        tmp_path / "ckpt"
    )
    ckpt = trackpoint.Checkpoint(state=WithStep(params={"w": jnp.zeros(2)}, step=0))
    with pytest.warns(trackpoint.PartialRestoreWarning, match=r"got nothing .*: state\.step"):
        status = ckpt.read(path)
    with pytest.raises(MismatchError, match=r"state\.step") as err:
        status.assert_existing_objects_matched()
    assert err.value.unrestored_objects == ("state.step",)


def test_a_number_leaf_refuses_a_checkpoint_value_of_another_kind(tmp_path):
    path = trackpoint.Checkpoint(s={"step": jnp.asarray(2.5)}).write(tmp_path / "ckpt")

    with pytest.raises(DTypeMismatchError, match=r"s\.step"):
        trackpoint.Checkpoint(s=WithStep(params={}, step=0)).read(path)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jitted"])
def test_restore_of_a_train_state_in_a_new_checkpoint_object_keeps_going(tmp_path, jit):
    """What the issue reported: the step was lost silently (eager) or refused (jitted)."""
    manager = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(state=_train(4, jit=jit)), tmp_path, max_to_keep=1
    )
    manager.save()
    ckpt = trackpoint.Checkpoint(state=_fresh_state(1))
    ckpt.restore(trackpoint.latest_checkpoint(tmp_path)).assert_consumed()
    assert ckpt.state.step == 4


# ---------------------------------------------------------------------------------------
# 2. A JAX restore hands back the restored trees; holding the old one is pointed out

TX = optax.adam(1e-2)


def _params(seed: int) -> dict[str, Any]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k1, (4, 2)), "b": jax.random.normal(k2, (2,))}


def _optax_checkpoint(tmp_path: Any, steps: int = 5) -> str:
    params = _params(0)
    opt_state = TX.init(params)
    for _ in range(steps):
        updates, opt_state = TX.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
        params = optax.apply_updates(params, updates)
    return trackpoint.Checkpoint(params=params, opt_state=opt_state).save(tmp_path / "ckpt")


def test_restore_warns_at_the_callers_line_when_it_still_holds_the_old_tree(tmp_path):
    path = _optax_checkpoint(tmp_path)
    params = _params(1)
    opt_state = TX.init(params)
    ckpt = trackpoint.Checkpoint(params=params, opt_state=opt_state)
    with pytest.warns(TrackpointWarning, match=r"ckpt\.opt_state") as record:
        status = ckpt.restore(path)
    [warning] = record
    assert warning.filename == __file__
    message = str(warning.message)
    assert "your variable 'opt_state'" in message
    assert "ckpt.restore_trees" in message
    assert "params" not in message.split(";")[0]  # a dict is restored in place: not stale
    status.assert_consumed()
    assert int(ckpt.opt_state[0].count) == 5
    assert int(opt_state[0].count) == 0  # what the warning is about


def test_restore_trees_hands_back_the_restored_trees_without_a_warning(tmp_path):
    path = _optax_checkpoint(tmp_path)
    params = _params(1)
    opt_state = TX.init(params)
    ckpt = trackpoint.Checkpoint(params=params, opt_state=opt_state)
    params, opt_state = ckpt.restore_trees(path, "params", "opt_state")
    assert int(opt_state[0].count) == 5
    assert opt_state is ckpt.opt_state
    assert params is ckpt.params
    assert int(ckpt.save_counter.numpy()) == 1  # restore's bookkeeping: the counter too


def test_restore_trees_hands_back_a_linen_train_state(tmp_path):
    trained = _train(3, jit=True)
    manager = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(state=trained), tmp_path, max_to_keep=1
    )
    manager.save()
    state = _fresh_state(1)
    ckpt = trackpoint.Checkpoint(state=state)
    state = ckpt.restore_trees(trackpoint.latest_checkpoint(tmp_path), "state")
    assert state.step == 3
    _leaves_equal(state.params, trained.params)
    # Nothing saved yet: the tree given to the Checkpoint comes back as it is.
    fresh = _fresh_state(2)
    assert trackpoint.Checkpoint(state=fresh).restore_trees(None, "state") is fresh


def test_restore_trees_checks_that_everything_matched_unless_partial(tmp_path):
    path = _optax_checkpoint(tmp_path)
    ckpt = trackpoint.Checkpoint(params=_params(1))  # no opt_state: its values stay unused
    with pytest.raises(MismatchError, match="opt_state"):
        ckpt.restore_trees(path, "params")
    params = ckpt.restore_trees(path, "params", partial=True)
    assert params is ckpt.params
    with pytest.raises(AttributeError, match="'opt_state'"):
        ckpt.restore_trees(path, "opt_state", partial=True)


def test_restore_is_quiet_when_the_caller_holds_no_old_tree(tmp_path):
    path = _optax_checkpoint(tmp_path)
    params = _params(1)
    ckpt = trackpoint.Checkpoint(params=params, opt_state=TX.init(params))
    ckpt.restore(path).assert_consumed()  # filterwarnings=error: any warning fails here
    assert int(ckpt.opt_state[0].count) == 5


def test_a_managers_restore_warns_at_the_callers_line_naming_the_state(tmp_path):
    saved = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(state=_train(2, jit=False)), tmp_path, max_to_keep=1
    )
    saved.save()
    state = _fresh_state(1)
    checkpoint = trackpoint.Checkpoint(state=state)
    manager = trackpoint.CheckpointManager(checkpoint, tmp_path, max_to_keep=1)
    with pytest.warns(TrackpointWarning, match=r"checkpoint\.state") as record:
        manager.restore_or_initialize()
    assert record[0].filename == __file__
    assert "your variable 'state'" in str(record[0].message)
    assert state.step == 0
    assert checkpoint.state.step == 2
