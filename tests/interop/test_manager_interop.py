"""`trackpoint.CheckpointManager` against `tf.train.CheckpointManager`, call for call.

Each scenario runs the same sequence of calls on both managers (same clock, same step
counter) and compares what they return, which files they leave and the state file they
write. Folders also move between the libraries: TF's manager continues a folder
trackpoint's manager wrote, and the other way round.

Both managers read the clock through `time.time()` of their own module; the tests replace
that module attribute with a settable clock, so no test sleeps.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import trackpoint
from trackpoint.storage import LOCK_NAME

pytestmark = pytest.mark.tf

START = 1_800_000_000.0
HOUR = 3600.0


class Clock:
    """Stands in for the `time` module of both managers; the test sets `now`."""

    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(tf, monkeypatch):
    from tensorflow.python.checkpoint import (
        checkpoint_management,
    )

    fake = Clock()
    monkeypatch.setattr(checkpoint_management, "time", fake)
    monkeypatch.setattr(importlib.import_module("trackpoint.manager"), "time", fake)
    return fake


@dataclass(frozen=True)
class Side:
    """One library's classes, behind the same calls."""

    name: str
    lib: Any

    def variable(self, value: Any) -> Any:
        if self.name == "tf":
            return self.lib.Variable(np.float32(value))
        return trackpoint.Variable(np.float32(value))

    def step_counter(self) -> Any:
        if self.name == "tf":
            return self.lib.Variable(np.int64(0))
        return trackpoint.Variable(np.int64(0))

    def checkpoint(self, **children: Any) -> Any:
        return (self.lib.train if self.name == "tf" else trackpoint).Checkpoint(**children)

    def manager(self, *args: Any, **kwargs: Any) -> Any:
        cls = (
            self.lib.train.CheckpointManager if self.name == "tf" else trackpoint.CheckpointManager
        )
        return cls(*args, **kwargs)


@pytest.fixture(scope="module")
def sides(tf):
    return Side("tf", tf), Side("trackpoint", trackpoint)


def files(folder: Any) -> Any:
    """The folder's files, without trackpoint's writer lock (held while a manager lives)."""
    return sorted(n for n in os.listdir(folder) if n != LOCK_NAME)


def ckpt_files(*numbers: Any) -> Any:
    """The files of checkpoints `ckpt-N` plus the state file, sorted like os.listdir."""
    names = ["checkpoint"]
    for n in numbers:
        names += [f"ckpt-{n}.data-00000-of-00001", f"ckpt-{n}.index"]
    return sorted(names)


def rel(path: Any, folder: Any) -> Any:
    return None if path is None else os.path.relpath(str(path), str(folder))


def read_state(tf: Any, folder: Any) -> Any:
    """The state file as TF parses it: (latest, paths, timestamps, last_preserved)."""
    state = tf.train.get_checkpoint_state(str(folder))
    if state is None:
        return None
    return (
        rel(state.model_checkpoint_path, folder),
        [rel(p, folder) for p in state.all_model_checkpoint_paths],
        list(state.all_model_checkpoint_timestamps),
        state.last_preserved_timestamp,
    )


BAD_ARGUMENTS = {
    "max_to_keep_zero": {"max_to_keep": 0},
    "max_to_keep_negative": {"max_to_keep": -1},
    "interval_without_step_counter": {"max_to_keep": 1, "checkpoint_interval": 5},
}


@pytest.mark.parametrize("kwargs", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_invalid_arguments_are_value_errors_in_both(sides, tmp_path, kwargs):
    for side in sides:
        with pytest.raises(ValueError, match=r"max_to_keep|step_counter"):
            side.manager(side.checkpoint(v=side.variable(0.0)), str(tmp_path / side.name), **kwargs)
    assert not (tmp_path / "trackpoint").exists()


# -- the same calls on both managers ------------------------------------------------------


def run_script(
    tf: Any, side: Any, folder: Any, clock: Any, script: Any, **manager_kwargs: Any
) -> Any:
    """Run `script` against `side`'s manager in `folder`; a record of every step's effect.

    Steps: ("save", kwargs), ("tick", seconds), ("step", value), ("restore_or_initialize",),
    ("new_manager",) — a restarted program: a fresh variable, checkpoint and manager.
    """
    clock.now = START
    os.makedirs(folder, exist_ok=True)
    initialized = []
    counter = side.step_counter()
    if "checkpoint_interval" in manager_kwargs:
        manager_kwargs["step_counter"] = counter

    def new_manager() -> Any:
        variable = side.variable(0.0)
        checkpoint = side.checkpoint(v=variable)
        kwargs = {"init_fn": lambda: initialized.append(True), **manager_kwargs}
        return variable, side.manager(checkpoint, str(folder), **kwargs)

    variable, manager = new_manager()
    record = []
    for step in script:
        kind, *args = step
        result: Any = "-"
        if kind == "tick":
            clock.now += args[0]
            continue
        if kind == "step":
            counter.assign(args[0])
            continue
        if kind == "save":
            variable.assign(np.float32(clock.now - START))
            result = rel(manager.save(**(args[0] if args else {})), folder)
        elif kind == "restore_or_initialize":
            result = rel(manager.restore_or_initialize(), folder)
            result = (result, float(np.asarray(variable.numpy())), len(initialized))
        elif kind == "new_manager":
            variable, manager = new_manager()
        record.append(
            (
                step,
                result,
                files(folder),
                [rel(p, folder) for p in manager.checkpoints],
                rel(manager.latest_checkpoint, folder),
            )
        )
    return record, read_state(tf, folder)


def run_both(
    tf: Any, sides: Any, tmp_path: Any, clock: Any, script: Any, **manager_kwargs: Any
) -> Any:
    results = [
        run_script(tf, side, tmp_path / side.name, clock, script, **manager_kwargs)
        for side in sides
    ]
    theirs, ours = results
    assert ours[0] == theirs[0]  # every step: returned path, files, checkpoints, latest
    assert ours[1] == theirs[1]  # the state file, timestamps included
    return ours


SAVE = ("save",)


def ticked(*steps: Any, seconds: float = 60.0) -> Any:
    """Each step preceded by a clock tick."""
    out = []
    for step in steps:
        out += [("tick", seconds), step]
    return out


def test_max_to_keep_deletes_the_oldest_like_tf(tf, sides, tmp_path, clock):
    record, state = run_both(tf, sides, tmp_path, clock, ticked(*[SAVE] * 4), max_to_keep=2)
    assert [r[1] for r in record] == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    assert record[-1][2] == ckpt_files(3, 4)
    assert state == (
        "ckpt-4",
        ["ckpt-3", "ckpt-4"],
        [START + 180.0, START + 240.0],
        START - 1.0,  # no state when the manager was made: its clock minus one second
    )


def test_max_to_keep_none_keeps_everything_like_tf(tf, sides, tmp_path, clock):
    record, state = run_both(tf, sides, tmp_path, clock, ticked(*[SAVE] * 3), max_to_keep=None)
    assert record[-1][2] == ckpt_files(1, 2, 3)
    assert state[1] == ["ckpt-1", "ckpt-2", "ckpt-3"]


def test_explicit_checkpoint_numbers_and_overwrites_like_tf(tf, sides, tmp_path, clock):
    script = ticked(("save", {"checkpoint_number": 10}), SAVE, ("save", {"checkpoint_number": 10}))
    script += ticked(SAVE)
    record, _ = run_both(tf, sides, tmp_path, clock, script, max_to_keep=2)
    # save_counter still counts every save; an overwritten number moves to the queue's end.
    assert [r[1] for r in record] == ["ckpt-10", "ckpt-2", "ckpt-10", "ckpt-4"]
    assert record[2][3] == ["ckpt-2", "ckpt-10"]
    assert record[-1][2] == ckpt_files(4, 10)


@pytest.mark.parametrize(
    "every_n_hours",
    [None, 0, 1.0, 2.5],
    ids=["never", "zero_means_never", "every_hour", "every_2.5_hours"],
)
def test_keep_checkpoint_every_n_hours_like_tf(tf, sides, tmp_path, clock, every_n_hours):
    script = ticked(*[SAVE] * 8, seconds=0.75 * HOUR)
    record, state = run_both(
        tf,
        sides,
        tmp_path,
        clock,
        script,
        max_to_keep=2,
        keep_checkpoint_every_n_hours=every_n_hours,
    )
    kept = {
        None: (7, 8),
        0: (7, 8),  # TF tests the setting for truth: 0 keeps nothing extra
        1.0: (2, 4, 6, 7, 8),
        2.5: (4, 7, 8),
    }[every_n_hours]
    assert record[-1][2] == ckpt_files(*kept)
    # Preserved checkpoints leave the state file's list (it would grow for ever).
    assert state[1] == ["ckpt-7", "ckpt-8"]


def test_checkpoint_interval_with_step_counter_like_tf(tf, sides, tmp_path, clock):
    script = [
        ("step", 0), SAVE,  # the first save always happens
        SAVE,  # same step: skipped
        ("step", 3), SAVE,  # fewer than 5 steps since the last save: skipped
        ("step", 5), SAVE,
        ("step", 7), ("save", {"check_interval": False}),  # forced
        ("step", 7), ("save", {"check_interval": False}),  # same step: skipped even so
        ("step", 11), SAVE,  # 4 steps since 7: skipped
        ("step", 12), SAVE,
    ]  # fmt: skip
    record, _ = run_both(tf, sides, tmp_path, clock, script, max_to_keep=3, checkpoint_interval=5)
    assert [r[1] for r in record] == [
        "ckpt-1",
        None,
        None,
        "ckpt-2",
        "ckpt-3",
        None,
        None,
        "ckpt-4",
    ]
    assert record[-1][2] == ckpt_files(2, 3, 4)


def test_restore_or_initialize_like_tf(tf, sides, tmp_path, clock):
    script = [
        ("restore_or_initialize",),  # empty folder: init_fn runs, None
        ("tick", 60.0), SAVE,
        ("tick", 60.0), SAVE,
        ("new_manager",),
        ("restore_or_initialize",),  # the latest is restored, init_fn not called
        ("tick", 60.0), SAVE,  # numbering continues from the restored save_counter
    ]  # fmt: skip
    record, state = run_both(tf, sides, tmp_path, clock, script, max_to_keep=2)
    assert record[0][1] == (None, 0.0, 1)
    assert record[4][1] == ("ckpt-2", 120.0, 1)
    assert record[5][1] == "ckpt-3"
    assert record[5][2] == ckpt_files(2, 3)
    assert state[1] == ["ckpt-2", "ckpt-3"]


def test_restore_or_initialize_resets_the_checkpoint_interval_like_tf(tf, sides, tmp_path, clock):
    script = [
        ("step", 10), SAVE,
        ("new_manager",),
        ("restore_or_initialize",),
        SAVE,  # the restored step is the last saved one: skipped
        ("step", 12), SAVE,  # skipped: fewer than 5 steps
        ("step", 15), SAVE,
    ]  # fmt: skip
    record, _ = run_both(
        tf, sides, tmp_path, clock, script, max_to_keep=None, checkpoint_interval=5
    )
    assert [r[1] for r in record][3:] == [None, None, "ckpt-2"]


def test_restarted_manager_adopts_its_own_checkpoints_like_tf(tf, sides, tmp_path, clock):
    script = ticked(SAVE, SAVE, ("new_manager",), ("restore_or_initialize",), SAVE, SAVE)
    record, state = run_both(tf, sides, tmp_path, clock, script, max_to_keep=2)
    assert record[2][3] == ["ckpt-1", "ckpt-2"]  # adopted: stamped after last_preserved
    assert record[-1][2] == ckpt_files(3, 4)
    assert state[3] == START - 1.0  # the first manager's mark, kept across restarts


# -- folders passed between the libraries ----------------------------------------------------


def test_tf_manager_continues_a_trackpoint_manager_folder(tf, tmp_path, clock):
    folder = str(tmp_path)
    variable = trackpoint.Variable(np.float32(0.0))
    ours = trackpoint.CheckpointManager(trackpoint.Checkpoint(v=variable), folder, max_to_keep=2)
    for i in range(3):
        clock.now += 10.0
        variable.assign(np.float32(i + 1))
        ours.save()
    assert files(folder) == ckpt_files(2, 3)

    clock.now += 10.0
    tf_variable = tf.Variable(0.0)
    tf_checkpoint = tf.train.Checkpoint(v=tf_variable)
    theirs = tf.train.CheckpointManager(tf_checkpoint, folder, max_to_keep=2)
    # TF adopts both: their timestamps are greater than trackpoint's last_preserved_timestamp.
    assert theirs.checkpoints == [os.path.join(folder, "ckpt-2"), os.path.join(folder, "ckpt-3")]
    assert theirs.latest_checkpoint == os.path.join(folder, "ckpt-3")
    tf_checkpoint.restore(theirs.latest_checkpoint).assert_consumed()
    assert tf_variable.numpy() == 3.0
    clock.now += 10.0
    assert theirs.save() == os.path.join(folder, "ckpt-4")
    assert files(folder) == ckpt_files(3, 4)
    clock.now += 10.0
    assert theirs.save() == os.path.join(folder, "ckpt-5")
    assert files(folder) == ckpt_files(4, 5)
    assert (
        trackpoint.latest_checkpoint(folder)
        == tf.train.latest_checkpoint(folder)
        == os.path.join(folder, "ckpt-5")
    )
    assert read_state(tf, folder) == (
        "ckpt-5",
        ["ckpt-4", "ckpt-5"],
        [START + 50.0, START + 60.0],
        START - 1.0,  # trackpoint's mark, kept by TF
    )


def test_trackpoint_manager_continues_a_tf_manager_folder(tf, tmp_path, clock):
    tf_folder, tp_folder = tmp_path / "tf", tmp_path / "tp"
    tf_variable = tf.Variable(0.0)
    theirs = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf_variable), str(tf_folder), max_to_keep=2
    )
    for i in range(3):
        clock.now += 10.0
        tf_variable.assign(float(i + 1))
        theirs.save()
    assert files(tf_folder) == ckpt_files(2, 3)
    shutil.copytree(tf_folder, tp_folder)
    tf_state = read_state(tf, tf_folder)
    assert tf_state == ("ckpt-3", ["ckpt-2", "ckpt-3"], [START + 20.0, START + 30.0], START - 1.0)

    # The same continuation by each library, each in its own copy of TF's folder.
    def continue_folder(side_manager: Any, make_checkpoint: Any, folder: Any) -> Any:
        clock.now = START + 40.0
        variable, checkpoint = make_checkpoint()
        manager = side_manager(checkpoint, str(folder), max_to_keep=2)
        steps: list[Any] = [
            ([rel(p, folder) for p in manager.checkpoints], rel(manager.latest_checkpoint, folder))
        ]
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        steps.append(float(np.asarray(variable.numpy())))
        for _ in range(2):
            clock.now += 10.0
            path = manager.save()
            steps.append((rel(path, folder), files(folder), read_state(tf, folder)))
        return steps

    def tf_checkpoint() -> Any:
        variable = tf.Variable(0.0)
        return variable, tf.train.Checkpoint(v=variable)

    def tp_checkpoint() -> Any:
        variable = trackpoint.Variable(np.float32(0.0))
        return variable, trackpoint.Checkpoint(v=variable)

    ours = continue_folder(trackpoint.CheckpointManager, tp_checkpoint, tp_folder)
    assert ours == continue_folder(tf.train.CheckpointManager, tf_checkpoint, tf_folder)
    assert ours[0] == (["ckpt-2", "ckpt-3"], "ckpt-3")
    assert ours[1] == 3.0
    # ckpt-4: ckpt-2 deleted; TF's timestamp of ckpt-3 and its mark are kept.
    assert ours[2] == (
        "ckpt-4",
        ckpt_files(3, 4),
        ("ckpt-4", ["ckpt-3", "ckpt-4"], [START + 30.0, START + 50.0], START - 1.0),
    )
    assert ours[3][:2] == ("ckpt-5", ckpt_files(4, 5))
    assert trackpoint.latest_checkpoint(tp_folder) == tf.train.latest_checkpoint(str(tp_folder))


@pytest.mark.parametrize("writer", ["tf", "trackpoint"], ids=["tf_saved", "trackpoint_saved"])
def test_checkpoints_without_timestamps_are_never_deleted(tf, sides, tmp_path, clock, writer):
    """`Checkpoint.save` writes no timestamps: no newly made manager ever deletes those files."""
    source = tmp_path / "source"
    side = dict(zip(("tf", "trackpoint"), sides, strict=True))[writer]
    checkpoint = side.checkpoint(v=side.variable(1.0))
    for _ in range(2):
        checkpoint.save(str(source / "ckpt"))
    results = []
    for continuing in sides:
        folder = tmp_path / continuing.name
        shutil.copytree(source, folder)
        clock.now = START
        restored = continuing.checkpoint(v=continuing.variable(0.0))
        manager = continuing.manager(restored, str(folder), max_to_keep=1)
        adopted = list(manager.checkpoints)
        restored.restore(manager.latest_checkpoint).assert_consumed()
        for _ in range(2):
            clock.now += 60.0
            manager.save()
        results.append((adopted, files(folder), read_state(tf, folder)))
    assert results[1] == results[0]
    adopted, left, state = results[1]
    assert adopted == []
    assert left == ckpt_files(1, 2, 4)  # ckpt-3 was the manager's own: deleted
    assert state == ("ckpt-4", ["ckpt-4"], [START + 120.0], 0.0)


def test_clock_behind_the_state_file_deletes_nothing_old(tf, sides, tmp_path, clock):
    """A clock that went backwards: the old checkpoints are no longer the manager's."""
    source = tmp_path / "source"
    maker = sides[1]
    manager = maker.manager(maker.checkpoint(v=maker.variable(1.0)), str(source), max_to_keep=2)
    for _ in range(2):
        clock.now += 60.0
        manager.save()
    results = []
    for continuing in sides:
        folder = tmp_path / continuing.name
        shutil.copytree(source, folder)
        clock.now = START - 10 * HOUR  # before every timestamp in the file
        restored = continuing.checkpoint(v=continuing.variable(0.0))
        manager = continuing.manager(restored, str(folder), max_to_keep=1)
        adopted = list(manager.checkpoints)
        restored.restore(manager.latest_checkpoint).assert_consumed()
        for _ in range(2):
            clock.now += 60.0
            manager.save()
        results.append((adopted, files(folder), read_state(tf, folder)))
    assert results[1] == results[0]
    adopted, left, state = results[1]
    assert adopted == []
    assert left == ckpt_files(1, 2, 4)
    assert state[3] == START - 10 * HOUR


def test_other_named_checkpoints_leave_the_list_but_only_tf_deletes_them(
    tf, sides, tmp_path, clock
):
    """A deliberate difference: trackpoint deletes only files of its own `checkpoint_name`."""
    source = tmp_path / "source"
    maker = sides[0]
    manager = maker.manager(
        maker.checkpoint(v=maker.variable(1.0)), str(source), max_to_keep=3, checkpoint_name="model"
    )
    for _ in range(2):
        clock.now += 60.0
        manager.save()
    results = {}
    for continuing in sides:
        folder = tmp_path / continuing.name
        shutil.copytree(source, folder)
        clock.now = START + 600.0
        manager = continuing.manager(
            continuing.checkpoint(v=continuing.variable(0.0)), str(folder), max_to_keep=1
        )
        adopted = [rel(p, folder) for p in manager.checkpoints]
        for _ in range(2):
            clock.now += 60.0
            manager.save()
        results[continuing.name] = (adopted, files(folder), read_state(tf, folder))
    theirs, ours = results["tf"], results["trackpoint"]
    assert ours[0] == theirs[0] == ["model-1", "model-2"]
    assert ours[2] == theirs[2]  # the same state file: only ckpt-2 listed
    assert theirs[1] == ckpt_files(2)
    assert ours[1] == sorted(
        [
            *ckpt_files(2),
            *(f"model-{n}.{ext}" for n in (1, 2) for ext in ("index", "data-00000-of-00001")),
        ]
    )
