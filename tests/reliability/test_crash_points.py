"""Crash at every file-system operation of every save scenario; check nothing is lost.

Each scenario commits some checkpoints first, then runs one more save under `FaultFS`
crashing before operation N, for every N, and checks every disk that crash can leave
(see faultfs): the process crash; and power loss with unsynced data lost, or torn, for
each prefix of the folder operations made since the folder's last fsync. Afterwards the
invariants of issue 6 / reliability doc §4.8 must hold: no `.index` on disk lacks its data
files; the latest checkpoint is whole and verifies, it is the last committed one or the
one being saved (never older, never a mix), values are bit-identical to that step, and the
next save succeeds and leaves no temp files.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest

import trackpoint
from tests._compare import assert_bitwise_equal
from trackpoint import storage
from trackpoint.errors import AsyncSaveError
from trackpoint.format import STAGING_MARK, BundleReader, TableReader, find_staged
from trackpoint.format.protos import tensor_bundle_pb2

from .faultfs import DISKS, PAGE, Crash, FaultFS, NoSyncStorage

if TYPE_CHECKING:
    from collections.abc import Callable, Collection
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
    assert_bitwise_equal(target.model.w.numpy(), want.model.w.numpy(), f"{prefix}: model.w")
    assert_bitwise_equal(target.model.b.numpy(), want.model.b.numpy(), f"{prefix}: model.b")
    assert_bitwise_equal(
        target.model.names.numpy(), want.model.names.numpy(), f"{prefix}: model.names"
    )
    return step


def assert_every_index_has_its_data(folder: str, *, ignore: Collection[str] = ()) -> None:
    """Every `.index` in `folder` reads, and each data file it names exists, long enough.

    Read from the folder itself, not through `latest_checkpoint` (whose fallback skips an
    index without its data) nor `BundleReader` (which finishes a staged overwrite first).
    A staged set's data file missing under its own name was moved to its prefix's name by
    an interrupted roll-forward (which moves the index last): that one must do. `ignore`:
    names of other programs' files.
    """
    names = set(os.listdir(folder))
    for name in sorted(names - set(ignore)):
        if not name.endswith(".index"):
            continue
        prefix = name[: -len(".index")]
        with open(os.path.join(folder, name), "rb") as f:
            raw = f.read()
        try:
            items = list(TableReader(raw).items())
        except ValueError as err:
            raise AssertionError(f"'{name}' is on disk but does not read: {err}") from err
        assert [key for key, _ in items[:1]] == [b""], f"'{name}' has no bundle header"
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(items[0][1])
        count = header.num_shards
        ends = dict.fromkeys(range(count), 0)
        for key, value in items[1:]:
            entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            if entry.slices:
                continue  # a partitioned tensor's own entry: its slices hold the bytes
            assert 0 <= entry.shard_id < count, f"'{name}': {key!r} is in shard {entry.shard_id}"
            ends[entry.shard_id] = max(ends[entry.shard_id], entry.offset + entry.size)
        for shard, end in ends.items():
            data = f"{prefix}.data-{shard:05d}-of-{count:05d}"
            if data not in names and STAGING_MARK in prefix:
                data = f"{prefix.split(STAGING_MARK, 1)[0]}.data-{shard:05d}-of-{count:05d}"
            assert data in names, f"'{name}' is on disk without '{data}'"
            size = os.path.getsize(os.path.join(folder, data))
            assert size >= end, f"'{name}' needs {end} bytes of '{data}', which has {size}"


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
    with storage.use(NoSyncStorage()):  # FaultFS counts the set-up folder as durable
        for step in scenario.setup_steps:
            set_step(ckpt, step)
            if scenario.prefix is not None:
                ckpt.write(os.path.join(folder, scenario.prefix))
            else:
                with _manager(folder, ckpt, keep=2) as manager:
                    manager.save()
    set_step(ckpt, scenario.step)
    return ckpt


def _run(
    scenario: Scenario,
    folder: str,
    crash_after: int | None,
    unhonoured: frozenset[int] = frozenset(),
) -> tuple[bool, FaultFS]:
    """Set up, then run the scenario's save crashing after `crash_after` operations.

    Returns:
        Whether the save completed, and the storage (its operations, its disk model).
    """
    ckpt = _setup(scenario, folder)
    fs = FaultFS(folder=folder, crash_after=crash_after, sync=False, unhonoured=unhonoured)
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
    # Readers may finish a staged save, and the next save syncs: the disk model, not
    # the disk, decides durability here.
    with storage.use(NoSyncStorage()):
        _check_folder(scenario, folder, completed, disk)


def _check_folder(scenario: Scenario, folder: str, completed: bool, disk: str) -> None:
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


def _count_ops(scenario: Scenario, tmp_path: Path) -> list[tuple[str, str]]:
    folder = str(tmp_path / "count")
    os.makedirs(folder)
    completed, fs = _run(scenario, folder, None)
    assert completed
    shutil.rmtree(folder)
    return fs.ops


@dataclass
class Tally:
    """What one crash-everywhere run checked."""

    disks: int = 0
    torn: int = 0
    partial: int = 0


def crash_everywhere(
    scenario: Scenario,
    disk: str,
    tmp_path: Path,
    *,
    unhonoured: frozenset[int] = frozenset(),
    prefixes: bool = True,
) -> Tally:
    """Crash the scenario's save at every operation; check every `disk` the crash leaves.

    Args:
        scenario: The save to crash.
        disk: "process", "power" or "torn" (see faultfs).
        tmp_path: Where the folders go.
        unhonoured: Fsyncs that make nothing durable (see `FaultFS`).
        prefixes: Check each prefix of the pending folder operations surviving (False:
            none of them, the all-or-nothing model).

    Raises:
        AssertionError: an invariant failed or a check raised, named with the crash point
            and disk.
    """
    total = len(_count_ops(scenario, tmp_path))
    assert total >= 8  # the protocol has at least create/write/fsync/close/rename per file
    tally = Tally()
    for crash_after in range(total + 1):
        folder = str(tmp_path / f"run{crash_after}")
        os.makedirs(folder)
        completed, fs = _run(
            scenario, folder, crash_after if crash_after < total else None, unhonoured
        )
        assert completed == (crash_after == total)
        where = (
            "no crash"
            if completed
            else f"crash before operation {crash_after + 1} of {total}, after "
            f"{fs.ops[crash_after - 1] if crash_after else 'none'}"
        )
        seen = set()
        for kept in fs.kept_choices(disk) if prefixes else [0]:
            image = fs.render(disk, kept)
            if image.key() in seen:
                continue  # another prefix of this crash left exactly these files
            seen.add(image.key())
            described = f"{disk} disk, {kept} of {image.pending} folder operations kept"
            disk_folder = str(tmp_path / f"c{crash_after}-{kept}")
            image.write(disk_folder)
            try:
                assert_every_index_has_its_data(disk_folder)
                _check(scenario, disk_folder, completed, described)
            except Exception as err:  # a library error too: with the crash point and disk
                raise AssertionError(f"{scenario.name}: {where}, {described}: {err!r}") from err
            shutil.rmtree(disk_folder)
            tally.disks += 1
            tally.torn += image.torn
            tally.partial += image.partial
        shutil.rmtree(folder)
    return tally


@pytest.mark.parametrize("disk", DISKS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_crash_point_loses_nothing(scenario, disk, tmp_path):
    tally = crash_everywhere(scenario, disk, tmp_path)
    # The models reach this scenario's files: some crash leaves only part of the folder's
    # pending operations, and on the torn disk some file partly written.
    if disk != "process":
        assert tally.partial > 0, f"{scenario.name}: no partial folder state in {tally}"
    if disk == "torn":
        assert tally.torn > 0, f"{scenario.name}: no torn file in {tally}"


def _ops_numbered(ops: list[tuple[str, str]], wanted: Callable[[str, str], bool]) -> list[int]:
    return [
        number for number, (op, path) in enumerate(ops, 1) if wanted(op, os.path.basename(path))
    ]


def test_the_torn_disk_catches_data_files_renamed_before_they_are_durable(tmp_path):
    """A protocol without the data files' fsync fails on the torn disk by itself.

    There a data file renamed unsynced has its full size but not its bytes: the sizes
    check out and the checksums do not (the power disk shows it as too short instead).
    """
    scenario = SCENARIOS[0]
    ops = _count_ops(scenario, tmp_path)
    data_syncs = _ops_numbered(ops, lambda op, name: op == "fsync" and ".data-" in name)
    assert data_syncs
    with pytest.raises(AssertionError, match="torn disk"):
        crash_everywhere(scenario, "torn", tmp_path, unhonoured=frozenset(data_syncs))


def test_partial_folder_states_catch_a_state_file_renamed_before_it_is_durable(tmp_path):
    """The manager's first state write without its fsyncs (file and folder): the folder
    fsync of the second write covers the rename, so all-or-nothing power loss never shows
    it; a prefix of the folder operations does (an empty state file)."""
    scenario = next(s for s in SCENARIOS if s.name == "manager-save-with-deletion")
    ops = _count_ops(scenario, tmp_path)
    state_sync = _ops_numbered(
        ops, lambda op, name: op == "fsync" and name.startswith("checkpoint.")
    )[0]
    folder_sync = next(
        number
        for number in _ops_numbered(ops, lambda op, _: op == "fsync_dir")
        if number > state_sync
    )
    lax = frozenset({state_sync, folder_sync})
    crash_everywhere(scenario, "power", tmp_path / "whole", unhonoured=lax, prefixes=False)
    with pytest.raises(AssertionError, match=r"power disk, [1-9]\d* of \d+ folder operations"):
        crash_everywhere(scenario, "power", tmp_path / "prefixes", unhonoured=lax)


def test_the_power_disk_keeps_a_prefix_of_the_folder_operations(tmp_path):
    folder = str(tmp_path)
    for name in ("a", "c"):
        (tmp_path / name).write_bytes(name.encode() * 10)
    fs = FaultFS(folder=folder, sync=False)
    fd = fs.create(os.path.join(folder, "b.tmp"))
    fs.write_all(fd, b"B" * 100, 0)
    fs.fsync(fd)
    fs.close(fd)
    fs.replace(os.path.join(folder, "b.tmp"), os.path.join(folder, "b"))
    fs.unlink(os.path.join(folder, "a"))
    fs.replace(os.path.join(folder, "c"), os.path.join(folder, "b"))
    assert fs.pending_folder_ops == 4
    shown = [
        {name: data[:1] for name, data in fs.render("power", kept).files.items()}
        for kept in fs.kept_choices("power")
    ]
    assert shown == [
        {"a": b"a", "c": b"c"},
        {"a": b"a", "c": b"c", "b.tmp": b"B"},
        {"a": b"a", "c": b"c", "b": b"B"},
        {"c": b"c", "b": b"B"},
        {"b": b"c"},
    ]
    fs.fsync_dir(folder)
    assert fs.pending_folder_ops == 0
    assert fs.render("power").files == {"b": b"c" * 10}


def test_the_torn_disk_writes_back_half_the_dirty_pages(tmp_path):
    folder = str(tmp_path)
    fs = FaultFS(folder=folder, sync=False)
    path = os.path.join(folder, "f")
    fd = fs.create(path)
    fs.write_all(fd, b"s" * 5000, 0)
    fs.fsync(fd)  # pages 0-1 durable: 5000 bytes of "s"
    fs.preallocate(fd, 5 * PAGE)  # the size grows to 5 pages, the new ones not written
    fs.write_all(fd, b"n" * 200, 100)  # dirties page 0
    fs.write_all(fd, b"n" * 100, 3 * PAGE)  # dirties page 3
    fs.close(fd)
    fs.fsync_dir(folder)
    assert fs.render("power").files["f"] == b"s" * 5000
    image = fs.render("torn")
    assert image.torn == 1
    # Dirty pages 0, 1 (grown past 5000), 2, 3, 4: pages 0 and 1 land, 2-4 do not.
    want = bytearray(b"s" * 5000 + bytes(5 * PAGE - 5000))
    want[100:300] = b"n" * 200
    assert image.files["f"] == bytes(want)
    fs2 = FaultFS(folder=folder, sync=False)  # everything in the folder durable
    assert fs2.render("torn").files == {"f": (tmp_path / "f").read_bytes()}
    assert fs2.render("torn").torn == 0


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
        assert_every_index_has_its_data(sub)
        # The staged copy was complete: the reader finishes moving it into place (if the
        # crash left anything to do) and reads step 2.
        assert read_step(os.path.join(sub, "model")) == 2
        assert not find_staged(os.path.join(sub, "model"))
