"""A fault-injecting `Storage` for tests: fail the Nth operation, or crash after N of them.

Modelled on RocksDB's FaultInjectionTestFS and SQLite's test6.c (reliability doc §4.0):
every file-system operation a save makes is numbered; the storage can make operation N
raise any `OSError`, write only part of its buffer, or "crash" the process there (every
later operation raises `Crash`, in every thread). After a crash, `materialize` turns the
folder into what the disk would hold:

- "process": a process crash; everything written reached the page cache, so the folder
  stays as it is.
- "power": a power loss; file data not fsynced is lost, and creations, renames and
  deletions after the folder's last fsync are undone.
- "torn": as "power", but the last unsynced write into a file whose name was durable is
  half applied, the rest zeros in 4 KiB units (ext4's writeback pattern).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass, field

from trackpoint.storage import Storage

DISKS = ("process", "power", "torn")


class Crash(BaseException):
    """The simulated process died at this operation (BaseException: no handler catches it)."""


@dataclass
class _Write:
    file: int  # the file's identity (see FaultFS._ids)
    offset: int
    data: bytes


@dataclass
class FaultFS(Storage):
    """The local file system with numbered operations, faults and crashes.

    Args:
        folder: The folder whose files the durability model tracks (its current contents
            count as durable when the storage is made).
        fail_at: Make this operation (1-based) raise `OSError(fail_errno)`.
        fail_errno: The errno of that failure.
        fail_ops: Only operations of these names count for `fail_at` (None: all).
        short_write: With `fail_at` on a write: write only this many bytes, then report
            them (a short write; the caller must continue or fail).
        crash_after: Operations 1..N happen; operation N+1 and every later one raise `Crash`.
    """

    folder: str
    fail_at: int | None = None
    fail_errno: int = errno.EIO
    fail_ops: tuple[str, ...] | None = None
    short_write: int | None = None
    crash_after: int | None = None
    ops: list[tuple[str, str]] = field(default_factory=list)
    crashed: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}
        self._counted = 0  # operations counted for fail_at (those named in fail_ops)
        # The durability model: file contents as of their last fsync and the folder's
        # entries as of its last fsync (name -> file). Files are identified by a number
        # given at creation and carried through renames, not by inode: the kernel hands a
        # deleted file's inode to the next file created.
        self._ids: dict[str, int] = {}  # the folder's names now -> file
        self._fd_ids: dict[int, int] = {}
        self._next_id = 0
        self._durable_data: dict[int, bytes] = {}
        self._durable_names: dict[str, int] = {}
        self._unsynced: dict[int, list[_Write]] = {}
        self._last_write: _Write | None = None
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                file = self._ids[name] = self._new_id()
                with open(path, "rb") as f:
                    self._durable_data[file] = f.read()
        self._durable_names = dict(self._ids)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- bookkeeping --------------------------------------------------------------------

    def _op(self, name: str, path: str) -> bool:
        """Count an operation; raise the crash; return True when it must fail."""
        with self._lock:
            if self.crashed or (self.crash_after is not None and len(self.ops) >= self.crash_after):
                self.crashed = True
                raise Crash(f"simulated crash before {name} {path}")
            self.ops.append((name, path))
            if self.fail_ops is None or name in self.fail_ops:
                self._counted += 1
                return self._counted == self.fail_at
            return False

    def _fail(self, path: str) -> OSError:
        return OSError(self.fail_errno, os.strerror(self.fail_errno), path)

    def _in_folder(self, path: str) -> bool:
        return os.path.dirname(os.path.abspath(path)) == os.path.abspath(self.folder)

    # -- the operations -------------------------------------------------------------------

    def create(self, path: str) -> int:
        if self._op("create", path):
            raise self._fail(path)
        fd = super().create(path)
        self._paths[fd] = path
        with self._lock:
            file = self._new_id()
            self._fd_ids[fd] = file
            if self._in_folder(path):
                self._ids[os.path.basename(path)] = file
        return fd

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        path = self._paths.get(fd, "?")
        failing = self._op("write", path)
        if failing and self.short_write is None:
            raise self._fail(path)
        chunk = bytes(data[: self.short_write]) if failing else bytes(data)
        written = super().pwrite(fd, chunk, offset)
        with self._lock:
            record = _Write(self._fd_ids.get(fd, -1), offset, chunk[:written])
            self._unsynced.setdefault(record.file, []).append(record)
            self._last_write = record
        return written

    def preallocate(self, fd: int, size: int) -> None:
        path = self._paths.get(fd, "?")
        if self._op("preallocate", path):
            raise self._fail(path)
        super().preallocate(fd, size)

    def fsync(self, fd: int) -> None:
        path = self._paths.get(fd, "?")
        if self._op("fsync", path):
            raise self._fail(path)
        super().fsync(fd)
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read()
        with self._lock:
            file = self._fd_ids.get(fd, -1)
            self._durable_data[file] = data
            self._unsynced.pop(file, None)

    def close(self, fd: int) -> None:
        path = self._paths.pop(fd, "?")
        self._fd_ids.pop(fd, None)
        if self._op("close", path):
            super().close(fd)  # the descriptor is gone either way, as with a real close
            raise self._fail(path)
        super().close(fd)

    def replace(self, source: str, target: str) -> None:
        if self._op("rename", target):
            raise self._fail(target)
        super().replace(source, target)
        with self._lock:
            file = (
                self._ids.pop(os.path.basename(source), None) if self._in_folder(source) else None
            )
            if self._in_folder(target):
                if file is None:
                    file = self._adopt(target)
                self._ids[os.path.basename(target)] = file

    def _adopt(self, path: str) -> int:
        """A file made outside this storage: known from now on, its bytes as they are."""
        file = self._new_id()
        with open(path, "rb") as f:
            self._unsynced[file] = [_Write(file, 0, f.read())]
        return file

    def unlink(self, path: str) -> None:
        if self._op("unlink", path):
            raise self._fail(path)
        super().unlink(path)
        if self._in_folder(path):
            with self._lock:
                self._ids.pop(os.path.basename(path), None)

    def makedirs(self, path: str) -> None:
        if self._op("mkdir", path):
            raise self._fail(path)
        super().makedirs(path)

    def fsync_dir(self, path: str) -> None:
        if self._op("fsync_dir", path):
            raise self._fail(path)
        super().fsync_dir(path)
        if os.path.abspath(path) != os.path.abspath(self.folder):
            return
        with self._lock:
            names: dict[str, int] = {}
            for name in os.listdir(self.folder):
                path = os.path.join(self.folder, name)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                file = self._ids.get(name)
                if file is None:  # made outside this storage (a lock file): durable as is
                    file = self._ids[name] = self._new_id()
                    with open(path, "rb") as f:
                        self._durable_data[file] = f.read()
                names[name] = file
            self._durable_names = names

    def free_bytes(self, path: str) -> int | None:
        return super().free_bytes(path)

    # -- after a crash ----------------------------------------------------------------------

    def materialize(self, disk: str) -> None:
        """Make the folder what `disk` ("process", "power", "torn") would show after the crash."""
        if disk == "process":
            return
        if disk not in DISKS:
            raise ValueError(disk)
        image: dict[str, bytes] = {}
        for name, file in self._durable_names.items():
            # Never synced data of a durable name: the file exists, its bytes do not.
            image[name] = self._durable_data.get(file, b"")
        torn = self._last_write if disk == "torn" else None
        if torn is not None and torn.file in self._unsynced:
            for name, file in self._durable_names.items():
                if file == torn.file:
                    image[name] = _tear(image[name], torn)
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
        for name, data in image.items():
            with open(os.path.join(self.folder, name), "wb") as f:
                f.write(data)


def _tear(old: bytes, write: _Write) -> bytes:
    """`old` with the first half of `write` applied and zeros in the 4 KiB units after it."""
    data = bytearray(old)
    end = write.offset + len(write.data)
    if len(data) < end:
        data.extend(bytes(end - len(data)))
    half = len(write.data) // 2
    data[write.offset : write.offset + half] = write.data[:half]
    zero_from = write.offset + half
    zero_to = min(end, (zero_from // 4096 + 1) * 4096)
    data[zero_from:zero_to] = bytes(zero_to - zero_from)
    return bytes(data)
