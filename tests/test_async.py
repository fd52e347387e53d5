"""Async saves: snapshot then return, write and commit in the background, errors on the next call.

No test sleeps or measures time: a blocking hook on the write path (`_write_items`),
released through a `threading.Event`, decides when the background write may run.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from tests._commit_log import RecordingStorage, assert_committed
from trackpoint import checkpoint as checkpoint_module
from trackpoint import storage
from trackpoint.engine import AsyncSaver
from trackpoint.format import read_checkpoint_state

if TYPE_CHECKING:
    from collections.abc import Iterator

ASYNC = trackpoint.CheckpointOptions(enable_async=True)
KEY = "v/.ATTRIBUTES/VARIABLE_VALUE"
#: Long enough for any write on a loaded machine; only reached if the code under test hangs.
TIMEOUT = 120.0

_real_write_items = checkpoint_module._write_items


class BlockingWrite:
    """Replaces `_write_items`: records each call and holds it until `release` is set."""

    def __init__(self, *, block: bool = True) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.events: list[str] = []
        self.items: list[list[tuple[str, Any]]] = []

    def __call__(
        self, prefix: str, items: Any, graph_bytes: bytes, options: trackpoint.CheckpointOptions
    ) -> None:
        self.events.append(f"start {os.path.basename(prefix)}")
        self.items.append(list(items))
        self.started.set()
        assert self.release.wait(TIMEOUT), "the test never released the write"
        _real_write_items(prefix, items, graph_bytes, options)
        self.events.append(f"end {os.path.basename(prefix)}")


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlockingWrite]:
    blocking = BlockingWrite()
    monkeypatch.setattr(checkpoint_module, "_write_items", blocking)
    yield blocking
    blocking.release.set()  # never leave a writer thread waiting behind a failed test


def _value(prefix: str | Path | None) -> Any:
    assert prefix is not None
    return trackpoint.load_checkpoint(prefix).get_tensor(KEY)


def _manager(
    folder: Path, max_to_keep: int | None = 2
) -> tuple[trackpoint.CheckpointManager, trackpoint.Variable]:
    v = trackpoint.Variable(np.zeros(4, np.float32))
    return trackpoint.CheckpointManager(trackpoint.Checkpoint(v=v), folder, max_to_keep), v


def _fail_with_enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- returning before the write ------------------------------------------------------------


def test_save_returns_before_the_write_and_sync_waits(tmp_path: Path, hook: BlockingWrite) -> None:
    v = trackpoint.Variable(np.arange(4, dtype=np.float32))
    ckpt = trackpoint.Checkpoint(v=v)
    path = ckpt.save(tmp_path / "ckpt", ASYNC)
    assert path == str(tmp_path / "ckpt-1")
    assert hook.started.wait(TIMEOUT)
    # The write is held: nothing is in place, and the state file has not moved.
    assert not os.path.exists(f"{path}.index")
    assert read_checkpoint_state(tmp_path) is None
    assert int(ckpt.save_counter.numpy()) == 1
    hook.release.set()
    ckpt.sync()
    assert hook.events == ["start ckpt-1", "end ckpt-1"]
    np.testing.assert_array_equal(_value(path), np.arange(4, dtype=np.float32))
    assert trackpoint.latest_checkpoint(tmp_path) == path


def test_write_returns_the_prefix_and_touches_no_state_file(
    tmp_path: Path, hook: BlockingWrite
) -> None:
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.ones(2, np.float32)))
    assert ckpt.write(tmp_path / "weights", ASYNC) == str(tmp_path / "weights")
    assert hook.started.wait(TIMEOUT)
    assert not (tmp_path / "weights.index").exists()
    hook.release.set()
    ckpt.sync()
    np.testing.assert_array_equal(_value(tmp_path / "weights"), np.ones(2, np.float32))
    assert read_checkpoint_state(tmp_path) is None


def test_with_block_syncs_on_exit(
    tmp_path: Path, hook: BlockingWrite, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sync = AsyncSaver.sync

    def release_and_sync(self: AsyncSaver) -> None:
        # The write is released only by a sync: if `with` did not sync, it stays held.
        hook.release.set()
        real_sync(self)

    monkeypatch.setattr(AsyncSaver, "sync", release_and_sync)
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.ones(2, np.float32)))
    with ckpt:
        path = ckpt.write(tmp_path / "w", ASYNC)
        assert hook.started.wait(TIMEOUT)
        assert not os.path.exists(f"{path}.index")
    assert hook.events == ["start w", "end w"]
    assert os.path.exists(f"{path}.index")


# -- the snapshot ---------------------------------------------------------------------------


def test_values_changed_after_save_returns_are_not_in_the_checkpoint(
    tmp_path: Path, hook: BlockingWrite
) -> None:
    live = np.arange(6, dtype=np.float64)
    counter = trackpoint.Variable(np.int64(5))
    ckpt = trackpoint.Checkpoint(a=live, c=counter)
    path = ckpt.save(tmp_path / "ckpt", ASYNC)
    # Training goes on while the write is held.
    live *= -1
    counter.assign(np.int64(99))
    hook.release.set()
    ckpt.sync()
    reader = trackpoint.load_checkpoint(path)
    np.testing.assert_array_equal(
        reader.get_tensor("a/.ATTRIBUTES/VARIABLE_VALUE"), np.arange(6, dtype=np.float64)
    )
    assert reader.get_tensor("c/.ATTRIBUTES/VARIABLE_VALUE") == 5
    assert reader.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_snapshot_buffers_are_reused_from_save_to_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = BlockingWrite(block=False)
    monkeypatch.setattr(checkpoint_module, "_write_items", hook)
    v = trackpoint.Variable(np.zeros((256, 64), np.float32))
    ckpt = trackpoint.Checkpoint(v=v, other=np.zeros(3, np.int32))
    ckpt.save(tmp_path / "ckpt", ASYNC)
    ckpt.sync()
    saver = ckpt._async_saver
    assert saver is not None
    first = dict(saver.buffers)
    addresses = {key: buffer.ctypes.data for key, buffer in first.items()}
    v.assign(np.ones((256, 64), np.float32))
    ckpt.other = np.zeros(5, np.int32)  # a new shape needs a new buffer
    ckpt.save(tmp_path / "ckpt", ASYNC)
    ckpt.sync()
    second = saver.buffers
    assert second[KEY] is first[KEY]
    assert second[KEY].ctypes.data == addresses[KEY]
    assert (
        second["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]
        is first["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]
    )
    other_key = "other/.ATTRIBUTES/VARIABLE_VALUE"
    assert second[other_key] is not first[other_key]
    assert second[other_key].shape == (5,)
    # The writer is handed the buffers themselves, not copies of them.
    written = dict(hook.items[1])
    assert all(written[key] is buffer for key, buffer in second.items())
    np.testing.assert_array_equal(_value(tmp_path / "ckpt-1"), np.zeros((256, 64), np.float32))
    np.testing.assert_array_equal(_value(tmp_path / "ckpt-2"), np.ones((256, 64), np.float32))


# -- ordering ---------------------------------------------------------------------------------


def test_back_to_back_saves_are_ordered_and_both_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = BlockingWrite(block=False)
    monkeypatch.setattr(checkpoint_module, "_write_items", hook)
    manager, v = _manager(tmp_path, max_to_keep=None)
    v.assign(np.full(4, 1.0, np.float32))
    first = manager.save(options=ASYNC)
    v.assign(np.full(4, 2.0, np.float32))
    second = manager.save(options=ASYNC)
    manager.sync()
    # One save in flight at a time: the second write began after the first one ended.
    assert hook.events == ["start ckpt-1", "end ckpt-1", "start ckpt-2", "end ckpt-2"]
    assert first is not None
    assert second is not None
    np.testing.assert_array_equal(_value(first), np.full(4, 1.0, np.float32))
    np.testing.assert_array_equal(_value(second), np.full(4, 2.0, np.float32))
    assert manager.latest_checkpoint == second
    assert manager.checkpoints == [first, second]
    assert trackpoint.latest_checkpoint(tmp_path) == second


def test_a_sync_save_waits_for_the_async_one_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = BlockingWrite(block=False)
    monkeypatch.setattr(checkpoint_module, "_write_items", hook)
    manager, _ = _manager(tmp_path)
    manager.save(options=ASYNC)
    manager.save()
    assert hook.events == ["start ckpt-1", "end ckpt-1", "start ckpt-2", "end ckpt-2"]
    assert manager.latest_checkpoint == str(tmp_path / "ckpt-2")


# -- failures -----------------------------------------------------------------------------------


def test_a_failure_is_raised_by_the_next_sync_and_the_previous_stays_latest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, v = _manager(tmp_path)
    v.assign(np.full(4, 7.0, np.float32))
    first = manager.save()
    monkeypatch.setattr(checkpoint_module, "_write_items", _fail_with_enospc)
    v.assign(np.full(4, 8.0, np.float32))
    failed = manager.save(options=ASYNC)
    assert failed == str(tmp_path / "ckpt-2")
    with pytest.raises(trackpoint.AsyncSaveError, match="'ckpt-1' is intact and still the latest"):
        manager.sync()
    manager.sync()  # raised once
    assert manager.latest_checkpoint == first
    assert trackpoint.latest_checkpoint(tmp_path) == first
    assert manager.checkpoints == [first]
    assert not (tmp_path / "ckpt-2.index").exists()
    np.testing.assert_array_equal(_value(first), np.full(4, 7.0, np.float32))

    # The manager goes on, and the failed save's number is used again.
    monkeypatch.setattr(checkpoint_module, "_write_items", _real_write_items)
    again = manager.save(options=ASYNC)
    manager.sync()
    assert again == str(tmp_path / "ckpt-2")
    assert manager.latest_checkpoint == again
    np.testing.assert_array_equal(_value(again), np.full(4, 8.0, np.float32))


def test_a_failure_is_raised_by_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.ones(2, np.float32)))
    first = ckpt.save(tmp_path / "ckpt")
    monkeypatch.setattr(checkpoint_module, "_write_items", _fail_with_enospc)
    failed = ckpt.save(tmp_path / "ckpt", ASYNC)
    monkeypatch.setattr(checkpoint_module, "_write_items", _real_write_items)
    with pytest.raises(trackpoint.AsyncSaveError) as caught:
        ckpt.save(tmp_path / "ckpt", ASYNC)
    error = caught.value
    assert isinstance(error.__cause__, OSError)
    assert error.__cause__.errno == errno.ENOSPC
    assert error.prefix == failed
    assert error.previous == first
    assert str(error) == (
        f"background save of '{failed}' failed (OSError: [Errno 28] No space left on device); "
        "'ckpt-1' is intact and still the latest"
    )
    assert trackpoint.latest_checkpoint(tmp_path) == first
    # The raising save wrote nothing; the next one does.
    assert ckpt.save(tmp_path / "ckpt", ASYNC) == failed
    ckpt.sync()
    assert trackpoint.latest_checkpoint(tmp_path) == failed


def test_a_failed_write_names_the_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.ones(2, np.float32)))
    monkeypatch.setattr(checkpoint_module, "_write_items", _fail_with_enospc)
    ckpt.write(tmp_path / "weights", ASYNC)
    with pytest.raises(trackpoint.AsyncSaveError, match="no other checkpoint was changed"):
        ckpt.sync()


def test_manager_deletes_old_checkpoints_only_after_the_commit(
    tmp_path: Path, hook: BlockingWrite
) -> None:
    manager, _ = _manager(tmp_path, max_to_keep=1)
    hook.release.set()
    first = manager.save()
    hook.release.clear()
    hook.started.clear()
    second = manager.save(options=ASYNC)
    assert hook.started.wait(TIMEOUT)
    # Held mid-write: the old checkpoint is kept and still the latest everywhere.
    assert (tmp_path / "ckpt-1.index").exists()
    assert manager.latest_checkpoint == first
    assert manager.checkpoints == [first]
    assert trackpoint.latest_checkpoint(tmp_path) == first
    hook.release.set()
    manager.sync()
    assert manager.latest_checkpoint == second
    assert manager.checkpoints == [second]
    assert trackpoint.latest_checkpoint(tmp_path) == second
    assert not (tmp_path / "ckpt-1.index").exists()
    assert sorted(os.listdir(tmp_path)) == [
        ".trackpoint-writer.lock",  # the manager still holds the folder
        "checkpoint",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
    ]
    manager.close()
    assert ".trackpoint-writer.lock" not in os.listdir(tmp_path)


@pytest.mark.parametrize("saver", ["checkpoint", "manager"])
def test_async_save_commits_data_then_index_then_state_file(tmp_path: Path, saver: str) -> None:
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.arange(4, dtype=np.float32)))
    store = RecordingStorage()
    with storage.use(store):  # process-wide: the background writer uses it too
        if saver == "manager":
            manager = trackpoint.CheckpointManager(ckpt, tmp_path, max_to_keep=None)
            path = manager.save(options=ASYNC)
            manager.close()  # waits for the save
        else:
            path = ckpt.save(tmp_path / "ckpt", ASYNC)
            ckpt.sync()
    assert path == str(tmp_path / "ckpt-1")
    assert_committed(
        store.ops, path, num_shards=1, durable=True, state_file=tmp_path / "checkpoint"
    )
    assert _value(path).tolist() == [0, 1, 2, 3]


# -- interpreter exit ---------------------------------------------------------------------------


_EXIT_SCRIPT = """
import sys, threading
import numpy as np
import trackpoint
from trackpoint import checkpoint as checkpoint_module

real = checkpoint_module._write_items
fail = sys.argv[2] == "fail"

def write_after_main_exits(*args):
    # Start writing only once the main thread has finished: only a writer the
    # interpreter waits for can complete the checkpoint.
    threading.main_thread().join()
    if fail:
        raise OSError(28, "No space left on device")
    real(*args)

checkpoint_module._write_items = write_after_main_exits
v = trackpoint.Variable(np.arange(1 << 16, dtype=np.float32))
manager = trackpoint.CheckpointManager(trackpoint.Checkpoint(v=v), sys.argv[1], max_to_keep=3)
print(manager.save(options=trackpoint.CheckpointOptions(enable_async=True)), flush=True)
"""


def _run_exit_script(folder: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXIT_SCRIPT), str(folder), mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )


def test_interpreter_exit_waits_for_the_write(tmp_path: Path) -> None:
    result = _run_exit_script(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert path == str(tmp_path / "ckpt-1")
    assert trackpoint.latest_checkpoint(tmp_path) == path
    np.testing.assert_array_equal(_value(path), np.arange(1 << 16, dtype=np.float32))


def test_a_failure_nobody_collected_is_reported_at_exit(tmp_path: Path) -> None:
    result = _run_exit_script(tmp_path, "fail")
    assert "trackpoint: background save of" in result.stderr
    assert "No space left on device" in result.stderr
    assert trackpoint.latest_checkpoint(tmp_path) is None


# -- frameworks ---------------------------------------------------------------------------------


def test_torch_model_and_optimizer_round_trip(tmp_path: Path, hook: BlockingWrite) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()

    step()
    expected_model = {k: t.clone() for k, t in model.state_dict().items()}
    expected_state = [
        {k: t.clone() if torch.is_tensor(t) else t for k, t in s.items()}
        for s in optimizer.state_dict()["state"].values()
    ]
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    path = ckpt.save(tmp_path / "ckpt", ASYNC)
    assert hook.started.wait(TIMEOUT)
    step()  # trains on, in place, while the write is held
    hook.release.set()
    ckpt.sync()

    torch.manual_seed(1)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.5)
    trackpoint.Checkpoint(model=fresh, optimizer=fresh_optimizer).restore(path).assert_consumed()
    for key, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, expected_model[key]), key
    restored = list(fresh_optimizer.state_dict()["state"].values())
    assert len(restored) == len(expected_state)
    for got, want in zip(restored, expected_state, strict=True):
        assert set(got) == set(want)
        for name, value in want.items():
            assert torch.equal(torch.as_tensor(got[name]), torch.as_tensor(value)), name
    assert fresh_optimizer.param_groups[0]["lr"] == 0.01


def test_restore_or_initialize_waits_for_the_save_in_flight(tmp_path):
    v = trackpoint.Variable(np.arange(4.0))
    manager = trackpoint.CheckpointManager(trackpoint.Checkpoint(v=v), tmp_path, max_to_keep=2)
    path = manager.save(options=trackpoint.CheckpointOptions(enable_async=True))
    # The latest checkpoint is the one being written: restoring it must wait for its commit.
    assert manager.restore_or_initialize() == path
    assert trackpoint.latest_checkpoint(tmp_path) == path
