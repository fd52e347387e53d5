"""A fault-injecting `Storage` for tests: fail the Nth operation, or crash after N of them.

Modelled on RocksDB's FaultInjectionTestFS and SQLite's test6.c (reliability doc §4.0):
every file-system operation a save makes is numbered; the storage can make operation N
raise any `OSError`, write only part of its buffer, or "crash" the process there (every
later operation raises `Crash`, in every thread). After a crash, `render` gives what the
disk could hold, and `materialize` makes the folder hold it:

- "process": a process crash; everything written reached the page cache, so the folder
  stays as it is.
- "power": a power loss. File data not fsynced is lost: a file shows what its last fsync
  made durable (nothing, for a file never synced). Of the creations, renames and deletions
  made in the folder since its last fsync, the first `kept` survive (0: none, the folder
  as of that fsync).
- "torn": as "power", but each file's unsynced writes land partly, as writeback leaves
  them: its size is the size it had (an allocating or extending write updates the size
  before the data lands, as XFS shows it; `posix_fallocate` counts), the first half of its
  dirty 4 KiB pages (by offset) hold the new bytes, the others what the last fsync left
  there, zeros past that. Under the commit protocol every file is synced before its name
  is, so this can only reach a file whose creation survived while its data did not (a
  temp file, with `kept` > 0), or a file a broken protocol renamed unsynced.

Why a prefix of the folder's operations, not any subset: ext4 (data=ordered, the default)
and XFS log metadata operations in the order they are made; a journal transaction holds a
run of consecutive operations, and transactions reach the disk in order. So after a power
loss the folder shows its entries as of its last fsync plus some prefix of the operations
made since. (ext4 commits the whole journal at any fsync, even a file's; the model is
harsher and counts only the folder's.) POSIX promises less, and the commit protocol relies
on this order in two places with no folder fsync between: a bundle's data renames before
its index rename, and `roll_forward`'s deletion of the old index before the staged files'
renames. A file system that reordered them would need a folder fsync at each.

`STATS` counts, over the process, the torn files and the partial-rename states written
into folders to be checked (the test summary prints them).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass, field

from trackpoint.storage import Storage

DISKS = ("process", "power", "torn")
PAGE = 4096


class Crash(BaseException):
    """The simulated process died at this operation (BaseException: no handler catches it)."""


@dataclass
class HarnessStats:
    """How often the disk models changed what a check saw (over the whole test process).

    Attributes:
        tears: Files a torn disk showed partly written (different from the power disk).
        partial_renames: Disks showing some, not all, of the folder operations made since
            its last fsync.
        disks: Disks written into folders for a check.
    """

    tears: int = 0
    partial_renames: int = 0
    disks: int = 0


STATS = HarnessStats()


@dataclass
class _Write:
    file: int  # the file's identity (see FaultFS._ids)
    offset: int
    data: bytes


@dataclass(frozen=True)
class _FolderOp:
    """A creation, rename or deletion in the folder, not yet made durable by its fsync."""

    kind: str  # "create", "rename" or "unlink"
    name: str  # the name created, renamed to, or deleted
    file: int = 0  # the file given that name (create, rename)
    source: str | None = None  # rename: the old name (None: from outside the folder)


@dataclass(frozen=True)
class DiskImage:
    """The regular files of the folder as one disk would show them after the crash.

    Attributes:
        disk: "process", "power" or "torn".
        kept: How many of the pending folder operations survived.
        pending: How many folder operations were pending (made since the folder's fsync).
        files: Name -> contents.
        torn: How many of the files the torn disk showed partly written.
    """

    disk: str
    kept: int
    pending: int
    files: dict[str, bytes]
    torn: int

    @property
    def partial(self) -> bool:
        """Whether some, not all, of the pending folder operations survived."""
        return self.disk != "process" and 0 < self.kept < self.pending

    def key(self) -> frozenset[tuple[str, bytes]]:
        """The image's contents, to skip checking one disk twice."""
        return frozenset(self.files.items())

    def write(self, folder: str) -> None:
        """Make `folder`'s regular files exactly these (other entries stay), and count it."""
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
        for name, data in self.files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        STATS.disks += 1
        STATS.tears += self.torn
        STATS.partial_renames += self.partial


class NoSyncStorage(Storage):
    """The local file system without fsyncs, for the saves around a simulated crash.

    The set-up before a crash and the checks after it are not under test for durability
    (the disk model decides what survives), and real fsyncs would make them slow.
    """

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


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
        sync: Make fsyncs real too (the model does not need them: what survives a power
            loss is what the model says, whatever the disk did).
        unhonoured: Fsyncs (operation numbers, 1-based) that happen but make nothing
            durable, as if the protocol lacked them: to show a check catches that (for
            saves on one thread, whose operations are numbered the same in every run).
    """

    folder: str
    fail_at: int | None = None
    fail_errno: int = errno.EIO
    fail_ops: tuple[str, ...] | None = None
    short_write: int | None = None
    crash_after: int | None = None
    sync: bool = True
    unhonoured: frozenset[int] = frozenset()
    ops: list[tuple[str, str]] = field(default_factory=list)
    crashed: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}
        self._counted = 0  # operations counted for fail_at (those named in fail_ops)
        # The durability model: file contents as of their last fsync, the folder's entries
        # as of its last fsync (name -> file) and the folder operations since, in order.
        # Files are identified by a number given at creation and carried through renames,
        # not by inode: the kernel hands a deleted file's inode to the next file created.
        self._ids: dict[str, int] = {}  # the folder's names now -> file
        self._fd_ids: dict[int, int] = {}
        self._next_id = 0
        self._durable_data: dict[int, bytes] = {}
        self._durable_names: dict[str, int] = {}
        self._pending: list[_FolderOp] = []
        self._unsynced: dict[int, list[_Write]] = {}
        self._sizes: dict[int, int] = {}  # each file's size now (writes and preallocation)
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                file = self._ids[name] = self._new_id()
                with open(path, "rb") as f:
                    self._durable_data[file] = f.read()
                self._sizes[file] = len(self._durable_data[file])
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

    @property
    def pending_folder_ops(self) -> int:
        """Creations, renames and deletions in the folder since its last fsync."""
        return len(self._pending)

    # -- the operations -------------------------------------------------------------------

    def create(self, path: str) -> int:
        if self._op("create", path):
            raise self._fail(path)
        fd = super().create(path)
        self._paths[fd] = path
        with self._lock:
            file = self._new_id()
            self._fd_ids[fd] = file
            self._sizes[file] = 0
            if self._in_folder(path):
                name = os.path.basename(path)
                self._ids[name] = file
                self._pending.append(_FolderOp("create", name, file))
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
            end = offset + written
            self._sizes[record.file] = max(self._sizes.get(record.file, 0), end)
        return written

    def preallocate(self, fd: int, size: int) -> None:
        path = self._paths.get(fd, "?")
        if self._op("preallocate", path):
            raise self._fail(path)
        super().preallocate(fd, size)
        with self._lock:
            file = self._fd_ids.get(fd, -1)
            self._sizes[file] = max(self._sizes.get(file, 0), size)

    def fsync(self, fd: int) -> None:
        path = self._paths.get(fd, "?")
        if self._op("fsync", path):
            raise self._fail(path)
        if self.sync:
            super().fsync(fd)
        if len(self.ops) in self.unhonoured:
            return
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read()
        with self._lock:
            file = self._fd_ids.get(fd, -1)
            self._durable_data[file] = data
            self._sizes[file] = len(data)
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
            file = None
            if self._in_folder(source):
                name = os.path.basename(source)
                file = self._ids.pop(name, None)
                if not self._in_folder(target):
                    self._pending.append(_FolderOp("unlink", name))
            if self._in_folder(target):
                old_name = os.path.basename(source) if file is not None else None
                if file is None:
                    file = self._adopt(target)
                name = os.path.basename(target)
                self._ids[name] = file
                self._pending.append(_FolderOp("rename", name, file, old_name))

    def _adopt(self, path: str) -> int:
        """A file made outside this storage: known from now on, its bytes as they are."""
        file = self._new_id()
        with open(path, "rb") as f:
            data = f.read()
        self._unsynced[file] = [_Write(file, 0, data)]
        self._sizes[file] = len(data)
        return file

    def unlink(self, path: str) -> None:
        if self._op("unlink", path):
            raise self._fail(path)
        super().unlink(path)
        if self._in_folder(path):
            with self._lock:
                name = os.path.basename(path)
                self._ids.pop(name, None)
                self._pending.append(_FolderOp("unlink", name))

    def makedirs(self, path: str) -> None:
        if self._op("mkdir", path):
            raise self._fail(path)
        super().makedirs(path)

    def fsync_dir(self, path: str) -> None:
        if self._op("fsync_dir", path):
            raise self._fail(path)
        if self.sync:
            super().fsync_dir(path)
        if len(self.ops) in self.unhonoured or os.path.abspath(path) != os.path.abspath(
            self.folder
        ):
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
                    self._sizes[file] = len(self._durable_data[file])
                names[name] = file
            self._durable_names = names
            self._pending = []

    def free_bytes(self, path: str) -> int | None:
        return super().free_bytes(path)

    # -- after a crash ----------------------------------------------------------------------

    def kept_choices(self, disk: str) -> range:
        """The `kept` values `render(disk, kept)` takes: each prefix of the pending folder
        operations (the process disk has all of them)."""
        if disk == "process":
            return range(len(self._pending), len(self._pending) + 1)
        return range(len(self._pending) + 1)

    def render(self, disk: str, kept: int = 0) -> DiskImage:
        """The folder's regular files as `disk` would show them, `kept` folder operations
        of those pending surviving (see the module's docstring)."""
        if disk not in DISKS:
            raise ValueError(disk)
        pending = len(self._pending)
        if disk == "process":
            files = {}
            for name in os.listdir(self.folder):
                path = os.path.join(self.folder, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    with open(path, "rb") as f:
                        files[name] = f.read()
            return DiskImage(disk, pending, pending, files, 0)
        if not 0 <= kept <= pending:
            raise ValueError(f"kept={kept}: {pending} folder operations are pending")
        names = dict(self._durable_names)
        for op in self._pending[:kept]:
            if op.source is not None:
                names.pop(op.source, None)
            if op.kind == "unlink":
                names.pop(op.name, None)
            else:
                names[op.name] = op.file
        files = {}
        torn = 0
        for name, file in names.items():
            lost = self._durable_data.get(file, b"")
            data = self._torn(file) if disk == "torn" else lost
            torn += data != lost
            files[name] = data
        return DiskImage(disk, kept, pending, files, torn)

    def materialize(self, disk: str, kept: int = 0) -> DiskImage:
        """Make the folder what `disk` would show after the crash (see `render`)."""
        image = self.render(disk, kept)
        if disk != "process":
            image.write(self.folder)
        else:
            STATS.disks += 1
        return image

    def _torn(self, file: int) -> bytes:
        """`file` with the first half of its dirty pages written back, the rest not."""
        old = self._durable_data.get(file, b"")
        size = max(len(old), self._sizes.get(file, 0))
        writes = self._unsynced.get(file, [])
        new = bytearray(old)
        new.extend(bytes(size - len(new)))
        dirty = set(range(len(old) // PAGE, -(-size // PAGE)))  # the pages the file grew by
        for write in writes:
            if not write.data:
                continue
            end = write.offset + len(write.data)
            if end > len(new):
                new.extend(bytes(end - len(new)))
            new[write.offset : end] = write.data
            dirty.update(range(write.offset // PAGE, (end - 1) // PAGE + 1))
        pages = sorted(dirty)
        for page in pages[len(pages) // 2 :]:
            start, stop = page * PAGE, min((page + 1) * PAGE, len(new))
            if start < stop:
                new[start:stop] = old[start:stop].ljust(stop - start, b"\0")
        return bytes(new)
