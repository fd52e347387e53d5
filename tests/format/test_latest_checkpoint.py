"""`latest_checkpoint`'s scan: the newest *complete* checkpoint, never a silent "none".

When the state file is missing, or names a checkpoint that is gone, the folder is scanned:
newest by the manager's number, then by the index's time, skipping any checkpoint whose
data files are missing or shorter than its index says.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np

from trackpoint.errors import TrackpointWarning
from trackpoint.format import (
    BundleReader,
    BundleWriter,
    data_file_name,
    latest_checkpoint,
    write_checkpoint_state,
)

if TYPE_CHECKING:
    from pathlib import Path


def save(folder: Path, name: str, value: float = 1.0) -> str:
    """A real, complete checkpoint of two tensors at `folder/name`."""
    prefix = str(folder / name)
    with BundleWriter(prefix) as writer:
        writer.add("w", np.full(100, value, np.float32))
        writer.add("step", np.int64(value))
    return prefix


def assert_scan_finds(folder: Path, expected: str, phrase: str) -> None:
    """`latest_checkpoint(folder)` is `expected`, found by the scan (which warns `phrase`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = latest_checkpoint(folder)
    assert found == expected
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackpointWarning)]
    assert len(messages) == 1
    assert re.search(phrase, messages[0]), messages[0]


def test_folder_without_a_state_file_gives_its_newest_complete_checkpoint(tmp_path):
    # "No state file" beside checkpoints is not "no checkpoint": training must not start over.
    save(tmp_path, "ckpt-1")
    newest = save(tmp_path, "ckpt-2")
    assert not (tmp_path / "checkpoint").exists()
    assert_scan_finds(tmp_path, newest, r"has no state file .* using 'ckpt-2'")


def test_empty_folder_has_no_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_scan_orders_checkpoints_by_their_number_not_by_their_name(tmp_path):
    for number in (1, 9, 10, 2):
        save(tmp_path, f"ckpt-{number}", value=number)
    assert_scan_finds(tmp_path, str(tmp_path / "ckpt-10"), "using 'ckpt-10'")


def test_scan_orders_unnumbered_checkpoints_by_the_time_of_their_index(tmp_path):
    older, newer = save(tmp_path, "zeta"), save(tmp_path, "alpha")
    os.utime(older + ".index", (1_000_000, 1_000_000))
    os.utime(newer + ".index", (2_000_000, 2_000_000))
    assert_scan_finds(tmp_path, newer, "using 'alpha'")


def test_scan_skips_a_checkpoint_whose_data_file_is_missing(tmp_path):
    complete = save(tmp_path, "ckpt-1")
    broken = save(tmp_path, "ckpt-2")
    os.remove(data_file_name(broken, 0, 1))
    assert_scan_finds(tmp_path, complete, "using 'ckpt-1'")


def test_scan_skips_a_checkpoint_whose_data_file_is_shorter_than_its_index_says(tmp_path):
    complete = save(tmp_path, "ckpt-1")
    broken = save(tmp_path, "ckpt-2")
    data = data_file_name(broken, 0, 1)
    os.truncate(data, os.path.getsize(data) - 1)  # a torn write: one byte short
    assert_scan_finds(tmp_path, complete, "using 'ckpt-1'")
    with BundleReader(complete) as reader:
        assert reader.get_tensor("step") == 1


def test_state_file_naming_a_lost_checkpoint_falls_back_past_an_incomplete_one(tmp_path):
    complete = save(tmp_path, "ckpt-1")
    short = save(tmp_path, "ckpt-2")
    os.truncate(data_file_name(short, 0, 1), 10)
    listed = [complete, short, str(tmp_path / "ckpt-3")]
    write_checkpoint_state(tmp_path, listed[-1], listed)  # ckpt-3 was never written
    assert_scan_finds(tmp_path, complete, r"'ckpt-3'\) is missing; using 'ckpt-1'")


def test_scan_ignores_checkpoints_that_are_only_a_data_file(tmp_path):
    complete = save(tmp_path, "ckpt-1")
    orphan = save(tmp_path, "ckpt-2")
    os.remove(orphan + ".index")  # a save interrupted before its index appeared
    assert_scan_finds(tmp_path, complete, "using 'ckpt-1'")
