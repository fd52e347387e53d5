"""`CheckpointManager`: TF's numbering, retention and state file, with safer deletion."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import trackpoint
from tests._commit_log import RecordingStorage, assert_committed
from trackpoint import storage
from trackpoint.format import read_checkpoint_state
from trackpoint.storage import LOCK_NAME


def _files(folder: Path) -> list[str]:
    """The folder's files, without the writer lock (held while a manager lives)."""
    return sorted(n for n in os.listdir(folder) if n != LOCK_NAME)


def _manager(
    folder: Path, **kwargs: object
) -> tuple[trackpoint.CheckpointManager, trackpoint.Variable]:
    v = trackpoint.Variable(0.0)
    ckpt = trackpoint.Checkpoint(v=v)
    return trackpoint.CheckpointManager(ckpt, folder, **kwargs), v  # type: ignore[arg-type]


def test_keeps_the_last_n_and_deletes_older_files(tmp_path: Path) -> None:
    manager, v = _manager(tmp_path, max_to_keep=2)
    for i in range(3):
        v.assign(float(i + 1))
        manager.save()
    assert _files(tmp_path) == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]
    assert manager.checkpoints == [str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-3")]
    assert manager.latest_checkpoint == str(tmp_path / "ckpt-3")
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert state.all_model_checkpoint_paths == tuple(manager.checkpoints)
    assert len(state.all_model_checkpoint_timestamps) == 2
    assert state.last_preserved_timestamp is not None
    assert trackpoint.load_checkpoint(tmp_path).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE") == 3.0


def test_save_commits_data_then_index_then_state_file_then_deletes_the_oldest(
    tmp_path: Path,
) -> None:
    manager, _ = _manager(tmp_path, max_to_keep=1)
    store = RecordingStorage()
    with storage.use(store):
        first = manager.save()
        second_starts = len(store.ops)
        second = manager.save()
    manager.close()
    assert (first, second) == (str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2"))
    state_file = tmp_path / "checkpoint"
    first_ops, second_ops = store.ops[:second_starts], store.ops[second_starts:]
    for ops, prefix in [(first_ops, tmp_path / "ckpt-1"), (second_ops, tmp_path / "ckpt-2")]:
        assert_committed(ops, prefix, num_shards=1, durable=True, state_file=state_file)
    # ckpt-1 goes only once the state file names ckpt-2, and its index before its data.
    recorded = next(
        i
        for i, op in enumerate(second_ops)
        if op.kind == "replace" and op.target == str(state_file)
    )
    deleted = [
        (i, os.path.basename(op.path))
        for i, op in enumerate(second_ops)
        if op.kind == "unlink" and os.path.basename(op.path).startswith("ckpt-1.")
    ]
    assert [name for _, name in deleted] == ["ckpt-1.index", "ckpt-1.data-00000-of-00001"]
    assert all(i > recorded for i, _ in deleted)


def test_a_new_manager_adopts_the_folder_and_continues(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, max_to_keep=2)
    manager.save()
    manager.save()
    manager.close()  # one writer per folder: the new manager takes over
    again, _ = _manager(tmp_path, max_to_keep=2)
    assert again.latest_checkpoint == str(tmp_path / "ckpt-2")
    assert again.restore_or_initialize() == str(tmp_path / "ckpt-2")
    assert again.save() == str(tmp_path / "ckpt-3")
    assert [os.path.basename(p) for p in again.checkpoints] == ["ckpt-2", "ckpt-3"]
    assert not (tmp_path / "ckpt-1.index").exists()


def test_explicit_checkpoint_number(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, max_to_keep=None)
    assert manager.save(checkpoint_number=100) == str(tmp_path / "ckpt-100")
    assert manager.save() == str(tmp_path / "ckpt-2")
    assert len(manager.checkpoints) == 2


def test_checkpoint_interval_skips_saves_until_enough_steps(tmp_path: Path) -> None:
    step = trackpoint.Variable(np.int64(0))
    ckpt = trackpoint.Checkpoint(step=step)
    manager = trackpoint.CheckpointManager(
        ckpt, tmp_path, max_to_keep=None, step_counter=step, checkpoint_interval=10
    )
    saved = []
    for s in range(0, 25, 5):
        step.assign(s)
        saved.append(manager.save())
    assert [p and os.path.basename(p) for p in saved] == ["ckpt-1", None, "ckpt-2", None, "ckpt-3"]
    step.assign(21)
    assert manager.save(check_interval=False) is not None


def test_restore_or_initialize_calls_init_fn_when_empty(tmp_path: Path) -> None:
    called = []
    v = trackpoint.Variable(0.0)
    manager = trackpoint.CheckpointManager(
        trackpoint.Checkpoint(v=v), tmp_path, max_to_keep=1, init_fn=lambda: called.append(1)
    )
    assert manager.restore_or_initialize() is None
    assert called == [1]


def test_keep_checkpoint_every_n_hours_preserves_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000_000.0]
    # The manager reads time.time() for its timestamps; a fake clock avoids sleeping.
    monkeypatch.setattr("time.time", lambda: clock[0])
    manager, _ = _manager(tmp_path, max_to_keep=1, keep_checkpoint_every_n_hours=1.0)
    for _ in range(4):
        clock[0] += 1800.0  # half an hour per save
        manager.save()
    # ckpt-1 (t+0.5h) is dropped, ckpt-2 (t+1h) is preserved, ckpt-3 dropped, ckpt-4 kept.
    indexes = [f for f in _files(tmp_path) if f.endswith(".index")]
    assert indexes == ["ckpt-2.index", "ckpt-4.index"]
    assert manager.checkpoints == [str(tmp_path / "ckpt-4")]


def test_deletes_only_its_own_prefix_in_its_own_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.index").write_bytes(b"keep me")
    run = tmp_path / "run"
    manager, _ = _manager(run, max_to_keep=1)
    manager.save()
    # A state file edited to list a path outside the folder and a foreign prefix.
    state = read_checkpoint_state(run)
    assert state is not None
    from trackpoint.format import write_checkpoint_state

    (run / "other-1.index").write_bytes(b"foreign")
    write_checkpoint_state(
        run,
        state.model_checkpoint_path,
        [str(outside / "precious"), str(run / "other-1"), state.model_checkpoint_path],
        [2e9, 2e9, 2e9],
        1.0,
    )
    manager.close()
    again, _ = _manager(run, max_to_keep=1)
    again.save()
    again.save()
    assert (outside / "precious.index").read_bytes() == b"keep me"
    assert (run / "other-1.index").read_bytes() == b"foreign"


def test_failed_save_keeps_the_previous_latest(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path, max_to_keep=2)
    first = manager.save()
    manager.close()  # one writer per folder
    bad = trackpoint.Checkpoint(v=trackpoint.Variable(0.0), junk=[np.array([object()])])
    failing = trackpoint.CheckpointManager(bad, tmp_path, max_to_keep=2)
    with pytest.raises(trackpoint.TrackpointError):
        failing.save()
    assert trackpoint.latest_checkpoint(tmp_path) == first
    assert int(bad.save_counter.numpy()) == 0
    assert not [f for f in os.listdir(tmp_path) if ".tp-tmp-" in f]


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    ckpt = trackpoint.Checkpoint()
    with pytest.raises(trackpoint.InvalidValueError, match="max_to_keep"):
        trackpoint.CheckpointManager(ckpt, tmp_path, max_to_keep=0)
    with pytest.raises(trackpoint.InvalidValueError, match="step_counter"):
        trackpoint.CheckpointManager(ckpt, tmp_path, max_to_keep=1, checkpoint_interval=5)


def test_a_manager_created_before_another_writer_saved_continues_from_the_folder(
    tmp_path: Path,
) -> None:
    first, _ = _manager(tmp_path, max_to_keep=2)
    first.save()
    first.close()
    stale, _ = _manager(tmp_path, max_to_keep=2)  # reads the folder now: latest ckpt-1
    other, _ = _manager(tmp_path, max_to_keep=2)
    other.save(checkpoint_number=2)
    other.save(checkpoint_number=3)
    other.close()
    # Taking the folder, the stale manager re-reads what was committed meanwhile.
    stale.save(checkpoint_number=4)
    assert [os.path.basename(p) for p in stale.checkpoints] == ["ckpt-3", "ckpt-4"]
    state = read_checkpoint_state(tmp_path)
    assert state is not None
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-3", "ckpt-4"]
    assert _files(tmp_path) == [
        "checkpoint",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
        "ckpt-4.data-00000-of-00001",
        "ckpt-4.index",
    ]


# -- one numbered-save path (issue 12) ----------------------------------------------------


def test_manager_and_checkpoint_save_through_the_same_public_numbered_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    numbered = trackpoint.Checkpoint.save_numbered

    def spy(self: trackpoint.Checkpoint, *args: object, **kwargs: object) -> str:
        path: str = numbered(self, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(os.path.basename(path))
        return path

    monkeypatch.setattr(trackpoint.Checkpoint, "save_numbered", spy)
    manager, _ = _manager(tmp_path / "managed", max_to_keep=2)
    manager.save()
    manager.save(options=trackpoint.CheckpointOptions(enable_async=True))
    manager.sync()
    trackpoint.Checkpoint(w=trackpoint.Variable(1.0)).save(tmp_path / "plain" / "ckpt")
    assert calls == ["ckpt-1", "ckpt-2", "ckpt-1"]


def test_checkpoint_save_whose_state_file_fails_gives_its_number_back(tmp_path: Path) -> None:
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(1.0))
    (tmp_path / "checkpoint").mkdir()  # the state file cannot be replaced
    with pytest.raises(trackpoint.TrackpointError):
        ckpt.save(tmp_path / "ckpt")
    assert int(ckpt.save_counter.numpy()) == 0  # as a manager's failed save does
    (tmp_path / "checkpoint").rmdir()
    assert ckpt.save(tmp_path / "ckpt") == str(tmp_path / "ckpt-1")


# -- a broken latest checkpoint beside intact earlier ones (issue 12, point 6) -------------


def _three_saves(folder: Path) -> trackpoint.CheckpointManager:
    manager, v = _manager(folder, max_to_keep=5)
    for value in (1.0, 2.0, 3.0):
        v.assign(value)
        manager.save()
    manager.close()
    return manager


def _fresh(
    folder: Path, **kwargs: object
) -> tuple[trackpoint.CheckpointManager, trackpoint.Variable]:
    manager, v = _manager(folder, max_to_keep=5, **kwargs)
    v.assign(-1.0)
    return manager, v


def test_restore_of_a_latest_whose_data_file_moved_names_the_file_and_the_whole_ones(
    tmp_path: Path,
) -> None:
    _three_saves(tmp_path)
    moved = tmp_path / "ckpt-3.data-00000-of-00001"
    moved.rename(tmp_path / "elsewhere")
    manager, v = _fresh(tmp_path)
    with pytest.raises(trackpoint.IncompleteCheckpointError) as info:
        manager.checkpoint.restore(trackpoint.latest_checkpoint(tmp_path))
    message = str(info.value)
    assert message.startswith("'ckpt-3.data-00000-of-00001' is missing"), message
    assert "ckpt-2, ckpt-1 are complete" in message
    assert f"'{tmp_path / 'ckpt-2'}'" in message  # the one to pass instead
    assert "fall_back=True" in message
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in message
    assert info.value.file == str(moved)
    assert float(v.numpy()) == -1.0  # nothing was restored from the broken one
    with pytest.raises(trackpoint.IncompleteCheckpointError, match="ckpt-2, ckpt-1 are complete"):
        manager.restore_or_initialize()


def test_restore_stopped_by_a_damaged_tensor_names_the_whole_ones_and_the_mixed_state(
    tmp_path: Path,
) -> None:
    # Sizes are right (the cheap check before restoring passes): the damage is found only
    # while values are being read into the program, after some may have been assigned.
    model = trackpoint.Module()
    model.a = trackpoint.Variable(np.zeros(64))
    model.b = trackpoint.Variable(np.zeros(64))
    ckpt = trackpoint.Checkpoint(model=model)
    manager = trackpoint.CheckpointManager(ckpt, tmp_path, max_to_keep=5)
    for value in (1.0, 2.0, 3.0):
        model.a.assign(np.full(64, value))
        model.b.assign(np.full(64, value))
        manager.save()
    manager.close()
    data = tmp_path / "ckpt-3.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    fresh = trackpoint.Module()
    fresh.a = trackpoint.Variable(np.full(64, -1.0))
    fresh.b = trackpoint.Variable(np.full(64, -1.0))
    again = trackpoint.CheckpointManager(trackpoint.Checkpoint(model=fresh), tmp_path, 5)
    with pytest.raises(trackpoint.CorruptCheckpointError) as info:
        again.checkpoint.restore(trackpoint.latest_checkpoint(tmp_path))
    message = str(info.value)
    assert message.startswith("'ckpt-3.data-00000-of-00001' is damaged"), message
    assert "failed its checksum" in message
    assert "ckpt-2, ckpt-1 are complete" in message
    assert f"'{tmp_path / 'ckpt-2'}'" in message
    assert "fall_back=True" in message
    assert "stopped partway" in message  # the program's values are mixed now
    assert info.value.file == str(data)
    with pytest.warns(trackpoint.TrackpointWarning, match="restored 'ckpt-2'"):
        again.restore_or_initialize(fall_back=True)
    np.testing.assert_array_equal(fresh.a.numpy(), np.full(64, 2.0))
    np.testing.assert_array_equal(fresh.b.numpy(), np.full(64, 2.0))


def test_restore_or_initialize_falls_back_to_the_newest_checkpoint_that_verifies(
    tmp_path: Path,
) -> None:
    _three_saves(tmp_path)
    (tmp_path / "ckpt-3.data-00000-of-00001").unlink()
    data = tmp_path / "ckpt-2.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # ckpt-2 is whole in size but fails a checksum
    data.write_bytes(bytes(raw))
    manager, v = _fresh(tmp_path)
    with pytest.warns(trackpoint.TrackpointWarning) as caught:
        restored = manager.restore_or_initialize(fall_back=True)
    assert restored == str(tmp_path / "ckpt-1")
    assert float(v.numpy()) == 1.0
    # Past the broken ckpt-3: the next save is ckpt-4 (the file name is the counter).
    assert int(manager.checkpoint.save_counter.numpy()) == 3
    assert [w.filename for w in caught] == [__file__]
    message = str(caught[0].message)
    assert "restored 'ckpt-1'" in message
    assert "'ckpt-3': 'ckpt-3.data-00000-of-00001' is missing" in message
    assert "'ckpt-2':" in message
    assert "failed its checksum" in message
    # The manager's latest is what it restored; the folder's state file still names the
    # newest on disk until a save records a new one.
    assert manager.latest_checkpoint == str(tmp_path / "ckpt-1")
    assert trackpoint.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-3")
    assert manager.restore_or_initialize() == str(tmp_path / "ckpt-1")


def _break_the_two_newest(folder: Path) -> bytes:
    (folder / "ckpt-3.data-00000-of-00001").unlink()
    data = folder / "ckpt-2.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    return bytes(raw)


def test_saves_after_a_fall_back_continue_past_the_broken_ones_never_over_them(
    tmp_path: Path,
) -> None:
    _three_saves(tmp_path)
    damaged = _break_the_two_newest(tmp_path)
    manager, v = _fresh(tmp_path)
    with pytest.warns(trackpoint.TrackpointWarning, match="the next save is 'ckpt-4'"):
        manager.restore_or_initialize(fall_back=True)
    v.assign(4.0)
    assert manager.save() == str(tmp_path / "ckpt-4")
    # The broken files are as they were (a moved data file can still be put back).
    assert (tmp_path / "ckpt-2.data-00000-of-00001").read_bytes() == damaged
    assert (tmp_path / "ckpt-3.index").exists()
    assert manager.latest_checkpoint == str(tmp_path / "ckpt-4")
    assert trackpoint.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-4")
    assert int(manager.checkpoint.save_counter.numpy()) == 4
    again, w = _fresh(tmp_path)
    assert again.restore_or_initialize() == str(tmp_path / "ckpt-4")
    assert float(w.numpy()) == 4.0


def test_broken_checkpoints_skipped_by_a_fall_back_are_the_first_to_go(tmp_path: Path) -> None:
    _three_saves(tmp_path)
    _break_the_two_newest(tmp_path)
    v = trackpoint.Variable(0.0)
    manager = trackpoint.CheckpointManager(trackpoint.Checkpoint(v=v), tmp_path, max_to_keep=3)
    with pytest.warns(trackpoint.TrackpointWarning, match="restored 'ckpt-1'"):
        manager.restore_or_initialize(fall_back=True)
    manager.save()
    # ckpt-1 is the newest checkpoint that restores: max_to_keep removes the broken first.
    assert not (tmp_path / "ckpt-2.index").exists()
    assert (tmp_path / "ckpt-1.index").exists()
    manager.save()
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-1", "ckpt-4", "ckpt-5"]
    assert not (tmp_path / "ckpt-3.index").exists()


def test_fall_back_restores_an_intact_latest_without_a_word(tmp_path: Path) -> None:
    _three_saves(tmp_path)
    manager, v = _fresh(tmp_path)
    assert manager.restore_or_initialize(fall_back=True) == str(tmp_path / "ckpt-3")
    assert float(v.numpy()) == 3.0


def test_fall_back_with_no_checkpoint_that_verifies_raises_naming_each(tmp_path: Path) -> None:
    _three_saves(tmp_path)
    for n in (1, 2, 3):
        (tmp_path / f"ckpt-{n}.data-00000-of-00001").unlink()
    called: list[int] = []
    manager, v = _fresh(tmp_path, init_fn=lambda: called.append(1))
    with pytest.raises(trackpoint.IncompleteCheckpointError, match="no checkpoint in") as info:
        manager.restore_or_initialize(fall_back=True)
    for n in (1, 2, 3):
        assert f"'ckpt-{n}.data-00000-of-00001' is missing" in str(info.value)
    assert called == []  # never a silent start from scratch
    assert float(v.numpy()) == -1.0


def test_restore_or_initialize_warns_at_the_callers_line_unless_partial_is_expected(
    tmp_path: Path,
) -> None:
    saved = trackpoint.Module()
    saved.w = trackpoint.Variable(np.arange(3.0))
    trackpoint.CheckpointManager(trackpoint.Checkpoint(model=saved), tmp_path, 2).save()

    def fresh() -> tuple[trackpoint.CheckpointManager, trackpoint.Variable]:
        model = trackpoint.Module()
        model.w = trackpoint.Variable(np.zeros(3))
        extra = trackpoint.Variable(np.zeros(1))  # in the program, not in the checkpoint
        ckpt = trackpoint.Checkpoint(model=model, extra=extra)
        return trackpoint.CheckpointManager(ckpt, tmp_path, 2), model.w

    manager, w = fresh()
    with pytest.warns(trackpoint.PartialRestoreWarning, match="extra") as caught:
        manager.restore_or_initialize()
    assert caught[0].filename == __file__
    assert "restore_or_initialize(..., expect_partial=True)" in str(caught[0].message)
    np.testing.assert_array_equal(w.numpy(), np.arange(3.0))
    manager, w = fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager.restore_or_initialize(expect_partial=True)
    np.testing.assert_array_equal(w.numpy(), np.arange(3.0))
