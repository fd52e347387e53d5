"""The `checkpoint` state file: TF's text layout, path resolution, damage (format doc §1.3)."""

from __future__ import annotations

import errno
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pytest

from trackpoint import load_checkpoint, storage
from trackpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    SaveError,
    TrackpointWarning,
)
from trackpoint.format import (
    STATE_FILENAME,
    BundleWriter,
    CheckpointState,
    latest_checkpoint,
    read_checkpoint_state,
    write_checkpoint_state,
)
from trackpoint.storage import Storage

if TYPE_CHECKING:
    from pathlib import Path

TIMESTAMPS = (1795810946.527163, 1795810946.5819962)
LAST_PRESERVED = 1795810945.468572


def touch_checkpoint(folder: Path, name: str) -> str:
    """A stand-in checkpoint: latest_checkpoint only looks for the `.index` file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.index").write_bytes(b"")
    return str(folder / name)


def test_state_file_round_trips_with_timestamps(tmp_path):
    paths = [str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-3")]
    write_checkpoint_state(tmp_path, paths[-1], paths, TIMESTAMPS, LAST_PRESERVED)
    state = read_checkpoint_state(tmp_path)
    assert state == CheckpointState(
        model_checkpoint_path=paths[-1],
        all_model_checkpoint_paths=tuple(paths),
        all_model_checkpoint_timestamps=TIMESTAMPS,
        last_preserved_timestamp=LAST_PRESERVED,
        raw_model_checkpoint_path="ckpt-3",
    )


def test_state_file_without_timestamps_reads_them_as_empty(tmp_path):
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-1")
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.all_model_checkpoint_paths == (str(tmp_path / "ckpt-1"),)
    assert state.all_model_checkpoint_timestamps == ()
    assert state.last_preserved_timestamp is None


def test_written_text_is_tf_layout(tmp_path, tf_fixtures):
    # The manager fixture: CheckpointManager(max_to_keep=2) after 3 saves, written by TF 2.21.
    tf_text = (tf_fixtures / "manager" / "checkpoint").read_text(encoding="utf-8")
    write_checkpoint_state(
        tmp_path,
        tmp_path / "ckpt-3",
        [tmp_path / "ckpt-2", tmp_path / "ckpt-3"],
        TIMESTAMPS,
        LAST_PRESERVED,
    )
    ours = (tmp_path / "checkpoint").read_text(encoding="utf-8")
    field_names = [line.split(":")[0] for line in tf_text.splitlines()]
    assert [line.split(":")[0] for line in ours.splitlines()] == field_names
    assert field_names == [
        "model_checkpoint_path",
        "all_model_checkpoint_paths",
        "all_model_checkpoint_paths",
        "all_model_checkpoint_timestamps",
        "all_model_checkpoint_timestamps",
        "last_preserved_timestamp",
    ]
    assert ours == tf_text  # same values, so the very same bytes


def test_written_text_of_a_plain_save_is_tf_layout(tmp_path, tf_fixtures):
    # keras_adam: Checkpoint.save → only the latest, relative, no timestamps.
    tf_text = (tf_fixtures / "keras_adam" / "checkpoint").read_text(encoding="utf-8")
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-1")
    assert (tmp_path / "checkpoint").read_text(encoding="utf-8") == tf_text


def test_tf_written_state_files_read_back(tf_fixtures):
    state = read_checkpoint_state(tf_fixtures / "manager")
    assert state is not None
    assert state.raw_model_checkpoint_path == "ckpt-3"
    assert state.all_model_checkpoint_paths == (
        str(tf_fixtures / "manager" / "ckpt-2"),
        str(tf_fixtures / "manager" / "ckpt-3"),
    )
    assert state.all_model_checkpoint_timestamps == TIMESTAMPS
    assert state.last_preserved_timestamp == LAST_PRESERVED


def test_paths_are_written_relative_to_the_folder_and_resolved_against_it(tmp_path):
    folder = tmp_path / "run"
    write_checkpoint_state(folder, folder / "ckpt-5", [folder / "ckpt-4", folder / "ckpt-5"])
    text = (folder / "checkpoint").read_text(encoding="utf-8")
    assert 'model_checkpoint_path: "ckpt-5"\n' in text
    assert str(tmp_path) not in text
    # Move the folder: the relative paths follow it.
    moved = tmp_path / "moved"
    os.rename(folder, moved)
    state = read_checkpoint_state(moved)
    assert state is not None
    assert state.model_checkpoint_path == str(moved / "ckpt-5")
    assert state.all_model_checkpoint_paths == (str(moved / "ckpt-4"), str(moved / "ckpt-5"))


def test_paths_outside_the_folder_stay_absolute(tmp_path):
    other = str(tmp_path / "elsewhere" / "ckpt-1")
    write_checkpoint_state(tmp_path / "run", other)
    assert f'model_checkpoint_path: "{other}"' in (tmp_path / "run" / "checkpoint").read_text()


def test_cwd_relative_path_outside_the_folder_is_written_absolute(tmp_path, monkeypatch):
    # Readers join relative paths to the state file's folder; "elsewhere/ckpt-1" given
    # relative to the working directory must not become "run/elsewhere/ckpt-1".
    monkeypatch.chdir(tmp_path)
    expected = touch_checkpoint(tmp_path / "elsewhere", "ckpt-1")
    write_checkpoint_state("run", os.path.join("elsewhere", "ckpt-1"))
    assert f'model_checkpoint_path: "{expected}"' in (tmp_path / "run" / "checkpoint").read_text()
    state = read_checkpoint_state("run")
    assert state is not None
    assert state.raw_model_checkpoint_path == expected
    # Read back, a checkpoint outside the folder is not the folder's latest.
    with pytest.warns(TrackpointWarning, match="outside"):
        assert latest_checkpoint("run") is None


def test_cwd_relative_path_inside_the_folder_is_written_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_checkpoint_state("run", os.path.join("run", "ckpt-1"))
    text = (tmp_path / "run" / "checkpoint").read_text()
    assert text.startswith('model_checkpoint_path: "ckpt-1"\n')


def test_relative_paths_in_a_subfolder_are_joined_to_the_folder(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "sub/ckpt-1"\n')
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.model_checkpoint_path == os.path.join(str(tmp_path), "sub/ckpt-1")


def test_moved_tf1_folder_falls_back_to_the_checkpoint_beside_the_state_file(tmp_path, tf_fixtures):
    # TF1 Saver wrote absolute paths of the machine that saved ("/old-machine/...").
    folder = tmp_path / "copied"
    shutil.copytree(tf_fixtures / "tf1_saver", folder)
    state = read_checkpoint_state(folder)
    assert state is not None
    assert state.raw_model_checkpoint_path == "/old-machine/runs/tf1_saver/model.ckpt-3"
    assert state.model_checkpoint_path == str(folder / "model.ckpt-3")
    assert state.all_model_checkpoint_paths == (str(folder / "model.ckpt-3"),)
    assert latest_checkpoint(folder) == str(folder / "model.ckpt-3")


def test_absolute_path_elsewhere_loses_to_the_same_name_beside_the_state_file(tmp_path):
    # Divergence from TF (docs/format-layer.md): a folder's latest checkpoint is in it.
    original = touch_checkpoint(tmp_path / "original", "ckpt-1")
    beside = touch_checkpoint(tmp_path / "copy", "ckpt-1")
    (tmp_path / "copy" / "checkpoint").write_text(f'model_checkpoint_path: "{original}"\n')
    assert latest_checkpoint(tmp_path / "copy") == beside


def test_relative_path_out_of_the_folder_loses_to_the_same_name_beside_it(tmp_path):
    touch_checkpoint(tmp_path / "outside", "ckpt-1")
    beside = touch_checkpoint(tmp_path / "run", "ckpt-1")
    (tmp_path / "run" / "checkpoint").write_text(
        'model_checkpoint_path: "../outside/ckpt-1"\n'
        'all_model_checkpoint_paths: "../outside/ckpt-1"\n'
    )
    state = read_checkpoint_state(tmp_path / "run")
    assert state is not None
    assert state.raw_model_checkpoint_path == "../outside/ckpt-1"
    assert state.model_checkpoint_path == beside
    assert state.all_model_checkpoint_paths == (beside,)
    assert latest_checkpoint(tmp_path / "run") == beside


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_path_elsewhere_with_nothing_beside_it_is_ignored_with_a_warning(tmp_path, where):
    outside = touch_checkpoint(tmp_path / "outside", "ckpt-7")
    named = "../outside/ckpt-7" if where == "relative" else outside
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
    with pytest.warns(TrackpointWarning, match="outside") as caught:
        assert latest_checkpoint(run) is None  # the folder holds no checkpoint
    assert [w.filename for w in caught] == [__file__]
    assert named in str(caught[0].message)
    assert "ignored" in str(caught[0].message)
    # Then the folder is scanned, as for a missing state file.
    with BundleWriter(run / "ckpt-2") as writer:  # a complete one: the scan checks
        writer.add("w", np.ones(2, np.float32))
    own = str(run / "ckpt-2")
    with pytest.warns(TrackpointWarning, match="outside") as caught:
        assert latest_checkpoint(run) == own
    assert len(caught) == 1
    assert "using 'ckpt-2'" in str(caught[0].message)


def test_absolute_path_that_leads_nowhere_is_ignored_and_the_folder_scanned(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/nowhere/ckpt-9"\n')
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.raw_model_checkpoint_path == "/nowhere/ckpt-9"
    with pytest.warns(TrackpointWarning, match="'/nowhere/ckpt-9', outside"):
        assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointNotFoundError, match="outside the folder") as info:
        load_checkpoint(tmp_path)  # an explicit read names what it cannot read
    assert info.value.file == str(tmp_path / "checkpoint")


def test_copied_run_folder_with_tf1_absolute_paths_reads_its_own_checkpoints(tmp_path):
    # `cp -r run1 run2`, TF1 Saver-style state file (absolute paths); then run1 goes on
    # and overwrites its ckpt-2: run2 must still read run2's files, never run1's.
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    for n in (1, 2):
        with BundleWriter(run1 / f"ckpt-{n}") as writer:
            writer.add("w", np.full(3, float(n), np.float32))
    (run1 / "checkpoint").write_text(
        f'model_checkpoint_path: "{run1}/ckpt-2"\n'
        f'all_model_checkpoint_paths: "{run1}/ckpt-1"\n'
        f'all_model_checkpoint_paths: "{run1}/ckpt-2"\n'
    )
    shutil.copytree(run1, run2)
    with BundleWriter(run1 / "ckpt-2") as writer:
        writer.add("w", np.full(3, 99.0, np.float32))
    assert latest_checkpoint(run2) == str(run2 / "ckpt-2")
    state = read_checkpoint_state(run2)
    assert state is not None
    assert state.all_model_checkpoint_paths == (str(run2 / "ckpt-1"), str(run2 / "ckpt-2"))
    with load_checkpoint(run2) as reader:
        assert reader.prefix == str(run2 / "ckpt-2")
        assert reader.get_tensor("w").tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("field", ["model_checkpoint_path", "all_model_checkpoint_paths"])
def test_escaped_nul_in_a_path_is_a_corrupt_state_file(tmp_path, field):
    touch_checkpoint(tmp_path, "ckpt-1")
    latest = "ckpt-3" if field == "all_model_checkpoint_paths" else "ck\\000pt-1"
    (tmp_path / "checkpoint").write_text(
        f'model_checkpoint_path: "{latest}"\nall_model_checkpoint_paths: "ck\\000pt-1"\n'
    )
    for call in (read_checkpoint_state, latest_checkpoint, load_checkpoint):
        with pytest.raises(CorruptCheckpointError, match="NUL") as info:
            call(tmp_path)
        assert info.value.file == str(tmp_path / "checkpoint")
        assert "fix or delete it" in str(info.value)


def test_latest_checkpoint_needs_the_index_file(tmp_path):
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-1")
    with pytest.raises(CheckpointNotFoundError, match="files are gone"):
        latest_checkpoint(tmp_path)
    touch_checkpoint(tmp_path, "ckpt-1")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-1")


def test_no_state_file_reads_as_none(tmp_path):
    assert read_checkpoint_state(tmp_path) is None
    assert read_checkpoint_state(tmp_path / "missing-folder") is None
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "names no latest checkpoint"),
        (b"\n\n", "names no latest checkpoint"),
        (b'model_checkpoint_path: ""\n', "names no latest checkpoint"),
        (b'all_model_checkpoint_paths: "ckpt-1"\n', "names no latest checkpoint"),
        (b"model_checkpoint_path: ckpt-1\n", "cannot be parsed"),
        (b'model_checkpoint_path: "ckpt-1', "cannot be parsed"),
        (b'no_such_field: "x"\n', "cannot be parsed"),
        (b"\x00\x01\x02\xff\xfe", "cannot be parsed"),
        (b'model_checkpoint_path: "\xff"\n', "cannot be parsed"),
        (b"all_model_checkpoint_timestamps: soon\n", "cannot be parsed"),
    ],
    ids=[
        "empty",
        "blank-lines",
        "empty-path",
        "no-latest",
        "unquoted",
        "unterminated",
        "unknown-field",
        "binary",
        "not-utf8",
        "bad-number",
    ],
)
def test_damaged_state_file_is_an_error_not_none(tmp_path, content, phrase):
    (tmp_path / "checkpoint").write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=phrase) as info:
        read_checkpoint_state(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")
    assert "fix or delete it" in str(info.value)
    with pytest.raises(CorruptCheckpointError):
        latest_checkpoint(tmp_path)


def test_folder_named_checkpoint_is_an_error(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(CorruptCheckpointError, match="not a regular file") as info:
        read_checkpoint_state(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_checkpoint_is_an_error_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "checkpoint")
    with pytest.raises(CorruptCheckpointError, match="not a regular file") as info:
        read_checkpoint_state(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")


def test_huge_state_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint"
    with open(path, "wb") as f:
        f.write(b'model_checkpoint_path: "ckpt-1"\n')
        f.truncate((64 << 20) + 100)  # sparse: no disk used
    with pytest.raises(CorruptCheckpointError, match="too large") as info:
        read_checkpoint_state(tmp_path)
    assert info.value.file == str(path)


def test_quotes_and_non_ascii_are_written_as_tf_does(tmp_path):
    name = 'ck"pt-é'
    write_checkpoint_state(tmp_path, tmp_path / name)
    text = (tmp_path / "checkpoint").read_bytes()
    assert (
        text
        == 'model_checkpoint_path: "ck\\"pt-é"\nall_model_checkpoint_paths: "ck\\"pt-é"\n'.encode()
    )
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.raw_model_checkpoint_path == name


def test_timestamps_must_be_parallel_to_the_paths(tmp_path):
    with pytest.raises(ValueError, match="parallel"):
        write_checkpoint_state(
            tmp_path, tmp_path / "ckpt-2", [tmp_path / "ckpt-1", tmp_path / "ckpt-2"], [1.0]
        )
    assert os.listdir(tmp_path) == []


def test_writing_replaces_the_state_file_and_leaves_no_temporary_files(tmp_path):
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-1")
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-2", durable=True)
    assert os.listdir(tmp_path) == ["checkpoint"]
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.raw_model_checkpoint_path == "ckpt-2"


class _FailingStateFileStorage(Storage):
    """Fails one operation on the state file's temp (`checkpoint.tp-tmp-…`) with EIO."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.failed: list[str] = []
        self._temp_fds: set[int] = set()

    def _fail(self, operation: str, path: str) -> None:
        self.failed.append(operation)
        raise OSError(errno.EIO, "injected I/O error", path)

    def create(self, path: str) -> int:
        temp = os.path.basename(path).startswith(f"{STATE_FILENAME}.tp-tmp-")
        if temp and self.operation == "create":
            self._fail("create", path)
        fd = super().create(path)
        if temp:
            self._temp_fds.add(fd)
        return fd

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        if fd in self._temp_fds and self.operation == "write":
            self._fail("write", str(fd))
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if fd in self._temp_fds and self.operation == "fsync":
            self._fail("fsync", str(fd))
        super().fsync(fd)

    def close(self, fd: int) -> None:
        super().close(fd)
        if fd in self._temp_fds and self.operation == "close":
            self._fail("close", str(fd))  # as NFS reports a failed write: after closing

    def replace(self, source: str, target: str) -> None:
        if os.path.basename(target) == STATE_FILENAME and self.operation == "rename":
            self._fail("rename", source)
        super().replace(source, target)


@pytest.mark.parametrize("operation", ["create", "write", "fsync", "close", "rename"])
def test_failed_write_keeps_the_old_state_file(tmp_path: Path, operation: str) -> None:
    old = touch_checkpoint(tmp_path, "ckpt-1")
    touch_checkpoint(tmp_path, "ckpt-2")  # the save whose state file update fails
    write_checkpoint_state(tmp_path, old)
    before = (tmp_path / STATE_FILENAME).read_bytes()
    failing = _FailingStateFileStorage(operation)
    with storage.use(failing), pytest.raises(SaveError) as info:
        write_checkpoint_state(tmp_path, tmp_path / "ckpt-2", durable=True)
    assert failing.failed == [operation]  # the state file itself was being replaced
    assert info.value.errno == errno.EIO
    assert info.value.file == str(tmp_path / STATE_FILENAME)
    assert (tmp_path / STATE_FILENAME).read_bytes() == before
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.model_checkpoint_path == old
    assert latest_checkpoint(tmp_path) == old  # not ckpt-2, though its index is there
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.index", "ckpt-2.index"]


def test_custom_state_file_name(tmp_path):
    write_checkpoint_state(tmp_path, tmp_path / "ckpt-1", filename="latest")
    assert os.listdir(tmp_path) == ["latest"]
    assert read_checkpoint_state(tmp_path) is None
    touch_checkpoint(tmp_path, "ckpt-1")
    assert latest_checkpoint(tmp_path, filename="latest") == str(tmp_path / "ckpt-1")
