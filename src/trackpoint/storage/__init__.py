"""Every file-system call a save makes, through one interface.

Saving a checkpoint is a protocol of creates, writes, fsyncs, closes, renames and
deletions (reliability doc §5.1). Each of those goes through the `Storage` in use, so that
tests can replace it with one that fails the Nth operation with any errno, or "crashes"
after it and shows what a process crash or a power loss would have left on disk. The
default, `Storage()`, is the local POSIX file system.

Reads do not go through it: a failed read changes nothing on disk.

The lowest layer: knows paths and bytes, nothing of checkpoints.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import threading
from typing import TYPE_CHECKING, Any

from trackpoint.errors import SaveError

from ._lock import LOCK_NAME, WriterLock
from ._read import NotRegularFileError, ReadHandle, Stat, stat_path
from ._read import open_read as _open_read

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "LOCK_NAME",
    "NotRegularFileError",
    "ReadHandle",
    "Stat",
    "Storage",
    "WriterLock",
    "current",
    "save_error",
    "use",
]


class Storage:
    """The local file system, one method per operation a save performs.

    Subclasses (the fault-injecting storage of the tests) override the methods; every
    method may raise `OSError` with the operating system's errno.
    """

    def open_read(self, path: str) -> ReadHandle:
        """Open the regular file `path` for reading (docs/storage.md §2).

        Raises:
            FileNotFoundError: `path` does not exist.
            NotRegularFileError: it is a folder, FIFO, device or socket.
        """
        return _open_read(path)

    def stat(self, path: str) -> Stat | None:
        """Size, time and generation of `path`, or None if it does not exist."""
        return stat_path(path)

    def exists(self, path: str) -> bool:
        """Whether `path` exists (a file or a folder)."""
        return os.path.exists(path)

    def list(self, folder: str) -> list[str]:
        """The names in `folder` ("" is the working folder), unsorted and uncached.

        Raises:
            FileNotFoundError: `folder` does not exist.
        """
        return os.listdir(folder or ".")

    def create(self, path: str) -> int:
        """Create `path` (which must not exist) for writing; return its descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        """Write `data` at `offset`; return how many bytes were written (may be fewer)."""
        return os.pwrite(fd, data, offset)

    def preallocate(self, fd: int, size: int) -> None:
        """Reserve `size` bytes: fewer block allocations, and ENOSPC before writing."""
        if size <= 0:
            return
        fallocate: Any = getattr(os, "posix_fallocate", None)
        if fallocate is not None:
            try:
                fallocate(fd, 0, size)
            except OSError as err:
                if err.errno not in (_errno.EOPNOTSUPP, _errno.EINVAL):
                    raise  # a full disk must fail here; other file systems just cannot
            else:
                return
        os.ftruncate(fd, size)

    def fsync(self, fd: int) -> None:
        """Make the file's data durable."""
        os.fsync(fd)

    def close(self, fd: int) -> None:
        """Close `fd`; its error counts (NFS reports write failures here)."""
        os.close(fd)

    def replace(self, source: str, target: str) -> None:
        """Rename `source` to `target` atomically, replacing `target`."""
        os.replace(source, target)

    def unlink(self, path: str) -> None:
        """Delete the file `path`."""
        os.unlink(path)

    def makedirs(self, path: str) -> None:
        """Create the folder `path` and its parents when missing."""
        os.makedirs(path, exist_ok=True)

    def fsync_dir(self, path: str) -> None:
        """Make the creations, renames and deletions in folder `path` durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def free_bytes(self, path: str) -> int | None:
        """Bytes free for this user in the file system of folder `path` (None: unknown)."""
        try:
            st = os.statvfs(path)
        except (OSError, AttributeError):
            return None
        return st.f_bavail * st.f_frsize

    # -- whole operations built from the ones above ------------------------------------

    def write_all(self, fd: int, data: memoryview | bytes, offset: int) -> None:
        """Write all of `data` at `offset` (a short write is continued, as POSIX allows)."""
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        done = 0
        while done < len(view):
            written = self.pwrite(fd, view[done : done + _MAX_IO], offset + done)
            if written <= 0:
                raise OSError(_errno.EIO, "the file system accepted no bytes")
            done += written

    def write_file(self, path: str, data: bytes, *, durable: bool, token: str) -> None:
        """Replace `path` with `data` atomically: a temp file beside it, then a rename.

        With `durable`, the data is fsynced before the rename and the folder after it, so
        after a power loss `path` holds either the old or the new bytes, whole.
        """
        temp = f"{path}.tp-tmp-{token}"
        fd = self.create(temp)
        try:
            try:
                self.write_all(fd, data, 0)
                if durable:
                    self.fsync(fd)
            finally:
                self.close(fd)
            self.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.unlink(temp)
            raise
        if durable:
            self.fsync_dir(os.path.dirname(path) or ".")


# Linux transfers at most 0x7ffff000 bytes per read/write call.
_MAX_IO = 0x7FFFF000

_lock = threading.Lock()
_current = Storage()


def current() -> Storage:
    """The storage saves use now (the local file system unless a test swapped it)."""
    return _current


@contextlib.contextmanager
def use(storage: Storage) -> Iterator[Storage]:
    """Make every save in the process use `storage` inside the `with` block.

    For tests: process-wide (a background save's thread uses it too), not per thread.
    """
    global _current
    with _lock:
        previous, _current = _current, storage
    try:
        yield storage
    finally:
        with _lock:
            _current = previous


_FIXES = {
    _errno.ENOSPC: "free space on that disk, or save somewhere with room",
    _errno.EDQUOT: "the disk quota is used up: free some of it, or save elsewhere",
    _errno.EROFS: "the file system is read-only: save to a writable folder",
    _errno.EACCES: "check the folder's permissions, or save to a folder you can write",
    _errno.EPERM: "check the folder's permissions, or save to a folder you can write",
    _errno.EIO: "the device reported an I/O error: check the disk (dmesg) and save elsewhere",
    _errno.EXDEV: "the temporary and final files must be on one file system: save to a "
    "local folder",
    _errno.ENOENT: "the folder was removed during the save: recreate it and save again",
    _errno.EFBIG: "the file is larger than the file system or a limit allows "
    "(ulimit -f): raise the limit, or save with more shards",
}


def save_error(err: OSError, action: str, path: str, *, previous: str | None = None) -> SaveError:
    """A `SaveError` for `err`, raised while doing `action` on `path`, saying what to do.

    Args:
        err: The operating system's error.
        action: What was being done, as a verb phrase ("writing", "renaming").
        path: The file it was done to.
        previous: What is still intact ("the previous checkpoint"), for the message.
    """
    code = err.errno
    name = _errno.errorcode.get(code, str(code)) if code is not None else "error"
    reason = err.strerror or str(err)
    fix = _FIXES.get(code or 0, "check the folder and the disk, then save again")
    kept = f"; {previous} is intact" if previous else ""
    message = f"{action} '{path}' failed: {reason} ({name}){kept}; {fix}"
    error = SaveError(message, file=path, errno=code)
    error.__cause__ = err
    return error
