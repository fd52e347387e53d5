"""Restore by graph matching: structure, deferral, slots, statuses and their messages."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint
from trackpoint.format import BundleWriter
from trackpoint.optimizers import SGD, Adam

from .conftest import Dense, Net


def _trained(tmp_path: Path) -> tuple[Net, Adam, str]:
    net, opt = Net(seed=1), Adam(0.01)
    for _ in range(2):
        opt.apply_gradients([(np.ones_like(v.numpy()), v) for v in net.variables])
    path = trackpoint.Checkpoint(model=net, optimizer=opt).save(tmp_path / "ckpt")
    return net, opt, path


def _assert_same(a: Net, b: Net) -> None:
    for x, y in zip(a.variables, b.variables, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_restore_matches_by_structure_not_by_python_names(tmp_path: Path) -> None:
    net, opt, path = _trained(tmp_path)
    rebuilt, fresh_opt = Net(seed=7), Adam(0.01)
    # The Python variables are named differently; the attribute names are the same.
    status = trackpoint.Checkpoint(model=rebuilt, optimizer=fresh_opt).restore(path)
    status.assert_consumed()
    _assert_same(net, rebuilt)
    # The optimizer had no state: restoring created its slots with the saved values.
    for old, new in zip(net.variables, rebuilt.variables, strict=True):
        for slot in ("m", "v"):
            np.testing.assert_array_equal(
                np.asarray(opt.get_slot(old, slot)), np.asarray(fresh_opt.get_slot(new, slot))
            )
    assert fresh_opt.beta1_power.numpy() == opt.beta1_power.numpy()


def test_restore_writes_into_the_live_arrays_in_place(tmp_path: Path) -> None:
    weights = {"w": np.arange(6, dtype=np.float64).reshape(2, 3)}
    path = trackpoint.Checkpoint(params=weights).write(tmp_path / "w")
    target = {"w": np.zeros((2, 3))}
    alias = target["w"]
    trackpoint.Checkpoint(params=target).read(path).assert_consumed()
    assert target["w"] is alias
    np.testing.assert_array_equal(alias, weights["w"])


def test_restore_into_a_read_only_array_is_a_clear_error(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(w=np.ones(3)).write(tmp_path / "w")
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(trackpoint.InvalidValueError, match="read-only"):
        trackpoint.Checkpoint(w=frozen).read(path)


def test_restore_into_non_contiguous_array_is_a_clear_error(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(w=np.arange(3.0)).write(tmp_path / "w")
    view = np.zeros(6)[::2]
    with pytest.raises(trackpoint.InvalidValueError, match="non-contiguous"):
        trackpoint.Checkpoint(w=view).read(path)


def test_deferred_restoration_applies_when_the_layer_appears(tmp_path: Path) -> None:
    net, _, path = _trained(tmp_path)
    late = trackpoint.Module()
    # The optimizer is not passed on purpose (the root's `optimizer` would warn).
    status = trackpoint.Checkpoint(model=late).read(path, expect_partial=True)
    status.assert_existing_objects_matched()  # nothing built yet: nothing unmatched
    late.dense_1 = Dense(4, 10, seed=9)  # created after restore
    np.testing.assert_array_equal(late.dense_1.kernel.numpy(), net.dense_1.kernel.numpy())
    late.dense_2 = Dense(10, 2, seed=9)
    np.testing.assert_array_equal(late.dense_2.bias.numpy(), net.dense_2.bias.numpy())


def test_save_counter_continues_after_restore(tmp_path: Path) -> None:
    ckpt = trackpoint.Checkpoint(w=trackpoint.Variable(1.0))
    first = ckpt.save(tmp_path / "ckpt")
    ckpt.save(tmp_path / "ckpt")
    again = trackpoint.Checkpoint(w=trackpoint.Variable(0.0))
    again.restore(first).assert_consumed()
    assert int(again.save_counter.numpy()) == 1
    assert again.save(tmp_path / "ckpt").endswith("ckpt-2")


def test_write_creates_no_counter_and_no_state_file(tmp_path: Path) -> None:
    ckpt = trackpoint.Checkpoint(w=trackpoint.Variable(1.0))
    assert ckpt.write(tmp_path / "exact") == str(tmp_path / "exact")
    assert not (tmp_path / "checkpoint").exists()
    keys = [k for k, _ in trackpoint.list_variables(tmp_path / "exact")]
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" not in keys
    ckpt.save(tmp_path / "ckpt")
    state = (tmp_path / "checkpoint").read_text()
    assert state == 'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'


def test_shape_mismatch_names_the_object_and_both_shapes(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    wrong = Net()
    wrong.dense_1 = Dense(3, 10)
    with pytest.raises(trackpoint.ShapeMismatchError) as info:
        trackpoint.Checkpoint(model=wrong).read(path)
    assert (
        str(info.value)
        == "model.dense_1.kernel is [4, 10] in the checkpoint but [3, 10] in the program"
    )


def test_dtype_mismatch_names_the_object_and_both_dtypes(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(step=trackpoint.Variable(np.int64(3))).write(tmp_path / "c")
    with pytest.raises(
        trackpoint.DTypeMismatchError, match="step is int64 in the checkpoint but float32"
    ):
        trackpoint.Checkpoint(step=trackpoint.Variable(np.float32(0))).read(path)


def test_renamed_layer_error_suggests_the_rename(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    renamed = Net(first="dense_one")
    with pytest.warns(trackpoint.PartialRestoreWarning, match="was model.dense_1 renamed"):
        status = trackpoint.Checkpoint(model=renamed, optimizer=Adam()).restore(path)
    with pytest.raises(trackpoint.MismatchError) as info:
        status.assert_existing_objects_matched()
    message = str(info.value)
    assert (
        "model.dense_one in the program and model.dense_1 in the checkpoint hold the same "
        "variables and shapes (bias [10], kernel [4, 10]) — was model.dense_1 renamed to "
        "model.dense_one?"
    ) in message
    assert "model.dense_one.kernel" in info.value.unrestored_objects
    assert "model.dense_1.kernel" in info.value.unused_checkpoint_values
    status.assert_nontrivial_match()
    status.expect_partial()


def test_rename_hint_says_same_shapes_only_when_they_are_the_same(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    renamed = trackpoint.Module()
    renamed.dense_one = Dense(4, 11)  # renamed and resized: the shapes do not match
    renamed.dense_2 = Dense(10, 2)
    with pytest.warns(trackpoint.PartialRestoreWarning, match="was model.dense_1 renamed"):
        status = trackpoint.Checkpoint(model=renamed, optimizer=Adam()).restore(path)
    with pytest.raises(trackpoint.MismatchError) as info:
        status.assert_existing_objects_matched()
    message = str(info.value)
    assert (
        "model.dense_one in the program and model.dense_1 in the checkpoint have similar "
        "names but different contents — was model.dense_1 renamed to model.dense_one?"
    ) in message
    assert "same variables" not in message
    assert "same shapes" not in message
    status.expect_partial()


def test_missing_optimizer_is_named_with_the_fix(tmp_path: Path) -> None:
    net, _, path = _trained(tmp_path)
    model_only = Net(seed=3)
    with pytest.warns(trackpoint.PartialRestoreWarning, match="no 'optimizer'"):
        status = trackpoint.Checkpoint(model=model_only).restore(path)
    status.assert_existing_objects_matched()  # the model itself is whole
    _assert_same(net, model_only)
    with pytest.raises(trackpoint.MismatchError) as info:
        status.assert_consumed()
    assert (
        "the checkpoint holds optimizer state under 'optimizer' but the program's Checkpoint has "
        "no 'optimizer': pass Checkpoint(model=model, optimizer=optimizer)"
    ) in str(info.value)
    assert any(p.startswith("optimizer") for p in info.value.unused_checkpoint_values)
    status.expect_partial()


def test_optimizer_missing_from_the_checkpoint_is_named(tmp_path: Path) -> None:
    net = Net()
    path = trackpoint.Checkpoint(model=net).save(tmp_path / "ckpt")
    with pytest.warns(trackpoint.PartialRestoreWarning, match="saved without an optimizer"):
        status = trackpoint.Checkpoint(model=Net(), optimizer=Adam()).restore(path)
    with pytest.raises(trackpoint.MismatchError, match="was saved without an optimizer"):
        status.assert_existing_objects_matched()


def test_assert_nontrivial_match_fails_when_nothing_matches(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(a=np.ones(1)).write(tmp_path / "c")
    with pytest.warns(trackpoint.PartialRestoreWarning, match="was a renamed to b"):
        status = trackpoint.Checkpoint(b=np.ones(1)).read(path)
    with pytest.raises(trackpoint.MismatchError, match="the checkpoint's root has a"):
        status.assert_nontrivial_match()
    with pytest.raises(AssertionError):  # MismatchError is an AssertionError, as in TF
        status.assert_consumed()
    status.expect_partial()


def test_unused_values_warn_once_at_the_call(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(a=np.ones(1), b=np.ones(2)).write(tmp_path / "c")
    with pytest.warns(trackpoint.PartialRestoreWarning, match="counterpart in the program: b"):
        status = trackpoint.Checkpoint(a=np.zeros(1)).read(path)
    del status  # and not again when the status goes (filterwarnings=error would fail)
    gc.collect()


def test_status_expect_partial_is_kept_for_tf_code(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(a=np.ones(1), b=np.ones(2)).write(tmp_path / "c")
    status = trackpoint.Checkpoint(a=np.zeros(1)).read(path, expect_partial=True)
    assert status.expect_partial() is status


def test_restore_none_is_a_status_whose_assertions_fail() -> None:
    status = trackpoint.Checkpoint(a=np.zeros(1)).restore(None)
    with pytest.raises(trackpoint.MismatchError, match="no checkpoint was given"):
        status.assert_consumed()
    assert status.expect_partial() is status


def test_name_based_checkpoint_falls_back_to_names_and_says_so(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "model.ckpt-3") as writer:
        writer.add("dense/kernel", np.arange(6, dtype=np.float32).reshape(2, 3))
        writer.add("global_step", np.int64(3))
    kernel = trackpoint.Variable(np.zeros((2, 3), np.float32), name="dense/kernel")
    step = trackpoint.Variable(np.int64(0), name="global_step")
    ckpt = trackpoint.Checkpoint(kernel=kernel, step=step)
    with pytest.warns(trackpoint.TrackpointWarning, match="no object graph"):
        status = ckpt.read(tmp_path / "model.ckpt-3")
    status.assert_consumed()
    assert int(step.numpy()) == 3
    np.testing.assert_array_equal(kernel.numpy(), np.arange(6).reshape(2, 3))


def test_name_based_fallback_reports_unmatched_variables(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "m") as writer:
        writer.add("a", np.zeros(1))
    with pytest.warns(trackpoint.TrackpointWarning):
        status = trackpoint.Checkpoint(b=trackpoint.Variable(np.zeros(1), name="b")).read(
            tmp_path / "m"
        )
    with pytest.raises(trackpoint.MismatchError, match="found no key") as info:
        status.assert_consumed()
    assert info.value.unrestored_objects == ("b",)


def test_python_state_round_trips(tmp_path: Path) -> None:
    state = trackpoint.JSONState(epoch=3, config={"lr": 0.1})
    path = trackpoint.Checkpoint(state=state).write(tmp_path / "s")
    fresh = trackpoint.JSONState()
    trackpoint.Checkpoint(state=fresh).read(path).assert_consumed()
    assert fresh == {"epoch": 3, "config": {"lr": 0.1}}
    assert trackpoint.list_variables(path)[-1] == ("state/.ATTRIBUTES/py_state", [])


def test_sgd_momentum_slots_round_trip(tmp_path: Path) -> None:
    w = trackpoint.Variable(np.ones(3, np.float32))
    opt = SGD(0.1, momentum=0.9)
    opt.apply_gradients([(np.ones(3, np.float32), w)])
    path = trackpoint.Checkpoint(w=w, opt=opt).write(tmp_path / "c")
    w2, opt2 = trackpoint.Variable(np.zeros(3, np.float32)), SGD(0.1, momentum=0.9)
    trackpoint.Checkpoint(w=w2, opt=opt2).read(path).assert_consumed()
    np.testing.assert_array_equal(np.asarray(opt2.get_slot(w2, "momentum")), np.ones(3))


def test_slot_restore_waits_for_a_late_optimizer(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    net = Net()
    ckpt = trackpoint.Checkpoint(model=net)
    # The root's `optimizer` is missing at the call: it warns unless told it comes later.
    status = ckpt.restore(path, expect_partial=True)
    fresh = Adam(0.01)
    ckpt.optimizer = fresh  # attached after restore: deferred, slots created now
    status.assert_consumed()
    assert fresh.get_slot(net.dense_2.bias, "v") is not None


def test_root_object_is_node_zero(tmp_path: Path) -> None:
    net = Net()
    path = trackpoint.Checkpoint(root=net).write(tmp_path / "w")
    assert [k for k, _ in trackpoint.list_variables(path)][1] == (
        "dense_1/bias/.ATTRIBUTES/VARIABLE_VALUE"
    )
    other = Net(seed=5)
    trackpoint.Checkpoint(root=other).read(path).assert_consumed()
    _assert_same(net, other)


class Frozen:
    """An immutable leaf, like a JAX array: restore must build a new one."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value
        self.value.flags.writeable = False


class _FrozenValue(trackpoint.graph.Value):
    def __init__(self, frozen: Frozen) -> None:
        self.shape = frozen.value.shape
        self.dtype = frozen.value.dtype
        self._frozen = frozen

    def read(self) -> np.ndarray:
        return self._frozen.value

    def assign(self, value: np.ndarray) -> object:
        return Frozen(np.array(value))


class _FrozenTrackable(trackpoint.Trackable):
    def __init__(self, frozen: Frozen) -> None:
        self._value = _FrozenValue(frozen)

    def trackable_values(self) -> dict[str, trackpoint.graph.Value]:
        return {"VARIABLE_VALUE": self._value}


trackpoint.register(Frozen, _FrozenTrackable)


def test_immutable_values_are_replaced_and_immutable_parents_rebuilt(tmp_path: Path) -> None:
    from collections import namedtuple

    Pair = namedtuple("Pair", ["a", "b"])
    saved = {
        "pair": Pair(Frozen(np.ones(2)), Frozen(np.full(3, 2.0))),
        "list": [Frozen(np.ones(1))],
    }
    path = trackpoint.Checkpoint(params=saved).write(tmp_path / "p")
    target = {"pair": Pair(Frozen(np.zeros(2)), Frozen(np.zeros(3))), "list": [Frozen(np.zeros(1))]}
    old_pair = target["pair"]
    ckpt = trackpoint.Checkpoint(params=target)
    # Holding the replaced tuple is what the restore warns about (issue 12, point 2).
    with pytest.warns(trackpoint.TrackpointWarning, match=r"ckpt\.params\['pair'\]"):
        ckpt.read(path).assert_consumed()
    assert ckpt.params is target  # the mutable dict was kept and updated in place
    assert target["pair"] is not old_pair
    assert isinstance(target["pair"], Pair)
    np.testing.assert_array_equal(target["pair"].a.value, np.ones(2))
    np.testing.assert_array_equal(target["pair"].b.value, np.full(3, 2.0))
    np.testing.assert_array_equal(target["list"][0].value, np.ones(1))


def test_immutable_value_directly_on_a_checkpoint_is_replaced(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(w=Frozen(np.arange(3.0))).write(tmp_path / "w")
    ckpt = trackpoint.Checkpoint(w=Frozen(np.zeros(3)))
    ckpt.read(path).assert_consumed()
    np.testing.assert_array_equal(ckpt.w.value, np.arange(3.0))


def test_restore_looks_children_up_without_rebuilding_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Restoring into a dict or list of N values must look each child up directly: building
    # the whole children map per lookup made a 20,000-tensor restore take minutes.
    from trackpoint.graph import _trackable

    params = {"w": [np.ones(2), np.zeros(3)], "b": np.ones(1)}
    path = trackpoint.Checkpoint(params=params).write(tmp_path / "p")
    target: dict[str, Any] = {"w": [np.zeros(2), np.ones(3)], "b": np.zeros(1)}
    ckpt = trackpoint.Checkpoint(params=target)

    # Once per container after binding (the check for objects the checkpoint lacks) is
    # linear; once per lookup is what must not come back.
    built: list[int] = []
    for kind in (_trackable._DictTrackable, _trackable._ListTrackable):
        original = kind.trackable_children

        def counted(self: Any, original: Any = original) -> Any:
            built.append(id(self._items))
            return original(self)

        monkeypatch.setattr(kind, "trackable_children", counted)
    status = ckpt.read(path)
    monkeypatch.undo()
    assert len(built) == len(set(built)), "restore rebuilt a container's children map per lookup"
    status.assert_consumed()
    np.testing.assert_array_equal(target["w"][1], np.zeros(3))
