"""The `checkpoint` state file: a text-format `CheckpointState` naming a folder's latest checkpoint.

Reading follows TF (relative paths are joined to the file's folder) but keeps a folder's
checkpoints in the folder, where TF follows any path the file names (TF format doc §1.3): a
path that leads out of the folder (`../other/ckpt-1`, or an absolute path elsewhere, as TF1
writes them) is read as the checkpoint of the same name beside the state file. That is what
a moved or copied run folder needs (`cp -r run1 run2` must not read run1's files), and a
state file cannot point a reader at files the folder's owner never wrote. Unlike TF, a
state file that cannot be parsed, or names a path no file can have (a NUL byte), is an
error, never "no checkpoint".

Writing follows TF's layout (the same text format, relative paths for checkpoints in the
same folder) via a temporary file renamed over the old one.

Knows files and paths, not tensors.
"""

from __future__ import annotations

import os
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import text_format

from trackpoint import storage
from trackpoint import storage as _storage
from trackpoint._stack import user_stacklevel
from trackpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    TrackpointError,
    TrackpointWarning,
)

from ._commit import finish_interrupted_overwrite
from ._names import INDEX_SUFFIX, STAGING_MARK, STATE_FILENAME, TEMP_MARK, index_file_name
from ._reader import BundleReader
from .protos import checkpoint_state_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trackpoint._typing import PathLike

# A state file lists a few prefixes; anything this large is not one.
_MAX_STATE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """A parsed `checkpoint` file, with every path resolved as trackpoint would open it.

    Attributes:
        model_checkpoint_path: The latest checkpoint's prefix.
        all_model_checkpoint_paths: Prefixes still kept, oldest first (latest last).
        all_model_checkpoint_timestamps: Seconds since the epoch, parallel to the paths
            (empty when the writer kept none, as `Checkpoint.save` does).
        last_preserved_timestamp: The manager's bookkeeping, or None.
        raw_model_checkpoint_path: `model_checkpoint_path` exactly as the file has it.
    """

    model_checkpoint_path: str
    all_model_checkpoint_paths: tuple[str, ...]
    all_model_checkpoint_timestamps: tuple[float, ...]
    last_preserved_timestamp: float | None
    raw_model_checkpoint_path: str


def is_outside(folder: str, path: str) -> bool:
    """Whether the state file of `folder` naming `path` names a place outside `folder`.

    Lexical (no symlink is followed): `sub/ckpt-1` is inside, `../x/ckpt-1` and an
    absolute path into another folder are not.

    Example:
        >>> is_outside("runs/a", "ckpt-1"), is_outside("runs/a", "../b/ckpt-1")
        (False, True)
    """
    top = os.path.abspath(folder or ".")
    where = os.path.abspath(os.path.join(top, path))
    return os.path.commonpath([top, where]) != top


def _resolve(folder: str, path: str) -> str:
    if is_outside(folder, path):
        # A moved or copied folder (TF1 writes absolute paths of the machine that saved,
        # which dangle, or worse point at the stale original), or a hostile file: the
        # folder's own checkpoint of that name, whether or not it exists.
        return os.path.join(folder, os.path.basename(os.path.normpath(path)))
    return path if os.path.isabs(path) else os.path.join(folder, path)


def read_checkpoint_state(
    folder: PathLike, *, filename: str = STATE_FILENAME
) -> CheckpointState | None:
    """Read `folder/checkpoint`; None when the folder has no state file.

    Raises:
        CorruptCheckpointError: the file exists but cannot be parsed, or names no checkpoint.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_checkpoint_state(folder, folder + "/ckpt-2", [folder + "/ckpt-2"])
        >>> read_checkpoint_state(folder).raw_model_checkpoint_path
        'ckpt-2'
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, filename)
    hint = (
        "fix or delete it; `trackpoint inspect` on the folder lists the checkpoints it holds, "
        "and any of them can be passed as a prefix"
    )
    try:
        # The storage opens non-blocking, then fstats: a FIFO swapped in after a stat
        # could otherwise block the open; a folder or device is no state file either.
        handle = storage.current().open_read(path)
    except FileNotFoundError:
        return None
    except storage.NotRegularFileError:
        raise CorruptCheckpointError(
            f"'{path}' is not a regular file, so it cannot be a checkpoint state file; remove it",
            file=path,
        ) from None
    try:
        if handle.size > _MAX_STATE_BYTES:
            # Refused by its size before a byte is read, so a huge file costs no memory.
            raise CorruptCheckpointError(
                f"state file '{path}' is too large to be one ({handle.size} bytes); {hint}",
                file=path,
            )
        raw = handle.read(0, _MAX_STATE_BYTES + 1)
    finally:
        handle.close()
    if len(raw) > _MAX_STATE_BYTES:  # it grew after the fstat
        raise CorruptCheckpointError(
            f"state file '{path}' is too large to be one; {hint}", file=path
        )
    state = checkpoint_state_pb2.CheckpointState()
    try:
        text_format.Parse(raw.decode("utf-8"), state)
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(
            f"state file '{path}' cannot be parsed ({err}); {hint}", file=path
        ) from err
    if not state.model_checkpoint_path:
        raise CorruptCheckpointError(
            f"state file '{path}' names no latest checkpoint (model_checkpoint_path is empty); "
            f"{hint}",
            file=path,
        )
    for named in (state.model_checkpoint_path, *state.all_model_checkpoint_paths):
        if "\x00" in named:
            # No file can have such a name; the OS refuses it (`embedded null byte`).
            raise CorruptCheckpointError(
                f"state file '{path}' names {named!r}, a path holding a NUL byte, which no "
                f"checkpoint can have; {hint}",
                file=path,
            )
    return CheckpointState(
        model_checkpoint_path=_resolve(folder, state.model_checkpoint_path),
        all_model_checkpoint_paths=tuple(
            _resolve(folder, p) for p in state.all_model_checkpoint_paths
        ),
        all_model_checkpoint_timestamps=tuple(state.all_model_checkpoint_timestamps),
        # proto3: an unset timestamp reads as 0.0, which no manager writes.
        last_preserved_timestamp=state.last_preserved_timestamp or None,
        raw_model_checkpoint_path=state.model_checkpoint_path,
    )


def _relative_if_inside(folder: str, path: str) -> str:
    path = os.fspath(path)
    absolute_folder = os.path.abspath(folder)
    if os.path.dirname(os.path.abspath(path)) == absolute_folder:
        return os.path.basename(path)
    # Readers join relative paths to the state file's folder, not to our working directory.
    return os.path.abspath(path)


def write_checkpoint_state(
    folder: PathLike,
    model_checkpoint_path: PathLike,
    all_model_checkpoint_paths: Sequence[PathLike] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    filename: str = STATE_FILENAME,
    durable: bool = False,
) -> None:
    """Atomically replace `folder/checkpoint` (temp file, then rename, as TF does).

    Prefixes inside `folder` are written relative to it, so the folder can be moved.

    Args:
        folder: The checkpoint folder.
        model_checkpoint_path: The latest prefix.
        all_model_checkpoint_paths: Kept prefixes, oldest first; defaults to the latest only.
        all_model_checkpoint_timestamps: Seconds since the epoch, parallel to the paths.
        last_preserved_timestamp: A manager's bookkeeping (TF's meaning).
        filename: The state file's name.
        durable: fsync the file and the folder before returning.

    Raises:
        SaveError: the file system failed (the old state file is intact unless only the
            folder's fsync after the rename failed).
    """
    folder = os.fspath(folder)
    latest = _relative_if_inside(folder, os.fspath(model_checkpoint_path))
    paths = (
        [latest]
        if all_model_checkpoint_paths is None
        else [_relative_if_inside(folder, os.fspath(p)) for p in all_model_checkpoint_paths]
    )
    if all_model_checkpoint_timestamps is not None and len(all_model_checkpoint_timestamps) != len(
        paths
    ):
        raise ValueError("all_model_checkpoint_timestamps must be parallel to the paths")
    state = checkpoint_state_pb2.CheckpointState(
        model_checkpoint_path=latest,
        all_model_checkpoint_paths=paths,
        all_model_checkpoint_timestamps=list(all_model_checkpoint_timestamps or ()),
    )
    if last_preserved_timestamp is not None:
        state.last_preserved_timestamp = last_preserved_timestamp
    text = text_format.MessageToString(state, as_utf8=True)
    store = _storage.current()
    final = os.path.join(folder, filename)
    # The commit point of a save: temp file, fsync, rename, fsync of the folder (durable).
    try:
        store.makedirs(folder or ".")
        store.write_file(final, text.encode("utf-8"), durable=durable, token=secrets.token_hex(8))
    except OSError as err:
        raise _storage.save_error(err, "writing the state file", final) from None


def latest_checkpoint(folder: PathLike, *, filename: str = STATE_FILENAME) -> str | None:
    """The prefix of the latest checkpoint in `folder`, or None when it has none.

    "No checkpoint" and "cannot read the checkpoints" never look alike (TF returns None
    for both, and training silently starts over): an unreadable state file raises; a
    state file naming a checkpoint whose index is gone, or no state file beside
    checkpoint files, gives the newest complete checkpoint found in the folder, with a
    `TrackpointWarning`. None means the folder holds no checkpoint at all.

    Only checkpoints inside `folder` are returned (unlike TF): a state file naming one
    elsewhere (`../other/ckpt-3`, an absolute path into another folder) gives the
    checkpoint of that name in `folder`; when there is none, the path is ignored with a
    `TrackpointWarning` and the folder is scanned as if it had no state file.

    Raises:
        CorruptCheckpointError: the state file exists but cannot be read.
        CheckpointNotFoundError: the state file names a checkpoint that is gone and the
            folder has no other complete one.
    """
    folder = os.fspath(folder)
    state = read_checkpoint_state(folder, filename=filename)
    if state is not None:
        named = state.model_checkpoint_path
        if _has_index(named):
            return named
        listed = [p for p in reversed(state.all_model_checkpoint_paths) if p != named]
        found = _newest_complete(folder, first=listed)
        raw = state.raw_model_checkpoint_path
        if is_outside(folder, raw):
            # Not followed (a divergence from TF): treated as no state file, loudly.
            using = (
                f"using '{os.path.basename(found)}', the newest complete checkpoint in it"
                if found is not None
                else "the folder holds no checkpoint"
            )
            warnings.warn(
                f"the state file '{os.path.join(folder, filename)}' names '{raw}', outside "
                f"'{folder}', and the folder has no '{os.path.basename(named)}'; that path is "
                f"ignored (trackpoint reads only the folder's own checkpoints): {using}",
                TrackpointWarning,
                stacklevel=user_stacklevel(),
            )
            return found
        if found is None:
            raise CheckpointNotFoundError(
                f"the state file '{os.path.join(folder, filename)}' names '{named}', whose "
                "files are gone, and the folder holds no other complete checkpoint; restore "
                "from a copy, or delete the state file to start afresh",
                file=os.path.join(folder, filename),
            )
        warnings.warn(
            f"the latest checkpoint recorded in '{folder}' ('{os.path.basename(named)}') is "
            f"missing; using '{os.path.basename(found)}', the newest complete one found",
            TrackpointWarning,
            stacklevel=user_stacklevel(),
        )
        return found
    found = _newest_complete(folder, first=[])
    if found is not None:
        warnings.warn(
            f"'{folder}' has no state file ('{filename}') but holds checkpoints; using "
            f"'{os.path.basename(found)}', the newest complete one found",
            TrackpointWarning,
            stacklevel=user_stacklevel(),
        )
    return found


def _has_index(prefix: str) -> bool:
    store = storage.current()
    if store.exists(index_file_name(prefix)):
        return True
    # A save over this prefix interrupted before its index was moved into place.
    finish_interrupted_overwrite(prefix)
    return store.exists(index_file_name(prefix))


_NUMBERED = re.compile(r"(.*)-(\d+)")


def _newest_complete(folder: str, *, first: Sequence[str]) -> str | None:
    """The newest complete checkpoint: of `first` in order, else any in `folder`.

    Newest by the manager's number (`ckpt-12` after `ckpt-9`), then by the index's time.
    Complete: the index reads and every data file holds the bytes it names.
    """
    for prefix in first:
        if is_complete(prefix):
            return prefix
    store = storage.current()
    try:
        entries = store.list(folder)
    except OSError:
        return None
    candidates = []
    for entry in entries:
        if not entry.endswith(INDEX_SUFFIX) or STAGING_MARK in entry or TEMP_MARK in entry:
            continue
        prefix = os.path.join(folder, entry[: -len(INDEX_SUFFIX)])
        match = _NUMBERED.fullmatch(os.path.basename(prefix))
        number = int(match.group(2)) if match else -1
        try:
            found = store.stat(index_file_name(prefix))
        except OSError:
            continue
        if found is None:
            continue
        candidates.append((number, found.mtime, prefix))
    for _, _, prefix in sorted(candidates, reverse=True):
        if is_complete(prefix):
            return prefix
    return None


def is_complete(prefix: str) -> bool:
    """Whether `prefix`'s index reads and its data files hold every byte it names.

    Cheap: no tensor is read (checksums are `BundleReader.verify`'s job).
    """
    try:
        reader = BundleReader(prefix)
    except (TrackpointError, OSError):
        return False
    with reader:
        return reader.data_files_complete()
