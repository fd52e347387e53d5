"""Crash at every file-system operation of every save scenario; check nothing is lost.

Each scenario commits some checkpoints first, then runs one more save under `FaultFS`
crashing before operation N, for every N, and for each disk a crash can leave (process
crash, power loss, torn write; see faultfs). Afterwards the invariants of issue 6 /
reliability doc §4.8 must hold: the latest checkpoint is whole and verifies, it is the
last committed one or the one being saved (never older, never a mix), values are
bit-identical to that step, and the next save succeeds and leaves no temp files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest

import trackpoint
from trackpoint import storage
from trackpoint.errors import AsyncSaveError
from trackpoint.format import BundleReader, find_staged

from .faultfs import DISKS, Crash, FaultFS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

LEFTOVER_MARKS = (".tp-tmp-", ".tp-staging-")


def make_state(step: int) -> trackpoint.Checkpoint:
    """A small state whose every value is a function of `step` (and a string tensor)."""
    ckpt = trackpoint.Checkpoint(
        model=trackpoint.Module(),
        step=trackpoint.Variable(np.asarray(step, np.int64)),
    )
    ckpt.model.w = trackpoint.Variable(np.full((48, 40), step, np.float32))
    ckpt.model.b = trackpoint.Variable(np.arange(33, dtype=np.float64) + step)
    ckpt.model.names = trackpoint.Variable(
        np.array([f"s{step}".encode(), b"", ("é" * step).encode()], dtype=object)
    )
    return ckpt


def set_step(ckpt: trackpoint.Checkpoint, step: int) -> None:
    """Change every value of `ckpt` to `step`'s, in place."""
    fresh = make_state(step)
    ckpt.step.assign(fresh.step.numpy())
    ckpt.model.w.assign(fresh.model.w.numpy())
    ckpt.model.b.assign(fresh.model.b.numpy())
    ckpt.model.names.assign(fresh.model.names.numpy())


def read_step(prefix: str) -> int:
    """Restore `prefix` into a fresh state, check its values are exactly one step's, return it."""
    for _, error in BundleReader(prefix).verify():
        assert error is None, f"{prefix}: {error}"
    target = make_state(-1)
    # save() records the save counter, write() does not: restore it only when present.
    counted = any(k.startswith("save_counter/") for k, _ in trackpoint.list_variables(prefix))
    (target.restore(prefix) if counted else target.read(prefix)).assert_consumed()
    step = int(target.step.numpy())
    want = make_state(step)
    np.testing.assert_array_equal(target.model.w.numpy(), want.model.w.numpy())
    np.testing.assert_array_equal(target.model.b.numpy(), want.model.b.numpy())
    assert list(target.model.names.numpy()) == list(want.model.names.numpy())
    return step


def latest(folder: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", trackpoint.TrackpointWarning)
        return trackpoint.latest_checkpoint(folder)


@dataclass
class Scenario:
    """Commits `setup_steps`, then saves `step` by `save` (the operation crashed)."""

    name: str
    setup_steps: tuple[int, ...]
    step: int
    save: Callable[[trackpoint.Checkpoint, str], object]
    #: Where the checkpoint under test is: a fixed prefix, or None for the folder's latest.
    prefix: str | None = None
    options: trackpoint.CheckpointOptions | None = None


def _manager(folder: str, ckpt: trackpoint.Checkpoint, keep: int) -> trackpoint.CheckpointManager:
    return trackpoint.CheckpointManager(ckpt, folder, max_to_keep=keep)


def _save_first(ckpt: trackpoint.Checkpoint, folder: str) -> object:
    return ckpt.save(os.path.join(folder, "ckpt"), options=trackpoint.CheckpointOptions(threads=1))


def _manager_save(ckpt: trackpoint.Checkpoint, folder: str) -> object:
    with _manager(folder, ckpt, keep=2) as manager:
        return manager.save(options=trackpoint.CheckpointOptions(threads=1))


def _manager_async(ckpt: trackpoint.Checkpoint, folder: str) -> object:
    with _manager(folder, ckpt, keep=2) as manager:
        path = manager.save(options=trackpoint.CheckpointOptions(threads=1, enable_async=True))
        set_step(ckpt, 999)  # changed after the call returns: must not reach the file
        manager.sync()
        return path


def _three_shards(ckpt: trackpoint.Checkpoint, folder: str) -> object:
    with _manager(folder, ckpt, keep=2) as manager:
        return manager.save(options=trackpoint.CheckpointOptions(threads=1, num_shards=3))


def _overwrite(ckpt: trackpoint.Checkpoint, folder: str) -> object:
    return ckpt.write(os.path.join(folder, "model"), trackpoint.CheckpointOptions(threads=1))


SCENARIOS = [
    Scenario("first-save", (), 1, _save_first),
    Scenario("manager-save-with-deletion", (1, 2), 3, _manager_save),
    Scenario("async-manager-save", (1, 2), 3, _manager_async),
    Scenario("three-shards", (1, 2), 3, _three_shards),
    Scenario("overwrite-prefix", (1,), 2, _overwrite, prefix="model"),
]


def _setup(scenario: Scenario, folder: str) -> trackpoint.Checkpoint:
    os.makedirs(folder, exist_ok=True)
    ckpt = make_state(0)
    for step in scenario.setup_steps:
        set_step(ckpt, step)
        if scenario.prefix is not None:
            ckpt.write(os.path.join(folder, scenario.prefix))
        else:
            with _manager(folder, ckpt, keep=2) as manager:
                manager.save()
    set_step(ckpt, scenario.step)
    return ckpt


def _run(scenario: Scenario, folder: str, crash_after: int | None) -> tuple[bool, FaultFS]:
    """Set up, then run the scenario's save crashing after `crash_after` operations.

    Returns:
        Whether the save completed, and the storage (its operations, its disk model).
    """
    ckpt = _setup(scenario, folder)
    fs = FaultFS(folder=folder, crash_after=crash_after)  # the set-up folder is durable
    try:
        with storage.use(fs):
            scenario.save(ckpt, folder)
    except Crash:
        return False, fs
    except AsyncSaveError as err:
        # The crash hit the background writer; anything else is a real failure.
        if not isinstance(err.__cause__, Crash):
            raise
        return False, fs
    return True, fs


def _check(scenario: Scenario, folder: str, completed: bool, disk: str) -> None:
    """The invariants after a crash (or none), then the next save."""
    before = scenario.setup_steps[-1] if scenario.setup_steps else None
    if scenario.prefix is not None:
        got = read_step(os.path.join(folder, scenario.prefix))
    else:
        found = latest(folder)
        if found is None:
            # Nothing was committed before: "no checkpoint" is the truth, unless the save
            # completed (durable on return).
            assert before is None, f"latest is None, but step {before} was committed ({disk})"
            assert not completed, f"latest is None after a save returned ({disk})"
            got = None
        else:
            got = read_step(found)
    allowed = {scenario.step} if completed else {before, scenario.step}
    assert got in allowed, f"restored step {got}, expected one of {allowed} ({disk})"
    # The next save works and clears what the crash left.
    ckpt = make_state(50)
    if scenario.prefix is not None:
        path = ckpt.write(os.path.join(folder, scenario.prefix))
    else:
        with _manager(folder, ckpt, keep=2) as manager:
            manager.restore_or_initialize()
            set_step(ckpt, 50)
            saved = manager.save()
        assert saved is not None
        path = saved
        assert latest(folder) == path
    assert read_step(path) == 50
    leftovers = [n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS)]
    assert leftovers == [], leftovers


def _count_ops(scenario: Scenario, tmp_path: Path) -> int:
    folder = str(tmp_path / "count")
    os.makedirs(folder)
    completed, fs = _run(scenario, folder, None)
    assert completed
    return len(fs.ops)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_crash_point_loses_nothing(scenario, tmp_path):
    total = _count_ops(scenario, tmp_path)
    assert total >= 8  # the protocol has at least create/write/fsync/close/rename per file
    cases = 0
    for crash_after in range(total + 1):
        for disk in DISKS:
            folder = str(tmp_path / f"c{crash_after}-{disk}")
            os.makedirs(folder)
            completed, fs = _run(scenario, folder, crash_after if crash_after < total else None)
            assert completed == (crash_after == total)
            fs.materialize(disk)
            try:
                _check(scenario, folder, completed, disk)
            except AssertionError as err:
                where = (
                    "no crash"
                    if completed
                    else f"crash before operation {crash_after + 1} of {total}, after "
                    f"{fs.ops[crash_after - 1] if crash_after else 'none'}"
                )
                raise AssertionError(f"{scenario.name}: {where}, {disk} disk: {err}") from err
            cases += 1
    assert cases == 3 * (total + 1)


def test_a_staged_overwrite_interrupted_after_its_index_is_finished_by_the_reader(tmp_path):
    folder = str(tmp_path)
    ckpt = make_state(1)
    prefix = os.path.join(folder, "model")
    ckpt.write(prefix)
    set_step(ckpt, 2)
    # Crash right after the staged copy's index is in place (before the roll-forward).
    fs = FaultFS(folder=folder, crash_after=None)
    with storage.use(fs):
        ckpt.write(prefix)
    renames = [i for i, (op, path) in enumerate(fs.ops) if op == "rename"]
    staged_index = next(
        i for i in renames if ".tp-staging-" in fs.ops[i][1] and fs.ops[i][1].endswith(".index")
    )
    for where in range(staged_index + 1, len(fs.ops)):
        sub = str(tmp_path / f"at{where}")
        os.makedirs(sub)
        ckpt1 = make_state(1)
        ckpt1.write(os.path.join(sub, "model"))
        set_step(ckpt1, 2)
        crash = FaultFS(folder=sub, crash_after=where)
        with pytest.raises(Crash), storage.use(crash):
            ckpt1.write(os.path.join(sub, "model"))
        # The staged copy was complete: the reader finishes moving it into place (if the
        # crash left anything to do) and reads step 2.
        assert read_step(os.path.join(sub, "model")) == 2
        assert not find_staged(os.path.join(sub, "model"))
