"""One writer per checkpoint folder: an advisory lock file naming its holder.

Two managers saving into one folder delete each other's checkpoints and race on the
state file (TF#34234). The first writer takes `flock` on `<folder>/.trackpoint-writer.lock`
and records its pid, host and start time there; a second writer, in this process or
another, gets `ConcurrentWriterError` naming the holder. The kernel drops a `flock` when
its process dies, so a lock left by a killed process is taken over without guessing from
pids; the file's stale contents are simply rewritten. TensorFlow ignores the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

from trackpoint.errors import ConcurrentWriterError

try:
    import fcntl
except ImportError:  # not POSIX: no locking (documented)
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "WriterLock"]

LOCK_NAME = ".trackpoint-writer.lock"
#: What a holder records is a few dozen bytes; never read more than this.
_MAX_HOLDER_BYTES = 4096


class WriterLock:
    """The writer lock of one folder, held from `acquire()` until `release()`.

    Args:
        folder: The checkpoint folder.
        owner: What holds it, for the other writer's message ("CheckpointManager 'ckpt'").
    """

    def __init__(self, folder: str, owner: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder or ".", LOCK_NAME)
        self.owner = owner
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise naming who holds it.

        Raises:
            ConcurrentWriterError: another writer holds it.
            OSError: the folder cannot hold the lock file (read-only, missing).
        """
        if self._fd is not None or fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # Until `self._fd` records it, the descriptor is closed on any way out (closing
            # drops the flock): a KeyboardInterrupt between the flock and that record would
            # otherwise leave the folder locked by a descriptor nobody will release.
            try:
                if self._lock_and_record(fd):
                    self._fd = fd
                    return
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._busy(holder) from None
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _lock_and_record(self, fd: int) -> bool:
        """Lock the open lock file and write this holder into it; False: the file was replaced.

        Raises:
            BlockingIOError: another writer holds it.
        """
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A holder releasing deletes the file; if that happened between our open and our
        # flock, we locked a file nobody else will see: start again.
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                return False
        except FileNotFoundError:
            return False
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "owner": self.owner,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return True

    def release(self) -> None:
        """Give the lock up (deleting the file while still holding it); idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def _busy(self, holder: dict[str, Any]) -> ConcurrentWriterError:
        pid = holder.get("pid") if isinstance(holder.get("pid"), int) else None
        host = holder.get("host") if isinstance(holder.get("host"), str) else None
        who = str(holder.get("owner") or "another writer")
        if pid == os.getpid() and host == socket.gethostname():
            where = "in this process"
        elif pid is not None:
            where = f"in process {pid} on host {host or '?'}"
        else:
            where = "in another process"
        since = f" since {holder['since']}" if isinstance(holder.get("since"), str) else ""
        return ConcurrentWriterError(
            f"'{self.folder}' is being saved into by {who} {where}{since}; two writers in "
            "one folder would delete each other's checkpoints. Save into another folder, "
            "or close the other writer first (manager.close(), or end that process)",
            file=self.path,
            pid=pid,
            host=host,
        )


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, _MAX_HOLDER_BYTES, 0)
        holder = json.loads(raw.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
