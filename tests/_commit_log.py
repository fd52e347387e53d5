"""Recording the file operations of a save, to check the commit protocol's order.

`RecordingStorage` goes in through the storage seam (`trackpoint.storage.use`) and logs
each operation after it succeeded; `assert_committed` checks the log against the commit
protocol (reliability doc §5.1): every data file renamed into place before the `.index`
appears; with `durable`, each file fsynced before its rename and the folder fsynced after
the index's rename; a state file only after all of that, and synced the same way.

`SyscallLog` does the same for code that calls `os` directly (`BundleWriter`), by
watching `os.fsync` and `os.replace`.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trackpoint import storage

if TYPE_CHECKING:
    import pytest


@dataclass(frozen=True)
class Op:
    """One file operation that succeeded.

    Attributes:
        kind: "create", "fsync", "close", "replace", "unlink" or "fsync_dir".
        path: The file or folder (for fsync and close: the name the file was created as).
        target: For "replace", the new name.
    """

    kind: str
    path: str
    target: str = ""


class RecordingStorage(storage.Storage):
    """The local file system, logging every operation in the order they completed."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()  # writer threads fsync in parallel

    def _log(self, kind: str, path: str, target: str = "") -> None:
        with self._lock:
            self.ops.append(Op(kind, os.path.abspath(path), target and os.path.abspath(target)))

    def create(self, path: str) -> int:
        fd = super().create(path)
        with self._lock:
            self._names[fd] = path
        self._log("create", path)
        return fd

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self._log("fsync", self._names[fd])

    def close(self, fd: int) -> None:
        super().close(fd)
        with self._lock:
            path = self._names.pop(fd)
        self._log("close", path)

    def replace(self, source: str, target: str) -> None:
        super().replace(source, target)
        self._log("replace", source, target)

    def unlink(self, path: str) -> None:
        super().unlink(path)
        self._log("unlink", path)

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        self._log("fsync_dir", path)


def _at(ops: list[Op], kind: str, path: str) -> list[int]:
    return [i for i, op in enumerate(ops) if op.kind == kind and op.path == path]


def _renamed_to(ops: list[Op], final: str) -> int:
    found = [i for i, op in enumerate(ops) if op.kind == "replace" and op.target == final]
    assert found, f"'{os.path.basename(final)}' was never renamed into place"
    return found[-1]


def _folder_synced_after(ops: list[Op], folder: str, position: int, what: str) -> int:
    later = [i for i in _at(ops, "fsync_dir", folder) if i > position]
    assert later, f"the folder was not fsynced after {what}"
    return later[0]


def assert_committed(
    ops: list[Op],
    prefix: str | os.PathLike[str],
    *,
    num_shards: int,
    durable: bool,
    state_file: str | os.PathLike[str] | None = None,
) -> None:
    """Raise AssertionError unless `ops` saved `prefix` by the commit protocol.

    Args:
        ops: A `RecordingStorage`'s log.
        prefix: The checkpoint saved (its first save: no staged copy).
        num_shards: How many data files it has.
        durable: Whether the save promised durability (fsyncs checked).
        state_file: The state file the save records it in, if any.
    """
    prefix = os.path.abspath(prefix)
    folder = os.path.dirname(prefix)
    data = [f"{prefix}.data-{s:05d}-of-{num_shards:05d}" for s in range(num_shards)]
    index = f"{prefix}.index"
    index_at = _renamed_to(ops, index)
    for final in data:
        at = _renamed_to(ops, final)
        assert at < index_at, (
            f"'{os.path.basename(index)}' appeared before '{os.path.basename(final)}'"
        )
    if durable:
        for final in [*data, index]:
            at = _renamed_to(ops, final)
            temp = ops[at].path
            synced = [i for i in _at(ops, "fsync", temp) if i < at]
            assert synced, f"'{os.path.basename(final)}' was renamed into place unsynced"
        index_synced = _folder_synced_after(ops, folder, index_at, "the index's rename")
    if state_file is None:
        return
    state_file = os.path.abspath(state_file)
    state_at = _renamed_to(ops, state_file)
    assert state_at > index_at, "the state file names the checkpoint before its index exists"
    if durable:
        assert state_at > index_synced, "the state file was renamed before the folder sync"
        temp = ops[state_at].path
        assert [i for i in _at(ops, "fsync", temp) if i < state_at], "state file unsynced"
        _folder_synced_after(ops, folder, state_at, "the state file's rename")


@dataclass(frozen=True)
class Syscall:
    """One `os.fsync` or `os.replace`: for an fsync, the synced file's inode and kind."""

    kind: str  # "fsync" (a file), "fsync_dir" (a folder) or "replace"
    inode: int
    source: str = ""
    target: str = ""


class SyscallLog:
    """Watches `os.fsync` and `os.replace` (for code that bypasses the storage seam).

    An fsync is known by its file's inode, which a rename keeps, so it can be matched to
    the final name afterwards.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Syscall] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            real_fsync(fd)
            st = os.fstat(fd)
            kind = "fsync_dir" if stat.S_ISDIR(st.st_mode) else "fsync"
            self.calls.append(Syscall(kind, st.st_ino))

        def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
            inode = os.stat(source).st_ino
            real_replace(source, target)
            self.calls.append(Syscall("replace", inode, os.fspath(source), os.fspath(target)))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def assert_committed(
        self, prefix: str | os.PathLike[str], *, num_shards: int, durable: bool
    ) -> None:
        """As the module's `assert_committed`, for a bundle written with direct calls."""
        prefix = os.fspath(prefix)
        calls = self.calls
        renames = {c.target: i for i, c in enumerate(calls) if c.kind == "replace"}
        data = [f"{prefix}.data-{s:05d}-of-{num_shards:05d}" for s in range(num_shards)]
        index = f"{prefix}.index"
        for final in [*data, index]:
            assert final in renames, f"'{os.path.basename(final)}' was never renamed into place"
        for final in data:
            assert renames[final] < renames[index], (
                f"'{os.path.basename(index)}' appeared before '{os.path.basename(final)}'"
            )
        if not durable:
            return
        for final in [*data, index]:
            at = renames[final]
            inode = calls[at].inode
            synced = [i for i, c in enumerate(calls[:at]) if c.kind == "fsync" and c.inode == inode]
            assert synced, f"'{os.path.basename(final)}' was renamed into place unsynced"
        folder = os.stat(os.path.dirname(prefix) or ".").st_ino
        assert any(
            c.kind == "fsync_dir" and c.inode == folder for c in calls[renames[index] + 1 :]
        ), "the folder was not fsynced after the index's rename"
