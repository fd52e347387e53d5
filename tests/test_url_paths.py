"""A URL given as a checkpoint path is refused by name until object storage lands.

Before, `Checkpoint(...).save("s3://bucket/run/ckpt")` succeeded and wrote a local folder
named `s3:` in the working directory: the run looked saved and was not where the user
looked. Every entry point that takes a location now raises `UnsupportedLocationError`
naming the URL, and writes nothing. `file://` URLs are local paths.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pytest

import trackpoint
from trackpoint.cli import main
from trackpoint.errors import UnsupportedLocationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

URL = "s3://bucket/run/ckpt"
FOLDER_URL = "gs://bucket/run"


def _checkpoint() -> trackpoint.Checkpoint:
    return trackpoint.Checkpoint(w=trackpoint.Variable(np.ones(3, np.float32)))


def _model() -> trackpoint.Module:
    model = trackpoint.Module()
    model.w = trackpoint.Variable(np.ones(3, np.float32))
    return model


def _manager_save() -> object:
    manager = trackpoint.CheckpointManager(_checkpoint(), FOLDER_URL, max_to_keep=2)
    try:
        return manager.save()
    finally:
        manager.close()


ENTRY_POINTS: dict[str, Callable[[], object]] = {
    "Checkpoint.save": lambda: _checkpoint().save(URL),
    "Checkpoint.save async": lambda: _checkpoint().save(
        URL, trackpoint.CheckpointOptions(enable_async=True)
    ),
    "Checkpoint.write": lambda: _checkpoint().write(URL),
    "Checkpoint.read": lambda: _checkpoint().read(URL),
    "Checkpoint.restore": lambda: _checkpoint().restore(URL),
    "load_checkpoint": lambda: trackpoint.load_checkpoint(URL),
    "list_variables": lambda: trackpoint.list_variables(URL),
    "latest_checkpoint": lambda: trackpoint.latest_checkpoint(FOLDER_URL),
    "CheckpointManager.save": _manager_save,
    "save_weights": lambda: trackpoint.save_weights(_model(), URL),
    "load_weights": lambda: trackpoint.load_weights(_model(), URL),
}


@pytest.mark.parametrize("call", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
def test_a_url_is_refused_by_name_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[], object]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedLocationError, match="not supported yet") as info:
        call()
    assert info.value.url in (URL, FOLDER_URL)
    assert info.value.url in str(info.value)
    assert "use a local path" in str(info.value)
    assert isinstance(info.value, trackpoint.TrackpointError)
    assert os.listdir(tmp_path) == []  # no local 's3:' or 'gs:' folder


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_cli_refuses_a_url_with_exit_code_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([command, URL]) == 2
    assert "UnsupportedLocationError" in capsys.readouterr().err
    assert main(["verify", "--all", FOLDER_URL]) == 2
    assert os.listdir(tmp_path) == []


def test_a_file_url_is_a_local_path(tmp_path: Path) -> None:
    prefix = tmp_path / "ckpt"
    written = _checkpoint().write(prefix.as_uri())
    assert written == str(prefix)
    assert (tmp_path / "ckpt.index").is_file()
    w = trackpoint.Variable(np.zeros(3, np.float32))
    trackpoint.Checkpoint(w=w).read(prefix.as_uri()).assert_existing_objects_matched()
    np.testing.assert_array_equal(w.numpy(), np.ones(3, np.float32))


def test_a_windows_drive_letter_is_not_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # On POSIX this is an odd but valid relative name: written where it says, not refused.
    for name in ("C:\\runs\\ckpt", "c:/runs/ckpt"):
        assert _checkpoint().write(name) == name
        with trackpoint.load_checkpoint(name) as reader:
            assert reader.has_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")


def test_latest_checkpoint_still_warns_at_the_callers_line(tmp_path: Path) -> None:
    # trackpoint.latest_checkpoint refuses URLs in front of the format's own function: its
    # warnings must still name the user's line, not trackpoint's.
    prefix = _checkpoint().save(tmp_path / "ckpt")
    os.unlink(tmp_path / "checkpoint")
    with pytest.warns(trackpoint.TrackpointWarning, match="has no state file") as record:
        assert trackpoint.latest_checkpoint(tmp_path) == prefix
    assert [w.filename for w in record] == [__file__]
