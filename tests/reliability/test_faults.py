"""The fault matrix: every errno a disk gives, at every file-system operation of a save.

A manager with `max_to_keep=2` and two committed checkpoints saves a third in 3 shards
(with a string tensor) under `FaultFS`, which fails one operation with an `OSError`, or
writes only part of a buffer (reliability doc §4.2). For each errno and each operation:

- before the commit point (the state file's rename and the folder's fsync after it), the
  save raises `SaveError` whose message names the file, the errno and what to do; the
  previous checkpoint stays whole and latest;
- after it (deleting the checkpoint beyond `max_to_keep`, recording that), the new
  checkpoint is durable and latest, so the save returns it and warns about what it could
  not delete; a save that moved latest forward never raises (invariants 3 and 4);
- a short write is continued, so the save succeeds; a short write followed by an error
  fails like any error;
- a file whose fsync failed is never put in place and never synced again: the next save
  writes every file anew;
- the next manager on the folder removes what the failure left and saves.

The same for saving over an existing prefix (`write` twice): the prefix then reads as the
old values or the new ones, whole.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

import trackpoint
from trackpoint import storage
from trackpoint.errors import InsufficientSpaceError, SaveError, TrackpointError
from trackpoint.format import BundleReader, find_staged

from .faultfs import FaultFS
from .test_crash_points import LEFTOVER_MARKS, latest, make_state, read_step, set_step

if TYPE_CHECKING:
    from pathlib import Path

OPTIONS = trackpoint.CheckpointOptions(threads=1, num_shards=3)

#: The errnos injected (at every operation index), and a phrase of the fix each message gives.
ERRNOS = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "quota",
    errno.EIO: "i/o error",
    errno.EROFS: "read-only",
    errno.EACCES: "permissions",
    errno.EXDEV: "one file system",
    errno.ENOENT: "folder was removed",
}


@dataclass
class RecordingFS(FaultFS):
    """`FaultFS` that also records renames' sources and can short-write half a buffer.

    Args:
        half: With `fail_at` on a write: write half of that buffer (`short_write` ignored).
        then_fail: After the short write, fail the next write with EIO.
    """

    half: bool = False
    then_fail: bool = False
    renames: list[tuple[int, str, str]] = field(default_factory=list)
    _shorted: bool = False

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        if self._shorted and self.then_fail:
            self.then_fail = False
            self._op("write", self._paths.get(fd, "?"))
            raise self._fail(self._paths.get(fd, "?"))
        if self.half:
            self.short_write = max(1, len(data) // 2)
        before = self._counted
        written = super().pwrite(fd, data, offset)
        if self.fail_at is not None and before < self.fail_at <= self._counted:
            self._shorted = True
        return written

    def replace(self, source: str, target: str) -> None:
        self.renames.append((len(self.ops), source, target))
        super().replace(source, target)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding ckpt-1 and ckpt-2, saved by a manager with max_to_keep=2."""
    folder = str(tmp_path_factory.mktemp("faults") / "template")
    os.makedirs(folder)
    ckpt = make_state(0)
    for step in (1, 2):
        set_step(ckpt, step)
        with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2) as manager:
            manager.save()
    return folder


def _copy(template: str, folder: str) -> str:
    shutil.copytree(template, folder)
    return folder


def _save(folder: str, fs: FaultFS) -> tuple[str | None, BaseException | None, list[str]]:
    """Save step 3 through `fs`; return the prefix, the error, the warnings' texts."""
    ckpt = make_state(-1)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2)
    try:
        assert manager.restore_or_initialize() is not None
        assert int(ckpt.step.numpy()) == 2
        set_step(ckpt, 3)
        with warnings.catch_warnings(record=True) as caught, storage.use(fs):
            warnings.simplefilter("always")
            try:
                path = manager.save(options=OPTIONS)
            except Exception as err:  # noqa: BLE001 - the caller checks its type
                return None, err, [str(w.message) for w in caught]
        return path, None, [str(w.message) for w in caught]
    finally:
        manager.close()


def _commit_point(ops: list[tuple[str, str]]) -> int:
    """The 1-based index of the folder fsync that makes the state file's rename durable."""
    rename = next(i for i, (op, path) in enumerate(ops) if op == "rename" and _is_state(path))
    assert ops[rename + 1][0] == "fsync_dir"
    return rename + 2


def _is_state(path: str) -> bool:
    return os.path.basename(path) == "checkpoint"


def _complete_checkpoints(folder: str) -> list[str]:
    found = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".index") and not any(m in name for m in LEFTOVER_MARKS):
            prefix = os.path.join(folder, name[: -len(".index")])
            with BundleReader(prefix) as reader:
                if all(error is None for _, error in reader.verify()):
                    found.append(prefix)
    return found


def _check_error(err: BaseException | None, code: int, folder: str, where: str) -> None:
    """A `SaveError` with the errno, naming a file of the folder, the errno and the fix."""
    assert isinstance(err, SaveError), f"{where}: expected SaveError, got {err!r}"
    assert isinstance(err, TrackpointError)
    assert err.errno == code, f"{where}: {err}"
    assert err.file is not None, where
    text = str(err)
    assert os.path.abspath(err.file).startswith(os.path.abspath(folder)), f"{where}: {text}"
    name = os.path.basename(err.file) or err.file
    assert f"'{err.file}'" in text or name in text, f"{where}: the file is not named: {text}"
    assert errno.errorcode[code] in text, f"{where}: the errno is not named: {text}"
    assert ERRNOS[code] in text.lower(), f"{where}: no fix for {errno.errorcode[code]}: {text}"


def _check_next_save(folder: str, want_step: int, where: str) -> None:
    """A new manager restores `want_step`, saves, removes what the failure left."""
    ckpt = make_state(-1)
    fs = RecordingFS(folder=folder)
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2) as manager:
        assert manager.restore_or_initialize() is not None, where
        assert int(ckpt.step.numpy()) == want_step, where
        set_step(ckpt, 7)
        with storage.use(fs):
            path = manager.save(options=OPTIONS)
    assert path is not None, where
    assert latest(folder) == path, where
    assert read_step(path) == 7, where
    leftovers = [n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS)]
    assert leftovers == [], f"{where}: {leftovers}"
    # Every file synced by the next save was created by it: nothing failed is re-synced.
    created = {path for op, path in fs.ops if op == "create"}
    for op, synced in fs.ops:
        if op == "fsync":
            assert synced in created, f"{where}: {synced} synced without being written anew"
    complete = _complete_checkpoints(folder)
    assert path in complete, where
    assert len(complete) >= 2, f"{where}: {complete}"


def _check_fsync_failure(fs: RecordingFS, where: str) -> None:
    """The file whose fsync failed was never renamed into place nor synced again."""
    failed_at = _failed_index(fs)
    op, failed = fs.ops[failed_at - 1]
    if op != "fsync":
        return
    assert not os.path.exists(failed), f"{where}: {failed} was left behind"
    for index, source, target in fs.renames:
        assert source != failed, f"{where}: {failed} was renamed to {target} at op {index + 1}"
    for later, path in fs.ops[failed_at:]:
        assert not (later == "fsync" and path == failed), f"{where}: {failed} re-synced"


def _failed_index(fs: FaultFS) -> int:
    """The 1-based index (among all operations) of the operation that failed."""
    counted = 0
    for index, (op, _) in enumerate(fs.ops, 1):
        if fs.fail_ops is None or op in fs.fail_ops:
            counted += 1
            if counted == fs.fail_at:
                return index
    raise AssertionError("no operation failed")


def _count_ops(template: str, tmp_path: Path) -> list[tuple[str, str]]:
    folder = _copy(template, str(tmp_path / "count"))
    fs = RecordingFS(folder=folder)
    path, err, caught = _save(folder, fs)
    assert err is None
    assert caught == []
    assert path is not None
    return list(fs.ops)


@pytest.mark.parametrize("code", list(ERRNOS), ids=lambda c: errno.errorcode[c])
def test_an_error_at_every_operation_of_a_manager_save_loses_nothing(code, template, tmp_path):
    ops = _count_ops(template, tmp_path)
    assert len(ops) >= 30  # 3 shards + index + 2 state writes + a deletion
    commit = _commit_point(ops)
    for fail_at in range(1, len(ops) + 1):
        where = f"{errno.errorcode[code]} at operation {fail_at}/{len(ops)} {ops[fail_at - 1]}"
        folder = _copy(template, str(tmp_path / f"at{fail_at}"))
        fs = RecordingFS(folder=folder, fail_at=fail_at, fail_errno=code)
        path, err, caught = _save(folder, fs)
        if fail_at <= commit:
            # Not committed: the save failed, step 2 is whole and latest.
            assert path is None, f"{where}: the save returned {path}"
            _check_error(err, code, folder, where)
            assert caught == [], f"{where}: {caught}"
            assert read_step(latest(folder) or "") == 2, where
            _check_fsync_failure(fs, where)
            want = 2
        else:
            # Committed: step 3 is durable and latest; what failed after is a warning.
            assert err is None, f"{where}: the save raised after its commit: {err!r}"
            assert path is not None, where
            assert latest(folder) == path, where
            assert read_step(path) == 3, where
            if code == errno.ENOENT and ops[fail_at - 1][0] == "unlink":
                assert caught == [], where  # a file already gone counts as deleted
            else:
                assert len(caught) == 1, f"{where}: {caught}"
                assert errno.errorcode[code] in caught[0], f"{where}: {caught[0]}"
            want = 3
        assert read_step(os.path.join(folder, "ckpt-2")) == 2, where
        _check_next_save(folder, want, where)


def test_the_failing_manager_itself_saves_again(template, tmp_path):
    ops = _count_ops(template, tmp_path)
    for fail_at in range(1, _commit_point(ops) + 1):
        where = f"EIO at operation {fail_at} {ops[fail_at - 1]}"
        folder = _copy(template, str(tmp_path / f"again{fail_at}"))
        ckpt = make_state(-1)
        with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2) as manager:
            manager.restore_or_initialize()
            set_step(ckpt, 3)
            fs = RecordingFS(folder=folder, fail_at=fail_at, fail_errno=errno.EIO)
            with pytest.raises(SaveError), storage.use(fs):
                manager.save(options=OPTIONS)
            assert manager.latest_checkpoint == os.path.join(folder, "ckpt-2"), where
            assert int(ckpt.save_counter.numpy()) == 2, where  # the number is given back
            path = manager.save(options=OPTIONS)
            assert path == os.path.join(folder, "ckpt-3"), where
            assert manager.checkpoints == [os.path.join(folder, "ckpt-2"), path], where
        assert latest(folder) == path, where
        assert read_step(path) == 3, where
        leftovers = [n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS)]
        assert leftovers == [], f"{where}: {leftovers}"


WRITES = ("write",)


@pytest.mark.parametrize(
    "variant",
    ["one-byte", "half", "half-then-EIO"],
)
def test_a_short_write_at_every_write_is_continued_or_fails_cleanly(variant, template, tmp_path):
    ops = _count_ops(template, tmp_path)
    writes = sum(op == "write" for op, _ in ops)
    assert writes >= 5  # 3 shards (one may be all string bytes), the index, 2 state files
    for nth in range(1, writes + 1):
        where = f"{variant} short write at write {nth}/{writes}"
        folder = _copy(template, str(tmp_path / f"w{nth}"))
        fs = RecordingFS(
            folder=folder,
            fail_at=nth,
            fail_ops=WRITES,
            fail_errno=errno.EIO,
            short_write=1,
            half=variant != "one-byte",
            then_fail=variant == "half-then-EIO",
        )
        path, err, caught = _save(folder, fs)
        shorted = [op for op in fs.ops if op[0] == "write"]
        if variant != "half-then-EIO":
            assert err is None, f"{where}: {err!r}"
            assert caught == [], where
            # The short write was continued: one more write call than without it.
            assert len(shorted) == writes + 1, where
            assert path is not None, where
            assert latest(folder) == path, where
            assert read_step(path) == 3, where
            want = 3
        else:
            failed = [op for op in ops if op[0] == "write"][nth - 1]
            committed = ops.index(failed) + 1 > _commit_point(ops)
            if committed:
                assert err is None, f"{where}: {err!r}"
                assert path is not None, where
                assert len(caught) == 1, f"{where}: {caught}"
                assert "EIO" in caught[0], f"{where}: {caught}"
                want = 3
            else:
                _check_error(err, errno.EIO, folder, where)
                assert read_step(latest(folder) or "") == 2, where
                want = 2
        _check_next_save(folder, want, where)


def test_the_free_space_preflight_refuses_before_creating_anything(template, tmp_path):
    class SmallDisk(RecordingFS):
        def free_bytes(self, path: str) -> int | None:
            return 4096

    folder = _copy(template, str(tmp_path / "small"))
    fs = SmallDisk(folder=folder)
    path, err, caught = _save(folder, fs)
    assert path is None
    assert caught == []
    assert isinstance(err, InsufficientSpaceError)
    assert isinstance(err, SaveError)
    assert err.errno == errno.ENOSPC
    assert err.available == 4096
    assert err.needed > err.available
    assert "free space" in str(err)
    assert "MiB" in str(err)
    assert [op for op, _ in fs.ops if op != "mkdir"] == []  # refused before any create
    assert read_step(latest(folder) or "") == 2
    assert sorted(os.listdir(folder)) == sorted(os.listdir(template))
    _check_next_save(folder, 2, "after the preflight")


# -- saving over an existing prefix ---------------------------------------------------------


def _overwrite(folder: str, fs: FaultFS | None) -> BaseException | None:
    ckpt = make_state(2)
    prefix = os.path.join(folder, "model")
    try:
        if fs is None:
            ckpt.write(prefix, OPTIONS)
        else:
            with storage.use(fs):
                ckpt.write(prefix, OPTIONS)
    except Exception as err:  # noqa: BLE001 - the caller checks its type
        return err
    return None


@pytest.mark.parametrize("code", list(ERRNOS), ids=lambda c: errno.errorcode[c])
def test_an_error_at_every_operation_of_an_overwrite_leaves_old_or_new_whole(code, tmp_path):
    template = str(tmp_path / "template")
    os.makedirs(template)
    make_state(1).write(os.path.join(template, "model"))  # 1 shard: the overwrite has 3
    count = RecordingFS(folder=_copy(template, str(tmp_path / "count")))
    assert _overwrite(count.folder, count) is None
    total = len(count.ops)
    assert total >= 20
    for fail_at in range(1, total + 1):
        where = f"{errno.errorcode[code]} at operation {fail_at}/{total} {count.ops[fail_at - 1]}"
        folder = _copy(template, str(tmp_path / f"at{fail_at}"))
        fs = RecordingFS(folder=folder, fail_at=fail_at, fail_errno=code)
        err = _overwrite(folder, fs)
        prefix = os.path.join(folder, "model")
        got = read_step(prefix)
        if err is None:
            assert got == 2, f"{where}: write returned, the prefix holds step {got}"
        else:
            _check_error(err, code, folder, where)
            assert got in (1, 2), where
        _check_fsync_failure(fs, where)
        # The next write replaces it and leaves nothing behind.
        ckpt = make_state(5)
        ckpt.write(prefix, OPTIONS)
        assert read_step(prefix) == 5, where
        assert not find_staged(prefix), where
        leftovers = [n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS)]
        assert leftovers == [], f"{where}: {leftovers}"
