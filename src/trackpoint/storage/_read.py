"""Reading one file through the storage seam: the local backend's read handle.

The syscalls are the ones the reader used before the seam (reliability rule 12): the
file is opened non-blocking and checked with `fstat`, so a FIFO put in a file's place can
neither block the open nor be read; ranges go with `os.preadv` straight into the caller's
buffer; `map` gives a read-only `mmap`.
"""

from __future__ import annotations

import contextlib
import mmap as _mmap
import os
import stat
from dataclasses import dataclass

__all__ = ["NotRegularFileError", "ReadHandle", "Stat", "open_read", "stat_path"]

#: The most bytes one preadv may return on Linux.
MAX_IO = 0x7FFFF000


@dataclass(frozen=True, slots=True)
class Stat:
    """What `Storage.stat` knows of one path, without opening it.

    Attributes:
        size: Its size in bytes.
        mtime: When it was last modified (seconds since the epoch).
        is_file: Whether it is a regular file (False: a folder, FIFO, device, ...).
        generation: Changes whenever the file is replaced or rewritten; locally
            "inode:mtime_ns:size", on object stores the etag.
    """

    size: int
    mtime: float
    is_file: bool
    generation: str


def stat_path(path: str) -> Stat | None:
    """The local file system's `Stat` of `path` (links followed), or None if it is absent."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Stat(
        st.st_size,
        st.st_mtime,
        stat.S_ISREG(st.st_mode),
        f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}",
    )


class NotRegularFileError(OSError):
    """The path names a folder, FIFO, device or socket, not a regular file."""


class ReadHandle:
    """One open regular file, owned by one reader.

    Attributes:
        path: The file's path.
        size: Its size when it was opened (callers check ranges against it before reading).
    """

    __slots__ = ("_fd", "_map", "path", "size")

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.size = size
        self._fd = fd
        self._map: _mmap.mmap | None = None

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill `buffer` with the file's bytes from `offset`; return how many were read.

        Fewer than `len(buffer)` only when the file ends first (it shrank after it was
        opened); the caller names what is missing.
        """
        done = 0
        while done < len(buffer):
            n = os.preadv(self._fd, [buffer[done : done + MAX_IO]], offset + done)
            if n == 0:
                break
            done += n
        return done

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset` (fewer only where the file ends), as new bytes.

        For whole small files (an index, a state file): one `pread`, no extra copy.
        """
        data = os.pread(self._fd, min(size, MAX_IO), offset)
        if len(data) == size or not data:
            return data
        parts = [data]
        done = len(data)
        while done < size:
            more = os.pread(self._fd, min(size - done, MAX_IO), offset + done)
            if not more:
                break
            parts.append(more)
            done += len(more)
        return b"".join(parts)

    def map(self) -> memoryview | None:
        """A read-only view of the whole file, mapped once (None for an empty file)."""
        if self.size == 0:
            return None
        if self._map is None:
            self._map = _mmap.mmap(self._fd, 0, access=_mmap.ACCESS_READ)
        return memoryview(self._map)

    def close(self) -> None:
        """Close the file; views from `map` stay valid until they are collected."""
        if self._map is not None:
            # Views still alive keep the mapping open; it closes when they go.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # Best effort: the descriptor of a handle that was never closed.
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def open_read(path: str) -> ReadHandle:
    """Open `path` for reading if it is a regular file.

    Raises:
        FileNotFoundError: `path` does not exist.
        NotRegularFileError: it is a folder, FIFO, device or socket.
        OSError: the open itself failed (errno as the system gave it).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise NotRegularFileError(f"'{path}' is a folder, not a regular file") from None
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFileError(f"'{path}' is not a regular file")
    return ReadHandle(path, fd, st.st_size)
