"""Reading after an overwrite was interrupted: every entry point finishes it, then reads it.

An overwrite of a prefix stages the new bundle whole beside it, then moves it into place
(`format/_commit.py`). A crash after the old `.index` was deleted but before the staged one
was renamed leaves a prefix with no index of its own and a complete staged copy: the new
checkpoint, committed but not rolled forward. Whoever reads the prefix next finishes the
move and reads the new values, whichever way the path was given.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pytest

import trackpoint
from trackpoint.format import STAGING_MARK

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

OLD = np.zeros(3, np.float32)
NEW = np.arange(3, dtype=np.float32)


def _interrupt_overwrite(prefix: str, new: np.ndarray) -> None:
    """Leave `prefix` as a crash leaves it in the middle of an overwrite with `new`.

    The staged copy is complete (its `.index` exists), the old `.index` is already deleted
    (the first step of the roll-forward) and nothing staged has been moved yet.
    """
    folder, name = os.path.split(prefix)
    scratch = os.path.join(folder, "scratch", name)
    checkpoint = trackpoint.Checkpoint(w=trackpoint.Variable(new))
    _ = checkpoint.save_counter  # saved too, as a manager's save does
    checkpoint.write(scratch)
    staged = f"{name}{STAGING_MARK}0123abcd"
    for entry in os.listdir(os.path.dirname(scratch)):
        os.replace(
            os.path.join(folder, "scratch", entry),
            os.path.join(folder, staged + entry[len(name) :]),
        )
    os.rmdir(os.path.join(folder, "scratch"))
    os.unlink(prefix + ".index")


def _written(folder: Path) -> str:
    """A folder with one checkpoint `ckpt-1` (recorded in its state file), interrupted."""
    manager = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(w=trackpoint.Variable(OLD)), folder, max_to_keep=2
    )
    prefix = manager.save()
    manager.close()
    assert prefix is not None
    _interrupt_overwrite(prefix, NEW)
    assert not os.path.exists(prefix + ".index")
    return prefix


def _by_load_checkpoint(path: str) -> np.ndarray:
    with trackpoint.load_checkpoint(path) as reader:
        return reader.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")


def _by_read(path: str) -> np.ndarray:
    w = trackpoint.Variable(np.full(3, -1, np.float32))
    trackpoint.Checkpoint(w=w).read(path).assert_existing_objects_matched()
    return np.asarray(w.numpy())


def _by_restore(path: str) -> np.ndarray:
    w = trackpoint.Variable(np.full(3, -1, np.float32))
    trackpoint.Checkpoint(w=w).restore(path).assert_consumed()
    return np.asarray(w.numpy())


READERS: dict[str, Callable[[str], np.ndarray]] = {
    "load_checkpoint": _by_load_checkpoint,
    "Checkpoint.read": _by_read,
    "Checkpoint.restore": _by_restore,
}


@pytest.mark.parametrize("read", list(READERS.values()), ids=list(READERS))
@pytest.mark.parametrize("given", ["prefix", "folder"])
def test_reading_an_interrupted_overwrite_finishes_it(
    tmp_path: Path, read: Callable[[str], np.ndarray], given: str
) -> None:
    prefix = _written(tmp_path)
    path = prefix if given == "prefix" else str(tmp_path)
    np.testing.assert_array_equal(read(path), NEW)
    assert os.path.exists(prefix + ".index")
    assert not [n for n in os.listdir(tmp_path) if STAGING_MARK in n]


def test_restore_or_initialize_finishes_an_interrupted_overwrite(tmp_path: Path) -> None:
    prefix = _written(tmp_path)
    w = trackpoint.Variable(np.full(3, -1, np.float32))
    called: list[bool] = []
    manager = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(w=w), tmp_path, max_to_keep=2, init_fn=lambda: called.append(True)
    )
    try:
        assert manager.restore_or_initialize() == prefix
    finally:
        manager.close()
    assert not called
    np.testing.assert_array_equal(w.numpy(), NEW)


def test_latest_checkpoint_and_bundle_reader_agree_with_the_readers(tmp_path: Path) -> None:
    prefix = _written(tmp_path)
    assert trackpoint.latest_checkpoint(tmp_path) == prefix
    np.testing.assert_array_equal(_by_load_checkpoint(prefix), NEW)


def test_an_incomplete_staged_copy_is_not_read_and_the_error_says_the_index_is_missing(
    tmp_path: Path,
) -> None:
    prefix = _written(tmp_path)
    staged_index = next(
        n for n in os.listdir(tmp_path) if STAGING_MARK in n and n.endswith(".index")
    )
    os.unlink(tmp_path / staged_index)  # the staged save had not finished: no new checkpoint
    with pytest.raises(trackpoint.CheckpointNotFoundError, match=r"'ckpt-1\.index' is missing"):
        trackpoint.load_checkpoint(prefix)
