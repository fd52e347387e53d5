"""Concurrency (reliability doc §4.6): writers, readers, async saves, exits and interrupts.

- One writer per folder: a second manager, in this process or another, gets
  `ConcurrentWriterError` naming the holder; a killed holder's lock is taken over.
- A reader racing a writer that deletes old checkpoints sees whole steps or clean
  "not found / incomplete" errors it retries: never a checksum error or a mix of steps.
- An async save racing the process's end (`sys.exit`, a SIGTERM handler) is committed;
  SIGKILL leaves the previous latest intact.
- Async snapshots: values changed after `save` returns are not saved; back to back saves
  run one at a time, in order.
- A KeyboardInterrupt anywhere in a save leaves the previous latest intact and nothing
  a new manager does not clean.

Heavier counts with `TRACKPOINT_STRESS=1`. Nothing here asserts a duration; sleeps only
place an interrupt or widen a race window.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from trackpoint import storage
from trackpoint.errors import ConcurrentWriterError
from trackpoint.format import BundleReader, read_checkpoint_state
from trackpoint.storage import LOCK_NAME

from . import _concurrency_child as other
from ._processes import TIMEOUT, Child

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

STRESS = os.environ.get("TRACKPOINT_STRESS") == "1"
CHILD = other.__file__
LEFTOVER_MARKS = (".tp-tmp-", ".tp-staging-")
ASYNC = trackpoint.CheckpointOptions(enable_async=True)


def leftovers(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS))


def latest(folder: str) -> str | None:
    """`latest_checkpoint`, asserting it did not fall back (no warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = trackpoint.latest_checkpoint(folder)
    assert not caught, [str(w.message) for w in caught]
    return found


def verify(prefix: str) -> None:
    with BundleReader(prefix) as reader:
        bad = [(key, err) for key, err in reader.verify() if err is not None]
    assert bad == [], bad


def restore_step(prefix: str, shape: tuple[int, int]) -> int:
    """Verify `prefix`, restore it into a fresh state, return the one step it holds."""
    verify(prefix)
    target = other.make_state(-1, *shape)
    target.restore(prefix).assert_consumed()
    return other.check_state(target, *shape)


def lock_holder(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, LOCK_NAME), encoding="utf-8") as f:
        holder: dict[str, Any] = json.load(f)
    return holder


# -- one writer per folder ---------------------------------------------------------------------


def test_a_second_manager_in_this_process_is_refused_until_the_first_closes(tmp_path):
    folder = str(tmp_path)
    first = trackpoint.CheckpointManager(other.make_state(1, 2, 16), folder, max_to_keep=3)
    assert first.save() == os.path.join(folder, "ckpt-1")
    ckpt = other.make_state(5, 2, 16)
    second = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=3)
    assert second.restore_or_initialize() == os.path.join(folder, "ckpt-1")  # reading is free
    before = sorted(os.listdir(folder))
    with pytest.raises(ConcurrentWriterError, match="in this process") as caught:
        second.save()
    err = caught.value
    assert err.pid == os.getpid()
    assert err.host == socket.gethostname()
    assert err.file == os.path.join(folder, LOCK_NAME)
    assert "CheckpointManager 'ckpt'" in str(err)
    # The refused save wrote nothing and used up no number.
    assert sorted(os.listdir(folder)) == before
    assert int(ckpt.save_counter.numpy()) == 1
    assert latest(folder) == os.path.join(folder, "ckpt-1")
    first.close()
    assert LOCK_NAME not in os.listdir(folder)
    other.set_state(ckpt, 2, 2, 16)
    assert second.save() == os.path.join(folder, "ckpt-2")
    assert lock_holder(folder)["pid"] == os.getpid()
    second.close()
    assert latest(folder) == os.path.join(folder, "ckpt-2")
    assert restore_step(os.path.join(folder, "ckpt-1"), (2, 16)) == 1
    assert restore_step(os.path.join(folder, "ckpt-2"), (2, 16)) == 2


@pytest.mark.parametrize("call", ["fstat", "ftruncate", "pwrite"])
def test_an_interrupt_just_after_the_lock_is_taken_leaves_the_folder_unlocked(
    tmp_path, monkeypatch, call
):
    # Found by the random-interrupt test below (seed 2299434258): a KeyboardInterrupt
    # between the flock and the lock object recording its descriptor left the folder
    # locked by a descriptor nothing would release, so every later writer was refused.
    from trackpoint.storage._lock import WriterLock

    real = getattr(os, call)

    def interrupted(*args: Any) -> Any:
        monkeypatch.setattr(os, call, real)  # once
        raise KeyboardInterrupt

    lock = WriterLock(str(tmp_path), "first")
    monkeypatch.setattr(os, call, interrupted)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert not lock.held
    second = WriterLock(str(tmp_path), "second")
    second.acquire()  # the folder is free
    assert second.held
    assert lock_holder(str(tmp_path))["owner"] == "second"
    second.release()


def test_a_manager_in_another_process_is_refused_naming_its_pid_and_host(tmp_path):
    folder = str(tmp_path)
    holder = Child(CHILD, "hold", folder, stdin=True)
    try:
        assert int(holder.expect("holding")[1]) == holder.pid
        ckpt = other.make_state(7, 2, 16)
        manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=3)
        assert manager.restore_or_initialize() == os.path.join(folder, "ckpt-1")
        before = sorted(os.listdir(folder))
        for _ in range(3):  # every attempt, not only the first
            with pytest.raises(ConcurrentWriterError) as caught:
                manager.save()
            err = caught.value
            assert err.pid == holder.pid
            assert err.host == socket.gethostname()
            assert f"in process {holder.pid} on host {socket.gethostname()}" in str(err)
        assert sorted(os.listdir(folder)) == before
        holder.close_stdin()
        holder.expect("released")
        assert holder.finish() == 0
        other.set_state(ckpt, 2, 2, 16)
        assert manager.save() == os.path.join(folder, "ckpt-2")
        manager.close()
    finally:
        holder.close()
    assert restore_step(os.path.join(folder, "ckpt-1"), (2, 16)) == 1
    assert restore_step(latest(folder) or "", (2, 16)) == 2


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path):
    folder = str(tmp_path)
    holder = Child(CHILD, "hold", folder, stdin=True)
    try:
        holder.expect("holding")
        holder.kill()
    finally:
        holder.close()
    # The killed process's record stays in the file; the kernel dropped its flock.
    assert lock_holder(folder)["pid"] == holder.pid
    ckpt = other.make_state(0, 2, 16)
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=3) as manager:
        manager.restore_or_initialize()
        other.set_state(ckpt, 2, 2, 16)
        assert manager.save() == os.path.join(folder, "ckpt-2")
        holder_now = lock_holder(folder)
        assert holder_now["pid"] == os.getpid()
        assert holder_now["host"] == socket.gethostname()
    assert LOCK_NAME not in os.listdir(folder)
    assert restore_step(latest(folder) or "", (2, 16)) == 2


# -- a reader racing a writer that deletes -------------------------------------------------------


class RaceLog:
    """What the racing reader saw."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.none = 0  # nothing committed yet
        self.retried: dict[str, int] = {}
        self.fallbacks = 0

    def retry(self, err: Exception) -> None:
        name = type(err).__name__
        self.retried[name] = self.retried.get(name, 0) + 1


def read_once(folder: str, log: RaceLog, pause: Callable[[], None]) -> None:
    """One read: latest, verify, full restore; a clean not-found/incomplete is retried.

    `pause()` runs between the steps, widening the windows in which the writer deletes.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prefix = trackpoint.latest_checkpoint(folder)
        # The reader was slower than two saves: the state file it read named a
        # checkpoint retention deleted just after, so it took the newest complete one.
        assert all(issubclass(w.category, trackpoint.TrackpointWarning) for w in caught)
        log.fallbacks += len(caught)
        if prefix is None:
            assert not log.steps, "latest went back to None"
            log.none += 1
            return
        pause()
        with BundleReader(prefix) as reader:
            pause()
            for key, err in reader.verify():
                if isinstance(err, trackpoint.IncompleteCheckpointError):
                    raise err  # deleted under us: clean, retried
                assert err is None, f"{key}: {err!r}"
        pause()
        target = other.make_state(-1, *other.WRITER)
        target.restore(prefix).assert_consumed()
        step = other.check_state(target, *other.WRITER)  # whole, one step, bit for bit
    except (trackpoint.CheckpointNotFoundError, trackpoint.IncompleteCheckpointError) as err:
        log.retry(err)
        return
    assert prefix == os.path.join(folder, f"ckpt-{step}")
    assert int(target.save_counter.numpy()) == step
    if log.steps:
        assert step >= log.steps[-1], f"latest went back from {log.steps[-1]} to {step}"
    log.steps.append(step)


def test_a_reader_racing_saves_and_deletions_sees_whole_steps_only(tmp_path):
    folder = str(tmp_path)
    saves = 1500 if STRESS else 300
    log = RaceLog()
    seed = int(os.environ.get("TRACKPOINT_KILL_SEED") or secrets.randbits(32))
    print(f"TRACKPOINT_KILL_SEED={seed}")
    rng = random.Random(seed)  # noqa: S311 - reproducible by seed, not secret

    def pause() -> None:
        time.sleep(rng.choice((0.0, 0.0, rng.uniform(0.0, 0.01))))

    writer = Child(CHILD, "writer", folder, str(saves), stdin=True)
    try:
        writer.expect("ready")
        for step in range(3, saves + 1, 3):
            # Three saves run while these two reads do: the second and third delete the
            # checkpoints that were the latest when the reads started.
            for _ in range(3):
                writer.send("go")
            read_once(folder, log, pause)
            read_once(folder, log, pause)
            for done in range(step - 2, step + 1):
                assert writer.expect("saved") == ["saved", str(done)]
        writer.close_stdin()
        assert writer.finish() == 0, writer.stderr()
    finally:
        writer.close()
    assert writer.lines[-1] == f"saved {saves}"
    reads = len(log.steps) + log.none + sum(log.retried.values())
    print(
        f"{reads} reads racing {saves} saves: {len(log.steps)} whole steps "
        f"({len(set(log.steps))} distinct), {log.none} before the first commit, "
        f"retried {log.retried}, {log.fallbacks} fallbacks"
    )
    assert reads == 2 * saves // 3
    assert len(log.steps) > reads // 2  # most reads succeed; the retries are the exception
    assert restore_step(latest(folder) or "", other.WRITER) == saves
    assert {n for n in os.listdir(folder) if n.endswith(".index")} == {
        f"ckpt-{saves - 1}.index",
        f"ckpt-{saves}.index",
    }


# -- an async save racing the end of the process -----------------------------------------------


@pytest.mark.parametrize("how", ["exit", "sigterm", "sigkill"])
def test_an_async_save_racing_the_end_of_the_process(tmp_path, how):
    folder = str(tmp_path)
    child = Child(CHILD, "exit", folder, how)
    try:
        if how == "exit":
            child.expect("returned")
            code = child.finish()
            assert code == 0, child.stderr()
        else:
            child.expect("in-flight")  # the background write is held at its first byte
            state = read_checkpoint_state(folder)
            assert state is not None
            assert state.model_checkpoint_path == os.path.join(folder, "ckpt-1")
            if how == "sigterm":
                child.proc.send_signal(signal.SIGTERM)
                assert child.finish() == 143, child.stderr()
            else:
                child.kill()
    finally:
        child.close()
    found = latest(folder)
    assert found is not None
    if how == "sigkill":
        # Killed mid-write: the previous checkpoint is intact and still the latest.
        assert found == os.path.join(folder, "ckpt-1")
        assert restore_step(found, other.EXITING) == 1
    else:
        # The interpreter waited for the write (a non-daemon thread) and its commit.
        assert found == os.path.join(folder, "ckpt-2"), child.stderr()
        assert restore_step(found, other.EXITING) == 2
        assert leftovers(folder) == []
        assert "Traceback" not in child.stderr()


# -- async snapshots ----------------------------------------------------------------------------


def test_arrays_changed_in_place_after_an_async_save_are_saved_as_they_were(tmp_path):
    rng = np.random.default_rng(0)
    arrays: list[np.ndarray[Any, Any]] = [
        rng.standard_normal(1 << 16).astype(np.float32) for _ in range(32)
    ]
    arrays.append(rng.integers(0, 1 << 40, size=8 << 20, dtype=np.int64))  # 64 MB
    expected = [a.copy() for a in arrays]
    ckpt = trackpoint.Checkpoint(arrays=arrays)
    with trackpoint.CheckpointManager(ckpt, tmp_path, max_to_keep=2) as manager:
        path = manager.save(options=ASYNC)
        for a in arrays:  # at once, while the background write runs
            a[...] = -1
        manager.sync()
    assert path is not None
    verify(path)
    fresh = [np.zeros_like(a) for a in expected]
    trackpoint.Checkpoint(arrays=fresh).restore(path).assert_consumed()
    for got, want in zip(fresh, expected, strict=True):
        assert got.tobytes() == want.tobytes()
    assert all((a == -1).all() for a in arrays)


@pytest.mark.parametrize("keep", [None, 3], ids=["keep-all", "keep-3"])
def test_back_to_back_async_saves_run_one_at_a_time_in_order(tmp_path, keep):
    folder = str(tmp_path)
    shape = (8, 1 << 17)  # 4 MB
    ckpt = other.make_state(0, *shape)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=keep)
    seen: list[int] = []
    try:
        for step in range(1, 11):
            other.set_state(ckpt, step, *shape)
            assert manager.save(options=ASYNC) == os.path.join(folder, f"ckpt-{step}")
            writers = [t for t in threading.enumerate() if t.name == "trackpoint-async-save"]
            assert len(writers) <= 1
            # The save before this one has committed (a save waits for the one in flight).
            found = latest(folder)
            number = int(found.rsplit("-", 1)[1]) if found else 0
            assert number in (step - 1, step)
            assert not seen or number >= seen[-1]
            seen.append(number)
        manager.sync()
    finally:
        manager.close()
    assert latest(folder) == os.path.join(folder, "ckpt-10")
    kept = range(1, 11) if keep is None else range(11 - keep, 11)
    assert sorted(n for n in os.listdir(folder) if n.endswith(".index")) == sorted(
        f"ckpt-{k}.index" for k in kept
    )
    for step in kept:
        assert restore_step(os.path.join(folder, f"ckpt-{step}"), shape) == step


# -- KeyboardInterrupt in the middle of a save ---------------------------------------------------

#: 6 MB in 24 tensors, saved in two data files by two threads.
_INTERRUPTED = (24, 1 << 16)
_TWO = trackpoint.CheckpointOptions(num_shards=2, threads=2)
_TIMER = "test-interrupt-timer"


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT handled by Python's `default_int_handler` for the test, then as it was.

    `_thread.interrupt_main()` raises KeyboardInterrupt only while that is SIGINT's
    handler: under another one (a framework's, a runner's, SIG_IGN left by earlier code)
    no interrupt lands, and these tests would count zero hits, whatever the code does.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        # None: a handler installed outside Python, which Python cannot put back.
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _commit_steps(folder: str, steps: range) -> None:
    ckpt = other.make_state(0, *_INTERRUPTED)
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2) as manager:
        manager.restore_or_initialize()
        for step in steps:
            other.set_state(ckpt, step, *_INTERRUPTED)
            assert manager.save(options=_TWO) == os.path.join(folder, f"ckpt-{step}")


def _interrupted_save(
    folder: str, step: int, interrupt: Callable[[], AbstractContextManager[Callable[[], bool]]]
) -> tuple[bool, int]:
    """Save `step` inside `interrupt()`, which raises KeyboardInterrupt in this thread at
    some moment; the function it yields returns once it has (or never will). Returns
    whether the interrupt hit the save, and the step a clean save after it saved.

    Afterwards the save's threads must all be gone, the latest must be the step before or
    (interrupted after its commit) this one, whole; and a new manager's next save must
    leave no temp files.
    """
    ckpt = other.make_state(0, *_INTERRUPTED)
    manager = trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2)
    manager.restore_or_initialize()
    other.set_state(ckpt, step, *_INTERRUPTED)
    threads_before = set(threading.enumerate())
    hit = False
    try:
        with interrupt() as settle:
            try:
                manager.save(options=_TWO)
            finally:
                assert settle()
                for _ in range(100):  # a pending interrupt is raised at the next bytecodes
                    pass
    except KeyboardInterrupt:
        hit = True
    # No writer thread of the interrupted save runs on (it could write into a file
    # descriptor the cleanup closed and the next save reuses).
    stray = [
        t
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and t.name != _TIMER
    ]
    assert stray == [], stray
    manager.close()
    found = latest(folder)
    assert found in (os.path.join(folder, f"ckpt-{step - 1}"), os.path.join(folder, f"ckpt-{step}"))
    assert restore_step(found or "", _INTERRUPTED) == int((found or "").rsplit("-", 1)[1])
    if not hit:
        assert found == os.path.join(folder, f"ckpt-{step}")
    # A new manager (as after a restart) cleans up at its first save, which saves the
    # step after the latest (over the files of the interrupted one, if they remained).
    after = int((found or "").rsplit("-", 1)[1]) + 1
    _commit_steps(folder, range(after, after + 1))
    assert leftovers(folder) == []
    assert latest(folder) == os.path.join(folder, f"ckpt-{after}")
    return hit, after


# An interrupt can land between `open()` returning a file object and the `with` block
# taking it (between two bytecodes); the object is then closed by the garbage collector,
# which warns. That is Python's behaviour, not a lost checkpoint: what this test checks
# is the folder.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("sigint_raises")
def test_a_keyboard_interrupt_at_random_moments_of_a_save_loses_nothing(tmp_path):
    seed = int(os.environ.get("TRACKPOINT_KILL_SEED") or secrets.randbits(32))
    print(f"TRACKPOINT_KILL_SEED={seed}")
    rng = random.Random(seed)  # noqa: S311 - reproducible by seed, not secret
    folder = str(tmp_path)
    _commit_steps(folder, range(1, 4))
    # How long a save takes here, to spread the interrupts over it.
    ckpt = other.make_state(0, *_INTERRUPTED)
    took = []
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=2) as manager:
        manager.restore_or_initialize()
        for step in range(4, 7):
            other.set_state(ckpt, step, *_INTERRUPTED)
            start = time.perf_counter()
            manager.save(options=_TWO)
            took.append(time.perf_counter() - start)
    window = 1.2 * statistics.median(took)

    @contextlib.contextmanager
    def interrupt_later() -> Iterator[Callable[[], bool]]:
        done = threading.Event()

        def fire() -> None:
            _thread.interrupt_main()
            done.set()

        timer = threading.Timer(rng.uniform(0.0, window), fire)
        timer.name = _TIMER
        timer.start()
        try:
            yield lambda: done.wait(TIMEOUT)
        finally:
            timer.join(TIMEOUT)

    step, hits = 6, 0
    cases = 200 if STRESS else 20
    for case in range(cases):
        try:
            hit, step = _interrupted_save(folder, step + 1, interrupt_later)
        except AssertionError as err:
            raise AssertionError(f"case {case} (TRACKPOINT_KILL_SEED={seed}): {err}") from err
        hits += hit
    print(f"{cases} interrupts, {hits} during a save")


class _InterruptAt(storage.Storage):
    """The local file system, raising KeyboardInterrupt in the main thread at operation N."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[Callable[[], bool]]:
        """Use this storage inside the block; the function yielded disarms it."""
        with storage.use(self):
            yield self._disarm

    def _disarm(self) -> bool:
        with self._lock:  # after this, it has fired or never will
            self.at = None
        return True

    def _tick(self) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.at:
                _thread.interrupt_main()

    def create(self, path: str) -> int:
        self._tick()
        return super().create(path)

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        self._tick()
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._tick()
        super().fsync(fd)

    def close(self, fd: int) -> None:
        self._tick()
        super().close(fd)

    def replace(self, source: str, target: str) -> None:
        self._tick()
        super().replace(source, target)

    def unlink(self, path: str) -> None:
        self._tick()
        super().unlink(path)

    def fsync_dir(self, path: str) -> None:
        self._tick()
        super().fsync_dir(path)


@pytest.mark.usefixtures("sigint_raises")
def test_a_keyboard_interrupt_at_every_file_operation_of_a_save_loses_nothing(tmp_path):
    folder = str(tmp_path)
    _commit_steps(folder, range(1, 4))
    counting = _InterruptAt(None)
    hit, step = _interrupted_save(folder, 4, counting.active)
    assert not hit
    total = counting.count
    assert total >= 10
    hits = 0
    for at in range(1, total + 1):
        try:
            hit, step = _interrupted_save(folder, step + 1, _InterruptAt(at).active)
        except AssertionError as err:
            raise AssertionError(f"interrupt at operation {at} of {total}: {err}") from err
        hits += hit
    print(f"{total} operations, {hits} interrupted saves")
    assert hits == total
