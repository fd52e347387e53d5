"""Every exception and warning trackpoint raises.

A message says what happened, where (file, key, object path) and what to do; the facts
are also kept as attributes so that programs need not parse text.

```
TrackpointError(Exception)
├── CheckpointNotFoundError     (+FileNotFoundError)  no checkpoint where one was named
├── IncompleteCheckpointError   (+FileNotFoundError)  a file of the checkpoint is missing
├── CorruptCheckpointError      (+ValueError)   magic, footer, block/tensor crc, offsets
├── UnsupportedCheckpointError  (+ValueError)   newer version, resource/variant dtype
├── UnsupportedLocationError    (+ValueError)   a URL (s3://, gs://): object storage not yet
├── InvalidValueError           (+ValueError)   a bad argument: duplicate key, wrong buffer
├── KeyNotFoundError            (+KeyError)     no tensor under that key
├── MismatchError               (+AssertionError)  raised by status.assert_*
├── ShapeMismatchError, DTypeMismatchError  (+ValueError)  a value does not fit its object
├── NotTrackableError           (+TypeError)    a value trackpoint cannot save
├── AsyncSaveError              a background save failed; raised at sync()/the next save
├── SaveError                   (+OSError)      writing failed (errno kept); nothing lost
│   └── InsufficientSpaceError  the disk cannot hold the checkpoint (checked before writing)
└── ConcurrentWriterError       another manager/process is saving into the same folder
TrackpointWarning(UserWarning) → PartialRestoreWarning
```

The builtin mix-ins keep generic handlers (`except FileNotFoundError`, `except ValueError`)
working.
"""

from __future__ import annotations

__all__ = [
    "AsyncSaveError",
    "CheckpointNotFoundError",
    "ConcurrentWriterError",
    "CorruptCheckpointError",
    "DTypeMismatchError",
    "IncompleteCheckpointError",
    "InsufficientSpaceError",
    "InvalidValueError",
    "KeyNotFoundError",
    "MismatchError",
    "NotTrackableError",
    "PartialRestoreWarning",
    "SaveError",
    "ShapeMismatchError",
    "TrackpointError",
    "TrackpointWarning",
    "UnsupportedCheckpointError",
    "UnsupportedLocationError",
]


class TrackpointError(Exception):
    """Base of every error trackpoint raises.

    Attributes:
        file: The file the error is about, when there is one.
        key: The checkpoint key the error is about, when there is one.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key

    def __str__(self) -> str:
        return self.message


class CheckpointNotFoundError(TrackpointError, FileNotFoundError):
    """No checkpoint exists at the path given.

    Attributes:
        candidates: Prefixes of checkpoints found nearby (for the message's suggestion).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        candidates: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, file=file, key=key)
        self.candidates = candidates


class IncompleteCheckpointError(TrackpointError, FileNotFoundError):
    """A file that belongs to a checkpoint (a data shard, usually) is missing or too short."""


class CorruptCheckpointError(TrackpointError, ValueError):
    """A checkpoint file's bytes are damaged or inconsistent (checksum, structure, sizes)."""


class UnsupportedCheckpointError(TrackpointError, ValueError):
    """The checkpoint is well-formed but holds something trackpoint cannot decode."""


class UnsupportedLocationError(TrackpointError, ValueError):
    """A checkpoint location trackpoint cannot write or read yet: a URL (`s3://`, `gs://`, ...).

    Object storage is designed (docs/storage.md) but not built; until it is, a URL is
    refused by name rather than taken as a local folder called `s3:`. `file://` URLs are
    local paths and are accepted.

    Attributes:
        url: The location given (also `file`).
        scheme: Its scheme (`s3`, `gs`, ...).
    """

    def __init__(self, message: str, *, url: str, scheme: str) -> None:
        super().__init__(message, file=url)
        self.url = url
        self.scheme = scheme


class InvalidValueError(TrackpointError, ValueError):
    """An argument given to trackpoint is invalid (a duplicate key, a buffer that does not fit)."""


class KeyNotFoundError(TrackpointError, KeyError):
    """The checkpoint has no tensor under the key asked for."""


class MismatchError(TrackpointError, AssertionError):
    """A restore did not match the program as asserted (raised by `status.assert_*`).

    Attributes:
        unused_checkpoint_values: Object paths whose checkpoint values were not used.
        unrestored_objects: Object paths in the program that got no value.
    """

    def __init__(
        self,
        message: str,
        *,
        unused_checkpoint_values: tuple[str, ...] = (),
        unrestored_objects: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.unused_checkpoint_values = unused_checkpoint_values
        self.unrestored_objects = unrestored_objects


class ShapeMismatchError(TrackpointError, ValueError):
    """A checkpoint value's shape differs from the object it is restored into."""


class DTypeMismatchError(TrackpointError, ValueError):
    """A checkpoint value's dtype differs from the object it is restored into."""


class NotTrackableError(TrackpointError, TypeError):
    """A value cannot be saved into a checkpoint (unsupported dtype or object)."""


class AsyncSaveError(TrackpointError):
    """A background (`enable_async`) save failed; raised by the next `save` or `sync()`.

    The original error is the `__cause__`. The failed checkpoint was not recorded, so the
    previous one is still the latest.

    Attributes:
        prefix: The prefix whose background save failed (also `file`).
        previous: The checkpoint that stayed the latest, or None.
    """

    def __init__(self, message: str, *, prefix: str, previous: str | None = None) -> None:
        super().__init__(message, file=prefix)
        self.prefix = prefix
        self.previous = previous


class SaveError(TrackpointError, OSError):
    """Writing a checkpoint failed in the file system (a full disk, an I/O error, no permission).

    The message names the file, the cause and what to do. Nothing is lost: the files of
    the failed save are removed and the previous checkpoint is intact and still the latest.

    Attributes:
        errno: The operating system's error number (`errno.ENOSPC`, ...), or None.
        file: The file being written, renamed or synced when it failed.
    """

    def __init__(self, message: str, *, file: str | None = None, errno: int | None = None) -> None:
        super().__init__(message, file=file)
        self.errno = errno


class InsufficientSpaceError(SaveError):
    """The file system has less free space than the checkpoint needs (checked before writing).

    Attributes:
        needed: Bytes the checkpoint needs.
        available: Bytes free for this user.
    """

    def __init__(self, message: str, *, file: str, needed: int, available: int) -> None:
        super().__init__(message, file=file, errno=28)  # ENOSPC
        self.needed = needed
        self.available = available


class ConcurrentWriterError(TrackpointError):
    """Another writer (a manager, a process) holds the folder's writer lock.

    Attributes:
        pid: The holder's process id, when it recorded one.
        host: The holder's host name, when it recorded one.
    """

    def __init__(
        self, message: str, *, file: str, pid: int | None = None, host: str | None = None
    ) -> None:
        super().__init__(message, file=file)
        self.pid = pid
        self.host = host


class TrackpointWarning(UserWarning):
    """Base of every warning trackpoint emits."""


class PartialRestoreWarning(TrackpointWarning):
    """Values in a checkpoint were not used by a restore and `expect_partial()` was not called."""
