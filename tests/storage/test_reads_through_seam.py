"""Every read of a saved checkpoint goes through the storage seam (docs/storage.md §4.2).

`ReadLog` is the storage in use; a watch on `os.open`, `os.listdir` and `mmap.mmap`
records every file of the checkpoint folder opened, listed or mapped *outside* the
storage's own calls. A
restore, `load_checkpoint` (plain and `mmap=True`), `latest_checkpoint` and `trackpoint
verify` must leave that list empty.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from trackpoint import storage
from trackpoint.cli import main

if TYPE_CHECKING:
    from pathlib import Path


class ReadLog(storage.Storage):
    """The local file system, noting each file opened for reading through it."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.listed: list[str] = []
        self.statted: list[str] = []
        self.inside = threading.local()

    def open_read(self, path: str) -> storage.ReadHandle:
        self.inside.on = True
        try:
            handle = super().open_read(path)
        finally:
            self.inside.on = False
        self.opened.append(os.path.basename(path))
        return handle

    def list(self, folder: str) -> list[str]:
        self.listed.append(folder)
        self.inside.on = True
        try:
            return super().list(folder)
        finally:
            self.inside.on = False

    def stat(self, path: str) -> storage.Stat | None:
        self.statted.append(os.path.basename(path))
        return super().stat(path)


@pytest.fixture
def seam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ReadLog, list[str]]:
    log = ReadLog()
    bypasses: list[str] = []
    folder = str(tmp_path)
    real_open = os.open

    def watched_open(path: Any, *args: Any, **kwargs: Any) -> int:
        name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
        reading = storage.current() is log  # the save before it is not watched
        if reading and name.startswith(folder) and not getattr(log.inside, "on", False):
            bypasses.append(os.path.basename(name))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", watched_open)
    real_listdir = os.listdir

    def watched_listdir(path: Any = ".") -> list[str]:
        name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
        reading = storage.current() is log
        if reading and name.startswith(folder) and not getattr(log.inside, "on", False):
            bypasses.append("listdir " + os.path.basename(name))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", watched_listdir)
    real_mmap = mmap.mmap

    # The handle maps its own file; a map made by any other code bypasses the seam.
    def watched_mmap(*args: Any, **kwargs: Any) -> mmap.mmap:
        by_handle = sys._getframe(1).f_code is storage.ReadHandle.map.__code__
        if storage.current() is log and not by_handle:
            bypasses.append("mmap")
        return real_mmap(*args, **kwargs)

    monkeypatch.setattr(mmap, "mmap", watched_mmap)
    return log, bypasses


def _save(tmp_path: Path) -> tuple[str | None, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {
        "big": np.arange(3_000_000, dtype=np.float32),  # the parallel restore's path
        "small": np.arange(5, dtype=np.int64),
    }
    path = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(state=arrays), tmp_path, max_to_keep=2
    ).save()
    return path, arrays


def test_restore_reads_only_through_the_storage(
    tmp_path: Path, seam: tuple[ReadLog, list[str]]
) -> None:
    path, arrays = _save(tmp_path)
    log, bypasses = seam
    restored = {k: np.zeros_like(v) for k, v in arrays.items()}
    with storage.use(log):
        trackpoint.Checkpoint(state=restored).restore(path).assert_consumed()
    assert bypasses == []
    assert any(name.endswith(".index") for name in log.opened)
    assert any("-of-" in name for name in log.opened)
    np.testing.assert_array_equal(restored["big"], arrays["big"])


@pytest.mark.parametrize("use_mmap", [False, True])
def test_load_checkpoint_reads_only_through_the_storage(
    tmp_path: Path, seam: tuple[ReadLog, list[str]], use_mmap: bool
) -> None:
    _, arrays = _save(tmp_path)
    log, bypasses = seam
    with storage.use(log), trackpoint.load_checkpoint(tmp_path, mmap=use_mmap) as reader:
        names = [name for name, _ in reader.get_variable_to_shape_map().items()]
        values = {name: np.array(reader.get_tensor(name)) for name in names}
        del reader
    assert bypasses == []
    assert "checkpoint" in log.opened  # the state file named the prefix
    assert any(name.endswith(".index") for name in log.opened)
    assert any(np.array_equal(v, arrays["big"]) for v in values.values())


def test_latest_checkpoint_scan_reads_only_through_the_storage(
    tmp_path: Path, seam: tuple[ReadLog, list[str]]
) -> None:
    path, _ = _save(tmp_path)
    os.remove(tmp_path / "checkpoint")  # force the scan of the folder's indexes
    log, bypasses = seam
    with storage.use(log), pytest.warns(trackpoint.TrackpointWarning, match="no state file"):
        assert trackpoint.latest_checkpoint(tmp_path) == path
    assert bypasses == []
    assert any(name.endswith(".index") for name in log.opened)
    assert any("-of-" in name for name in log.opened)  # data files checked complete
    assert str(tmp_path) in log.listed  # the scan lists the folder through the storage
    assert os.path.basename(path or "") + ".index" in log.statted  # and dates its indexes


def test_verify_reads_only_through_the_storage(
    tmp_path: Path, seam: tuple[ReadLog, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _save(tmp_path)
    log, bypasses = seam
    with storage.use(log):
        assert main(["verify", str(tmp_path)]) == 0
    capsys.readouterr()
    assert bypasses == []
    assert any("-of-" in name for name in log.opened)


def test_manager_lists_and_checks_its_folder_only_through_the_storage(
    tmp_path: Path, seam: tuple[ReadLog, list[str]]
) -> None:
    log, bypasses = seam
    state = {"w": np.arange(4, dtype=np.float32)}
    with storage.use(log):
        manager = trackpoint.CheckpointManager(
            trackpoint.Checkpoint(state=state), tmp_path, max_to_keep=1
        )
        manager.save()
        manager.save()  # sweeps the first one
        reopened = trackpoint.CheckpointManager(
            trackpoint.Checkpoint(state=state), tmp_path, max_to_keep=1
        )
    assert [n for n in bypasses if n.startswith("listdir")] == []
    assert str(tmp_path) in log.listed
    assert [os.path.basename(p) for p in reopened.checkpoints] == ["ckpt-2"]
