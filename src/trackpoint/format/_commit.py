"""Saving over an existing prefix without a window: staged copies and their roll-forward.

Renaming a new bundle's files over an old one's, one by one, leaves moments where the
old `.index` sits beside new data (TF has exactly this window). So a bundle written to a
prefix that already has files is first written whole under a staging prefix beside it,
`<prefix>.tp-staging-<token>` (its own `.index` last: a staging set with an index is
complete), then moved into place by `roll_forward`:

1. the old `<prefix>.index` is deleted (from here the prefix is no checkpoint on its own,
   so nothing reads old index with new data);
2. old data files of another shard count are deleted, then each staged data file is
   renamed to the prefix's name;
3. the staged `.index` is renamed last, and the folder synced.

Every step can be repeated, so a save interrupted anywhere is finished by the next reader
or writer of the prefix (`roll_forward` before reading); an incomplete staging set (no
index yet) is deleted, the old checkpoint untouched. Temporary files of a save carry
`.tp-tmp-`; TensorFlow ignores both kinds of names (`_names` spells them).

Knows file names, not tensors.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from trackpoint import storage as _storage

from ._names import (
    DATA_SUFFIX,
    INDEX_SUFFIX,
    STAGING_MARK,
    TEMP_MARK,
    data_file_name,
    index_file_name,
)

__all__ = [
    "StagedSet",
    "existing_files",
    "find_staged",
    "finish_interrupted_overwrite",
    "fsync_dir",
    "roll_forward",
    "temp_files",
]

_DATA = re.compile(DATA_SUFFIX)


@dataclass(frozen=True, slots=True)
class StagedSet:
    """The files of one staging set of a prefix.

    Attributes:
        prefix: The staging prefix (`<prefix>.tp-staging-<token>`).
        index: Whether its `.index` exists (the set is complete).
        data: Its data files' names (in the folder), with their shard number and count.
    """

    prefix: str
    index: bool
    data: tuple[tuple[str, int, int], ...]


def fsync_dir(folder: str) -> None:
    """Fsync a folder, so that the renames and creations in it survive a power loss."""
    _storage.current().fsync_dir(folder)


def _listdir(folder: str) -> list[str]:
    try:
        return _storage.current().list(folder)
    except FileNotFoundError:
        return []


def existing_files(prefix: str) -> list[str]:
    """The paths of `prefix`'s own files that exist: its `.index` and data files."""
    folder, name = os.path.split(prefix)
    found = []
    for entry in _listdir(folder):
        if not entry.startswith(name):
            continue
        rest = entry[len(name) :]
        if rest == INDEX_SUFFIX or _DATA.fullmatch(rest):
            found.append(os.path.join(folder, entry))
    return sorted(found)


def temp_files(prefix: str) -> list[str]:
    """Temp files of saves of `prefix` (and of its staged copies) that never finished."""
    folder, name = os.path.split(prefix)
    own = (name + ".", name + STAGING_MARK)
    return sorted(
        os.path.join(folder, entry)
        for entry in _listdir(folder)
        if entry.startswith(own) and TEMP_MARK in entry
    )


def find_staged(prefix: str) -> list[StagedSet]:
    """Every staging set of `prefix` in its folder."""
    folder, name = os.path.split(prefix)
    start = name + STAGING_MARK
    groups: dict[str, tuple[bool, list[tuple[str, int, int]]]] = {}
    for entry in _listdir(folder):
        if not entry.startswith(start):
            continue
        rest = entry[len(start) :]
        token, dot, suffix = rest.partition(".")
        if not token or not dot or TEMP_MARK[1:] in suffix:
            continue  # a temp file of the staging save: not part of the set yet
        _, data = groups.setdefault(token, (False, []))
        if "." + suffix == INDEX_SUFFIX:
            groups[token] = (True, data)
            continue
        match = _DATA.fullmatch("." + suffix)
        if match:
            data.append((entry, int(match.group(1)), int(match.group(2))))
    return [
        StagedSet(os.path.join(folder, start + token), has_index, tuple(sorted(data)))
        for token, (has_index, data) in sorted(groups.items())
    ]


def _remove_set(folder: str, staged: StagedSet, store: _storage.Storage) -> None:
    names = [name for name, _, _ in staged.data]
    if staged.index:
        names.append(os.path.basename(index_file_name(staged.prefix)))
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            store.unlink(os.path.join(folder, name))


def finish_interrupted_overwrite(prefix: str) -> bool:
    """Before `prefix` is read: finish moving a complete staged copy of it into place.

    The one repair a read makes, called by every way of reading a checkpoint (its prefix,
    its `.index` or data file, its folder, the folder's state file, `BundleReader`): an
    overwrite of `prefix` interrupted after its staged copy was complete is rolled
    forward, so that nobody reads the old index with new data. A reader that may not
    write (a read-only copy) reads what is there.

    Args:
        prefix: The checkpoint's prefix.

    Returns:
        True when a staged copy was moved into place now.
    """
    if not find_staged(prefix):
        return False
    try:
        return roll_forward(prefix)
    except OSError:
        return False


def roll_forward(prefix: str, *, durable: bool = True, clean: bool = False) -> bool:
    """Finish moving a complete staged bundle into `prefix`.

    Safe to call at any time, by any reader or writer, any number of times.

    Args:
        prefix: The checkpoint prefix.
        durable: Sync the folder after the renames.
        clean: Also delete incomplete and superseded staging sets. Only the prefix's
            writer may (a set without its index may be one it is writing right now).

    Returns:
        True when a staged bundle was moved into place.

    Raises:
        OSError: a rename or deletion failed (the staged bundle stays complete; calling
            again finishes it).
    """
    folder = os.path.dirname(prefix)
    store = _storage.current()
    if clean:
        for path in temp_files(prefix):
            with contextlib.suppress(FileNotFoundError):
                store.unlink(path)
    staged = find_staged(prefix)
    if not staged:
        return False
    complete = [s for s in staged if s.index and _whole(s)]
    chosen = max(complete, key=_index_mtime) if complete else None
    if clean:
        for other in staged:
            if other is not chosen:
                _remove_set(folder, other, store)
    if chosen is None:
        return False
    with contextlib.suppress(FileNotFoundError):
        store.unlink(index_file_name(prefix))
    if chosen.data:
        # The old bundle's shards of another count go before any staged one moves: once
        # every staged data file is renamed, the new count is known only to the index.
        count = chosen.data[0][2]
        keep = {data_file_name(prefix, shard, count) for shard in range(count)}
        for path in existing_files(prefix):
            if path != index_file_name(prefix) and path not in keep:
                with contextlib.suppress(FileNotFoundError):
                    store.unlink(path)
    for entry, shard, num_shards in chosen.data:
        _move(store, os.path.join(folder, entry), data_file_name(prefix, shard, num_shards))
    _move(store, index_file_name(chosen.prefix), index_file_name(prefix))
    if durable:
        store.fsync_dir(folder or ".")
    return True


def _move(store: _storage.Storage, source: str, target: str) -> None:
    """Rename `source` to `target`; a source already gone was moved by an earlier attempt."""
    try:
        store.replace(source, target)
    except FileNotFoundError:
        # Another reader or writer finished this step (now or in an interrupted attempt);
        # a source still present means the rename itself failed.
        if store.exists(source) or not store.exists(target):
            raise


def _whole(staged: StagedSet) -> bool:
    """Whether the staged data files are one complete set (0..N-1 of N), or already moved.

    A set whose index exists was complete when the index was written; files missing
    now were renamed into place by an interrupted roll-forward, which is fine.
    """
    counts = {num for _, _, num in staged.data}
    return len(counts) <= 1


def _index_mtime(staged: StagedSet) -> float:
    try:
        found = _storage.current().stat(index_file_name(staged.prefix))
    except OSError:
        return 0.0
    return 0.0 if found is None else found.mtime
