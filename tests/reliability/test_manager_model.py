"""A model of `CheckpointManager`: random saves, crashes, restarts and clock changes.

Hypothesis drives a manager through a random sequence of saves (random values), crashes
at a random file-system operation of a save (process crash, power loss or torn write,
with a random prefix of the folder operations since its last fsync surviving; see
faultfs), restarts (a new manager on the folder, `restore_or_initialize`), changes of
`max_to_keep` and `keep_checkpoint_every_n_hours`, and the clock jumping forwards and
backwards. After every step the invariants of reliability doc §4.8 hold:

- no `.index` on disk lacks its data files (checked on the folder itself);
- the latest checkpoint is whole and verifies, and it never moves backwards;
- its values are bit-identical to the last committed save (or to a crashed save's,
  if that save reached its commit point);
- after a completed save, at least min(max_to_keep, saves so far) complete checkpoints
  exist, and the save left no temporary or staging files;
- the manager never deletes files outside its prefix and folder (a foreign
  `other-1.index` beside it, and files named like its own in the parent folder).

`TRACKPOINT_STRESS=1` runs many more and longer sequences.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from types import SimpleNamespace
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import trackpoint
import trackpoint.manager as manager_module
from trackpoint import storage
from trackpoint.errors import TrackpointError
from trackpoint.format import BundleReader, read_checkpoint_state

from .faultfs import DISKS, Crash, FaultFS, NoSyncStorage
from .test_crash_points import (
    LEFTOVER_MARKS,
    assert_every_index_has_its_data,
    latest,
    make_state,
    read_step,
    set_step,
)

STRESS = os.environ.get("TRACKPOINT_STRESS") == "1"

FOREIGN = {
    "other-1.index": b"another program's file",
    "other-1.data-00000-of-00001": b"another program's data",
}
OUTSIDE = {
    "ckpt-1.index": b"named like the manager's own, but in the parent folder",
    "ckpt-1.data-00000-of-00001": b"likewise",
}
_NUMBER = re.compile(r"ckpt-(\d+)")


class ManagerModel(RuleBasedStateMachine):
    """The manager of one folder, checked against what was saved."""

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="tp-model-")
        self.folder = os.path.join(self.root, "run")
        os.makedirs(self.folder)
        for name, data in FOREIGN.items():
            _write(os.path.join(self.folder, name), data)
        for name, data in OUTSIDE.items():
            _write(os.path.join(self.root, name), data)
        # The manager reads the clock through its module's `time`: a clock we can turn.
        self.now = time.time()
        self._clock = mock.patch.object(manager_module, "time", SimpleNamespace(time=self._time))
        self._clock.start()
        self.max_to_keep: int | None = 2
        self.keep_hours: float | None = None
        self.values: dict[int, int] = {}  # checkpoint number -> the value saved under it
        self.latest_number: int | None = None
        # Complete checkpoints that must exist: min(max_to_keep, saves so far), where the
        # saves count from the last change of max_to_keep (a lower one deletes the rest).
        self.must_exist = 0
        self.ckpt = make_state(-1)
        self.manager = self._new_manager()
        # Durability is the disk model's to decide (FaultFS at a crash): no real fsyncs.
        # Entered last, so that teardown (which leaves it) runs whenever it was entered.
        self._storage = storage.use(NoSyncStorage())
        self._storage.__enter__()

    def teardown(self) -> None:
        try:
            self.manager.close()
        finally:
            self._storage.__exit__(None, None, None)
            self._clock.stop()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def _time(self) -> float:
        return self.now

    def _new_manager(self) -> trackpoint.CheckpointManager:
        return trackpoint.CheckpointManager(
            self.ckpt,
            self.folder,
            max_to_keep=self.max_to_keep,
            keep_checkpoint_every_n_hours=self.keep_hours,
        )

    def _restart(self) -> None:
        """Drop the manager and its objects; a new program restores the folder's latest."""
        self.manager.close()
        self.ckpt = make_state(-1)
        self.manager = self._new_manager()
        restored = self.manager.restore_or_initialize()
        if self.latest_number is None:
            assert restored is None
            assert int(self.ckpt.step.numpy()) == -1
            return
        assert restored == os.path.join(self.folder, f"ckpt-{self.latest_number}")
        assert int(self.ckpt.step.numpy()) == self.values[self.latest_number]
        assert int(self.ckpt.save_counter.numpy()) == self.latest_number

    def _options(self, shards: int) -> trackpoint.CheckpointOptions:
        return trackpoint.CheckpointOptions(threads=1, num_shards=shards)

    def _own_complete(self) -> list[str]:
        found = []
        for name in os.listdir(self.folder):
            if not (name.endswith(".index") and _NUMBER.fullmatch(name[: -len(".index")])):
                continue
            prefix = os.path.join(self.folder, name[: -len(".index")])
            try:
                with BundleReader(prefix) as reader:
                    whole = reader.data_files_complete()
                    whole = whole and all(e is None for _, e in reader.verify())
            except TrackpointError:
                # Not complete: counted as missing here; no_index_lacks_its_data says
                # whether such an index may be on disk at all.
                whole = False
            if whole:
                found.append(prefix)
        return found

    # -- rules ------------------------------------------------------------------------------

    @rule(value=st.integers(0, 300), shards=st.integers(1, 3))
    def save(self, value: int, shards: int) -> None:
        set_step(self.ckpt, value)
        self.now += 60.0
        path = self.manager.save(options=self._options(shards))
        assert path is not None
        number = int(_NUMBER.fullmatch(os.path.basename(path)).group(1))  # type: ignore[union-attr]
        assert self.latest_number is None or number == self.latest_number + 1
        self.values[number] = value
        self.latest_number = number
        self._counted_save()
        assert self.manager.latest_checkpoint == path
        leftovers = [n for n in os.listdir(self.folder) if any(m in n for m in LEFTOVER_MARKS)]
        assert leftovers == [], leftovers
        complete = self._own_complete()
        assert len(complete) >= self.must_exist, (complete, self.max_to_keep, self.must_exist)
        for kept in self.manager.checkpoints:
            assert kept in complete, kept

    @rule(
        value=st.integers(0, 300),
        shards=st.integers(1, 3),
        # Half the crashes among the first operations, where the data files are written
        # (a torn disk shows their unsynced pages only there).
        crash_after=st.one_of(st.integers(0, 12), st.integers(0, 60)),
        disk=st.sampled_from(DISKS),
        kept=st.integers(0, 60),
    )
    def crash_during_save(
        self, value: int, shards: int, crash_after: int, disk: str, kept: int
    ) -> None:
        set_step(self.ckpt, value)
        self.now += 60.0
        number = (self.latest_number or 0) + 1
        fs = FaultFS(folder=self.folder, crash_after=crash_after, sync=False)
        try:
            with storage.use(fs):
                self.manager.save(options=self._options(shards))
        except Crash:
            # Counted from the end: 0 keeps every pending folder operation, so that crashes
            # between a file's creation and its fsync leave that file (torn, on a torn disk).
            choices = fs.kept_choices(disk)
            fs.materialize(disk, choices[-1 - kept % len(choices)])
            crashed = True
        else:
            crashed = False  # fewer operations than crash_after: it completed
        assert_every_index_has_its_data(self.folder, ignore=FOREIGN)
        # The process is gone: its manager and objects with it. Committed is what the state
        # file names (the commit point); the invariants check that it is whole.
        state = read_checkpoint_state(self.folder)
        before = self.latest_number
        if state is None:
            assert before is None, f"the state file vanished after a crash ({disk})"
            got = None
        else:
            name = os.path.basename(state.model_checkpoint_path)
            got = int(_NUMBER.fullmatch(name).group(1))  # type: ignore[union-attr]
        allowed = {number} if not crashed else {before, number}
        assert got in allowed, (got, allowed, disk)
        if got == number:
            self.values[number] = value
            self.latest_number = number
            self._counted_save()
        self._restart()

    def _counted_save(self) -> None:
        keep = self.max_to_keep
        self.must_exist = self.must_exist + 1 if keep is None else min(keep, self.must_exist + 1)

    @rule()
    def restart(self) -> None:
        self._restart()

    @rule(keep=st.sampled_from([1, 2, 3, 5, None]))
    def change_max_to_keep(self, keep: int | None) -> None:
        self.max_to_keep = keep
        self._restart()

    @rule(hours=st.sampled_from([None, 0.5, 1.0, 3.0]))
    def change_keep_every_n_hours(self, hours: float | None) -> None:
        self.keep_hours = hours
        self._restart()

    @rule(hours=st.floats(0.1, 5.0))
    def clock_forward(self, hours: float) -> None:
        self.now += hours * 3600.0

    @rule(hours=st.floats(0.01, 30.0))
    def clock_backward(self, hours: float) -> None:
        self.now -= hours * 3600.0

    @precondition(lambda self: self.latest_number is not None)
    @rule()
    def restore(self) -> None:
        set_step(self.ckpt, 999)
        assert self.manager.restore_or_initialize() is not None
        assert self.latest_number is not None
        assert int(self.ckpt.step.numpy()) == self.values[self.latest_number]

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def latest_is_whole_and_never_moves_back(self) -> None:
        found = latest(self.folder)
        if self.latest_number is None:
            # Nothing committed. A first save that crashed after its index but before the
            # state file leaves a complete checkpoint, which the folder scan may offer.
            if found is not None:
                read_step(found)
            return
        assert found == os.path.join(self.folder, f"ckpt-{self.latest_number}")
        assert read_step(found) == self.values[self.latest_number]  # verifies, bit for bit

    @invariant()
    def no_index_lacks_its_data(self) -> None:
        assert_every_index_has_its_data(self.folder, ignore=FOREIGN)

    @invariant()
    def foreign_files_survive(self) -> None:
        for name, data in FOREIGN.items():
            with open(os.path.join(self.folder, name), "rb") as f:
                assert f.read() == data, name
        for name, data in OUTSIDE.items():
            with open(os.path.join(self.root, name), "rb") as f:
                assert f.read() == data, name


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


ManagerModel.TestCase.settings = settings(
    max_examples=500 if STRESS else 100,
    stateful_step_count=50 if STRESS else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not STRESS,
    print_blob=True,
)
TestManagerModel = ManagerModel.TestCase


def test_values_are_exact_for_float_edge_cases(tmp_path):
    """The model's values are integers; a save also keeps NaN payloads and -0.0 exactly."""
    ckpt = make_state(1)
    odd = np.array([np.nan, -0.0, np.inf, 1e-45], np.float64).view(np.uint64)
    odd[0] |= 0xDEAD  # a NaN payload
    ckpt.model.b.assign(np.resize(odd.view(np.float64), 33))
    with trackpoint.CheckpointManager(ckpt, str(tmp_path), max_to_keep=1) as manager:
        path = manager.save()
    target = make_state(-1)
    target.restore(path).assert_consumed()
    assert target.model.b.numpy().tobytes() == ckpt.model.b.numpy().tobytes()
