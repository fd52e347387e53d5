"""Real `kill -9` of a saving process at random moments, and a real kernel's EFBIG.

Tier B of the reliability doc §4.1: a training job (`_kill_child.py`, a subprocess that
imports numpy and trackpoint only) saves a 20 MB state in a loop with a
`CheckpointManager(max_to_keep=3)`; the test SIGKILLs it at a uniformly random moment
of a save, then starts the job again on the same folder, as a restarted training job
does: it resumes from the latest checkpoint and saves the following steps. After every
kill the invariants of issue 6 hold: the latest checkpoint loads with no fallback,
verifies, holds exactly the step the job had saved or was saving (bit for bit), never
moves backwards, and few files exist beyond the kept checkpoints. 50 kills per run;
`TRACKPOINT_STRESS=1` makes it 2,000. The seed is printed and can be set with
`TRACKPOINT_KILL_SEED`.

Tier D: a subprocess with `RLIMIT_FSIZE` below what a save writes (SIGXFSZ ignored) gets
EFBIG from the kernel; the save raises a `SaveError` naming the file and the errno, and
the previous checkpoint stays intact and the latest.

Sleeps here only place the kill; nothing asserts a duration.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import random
import re
import secrets
import statistics
import sys
import time
import warnings
from typing import TYPE_CHECKING

import pytest

import trackpoint
from trackpoint.format import BundleReader
from trackpoint.storage import LOCK_NAME

from . import _kill_child as job
from ._processes import Child

if TYPE_CHECKING:
    from pathlib import Path

STRESS = os.environ.get("TRACKPOINT_STRESS") == "1"
KILLS = 2000 if STRESS else 50
CHILD = job.__file__
LEFTOVER_MARKS = (".tp-tmp-", ".tp-staging-")
_STEP = re.compile(re.escape(job.NAME) + r"-(\d+)[.]")


def leftovers(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if any(m in n for m in LEFTOVER_MARKS))


def latest_without_fallback(folder: str) -> str:
    """`latest_checkpoint`, asserting it neither fell back (warning) nor found nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = trackpoint.latest_checkpoint(folder)
    # The state file is written only after the checkpoint it names is complete, and the
    # manager never deletes the latest: a fallback would mean the state file named a
    # checkpoint that is gone.
    assert not caught, [str(w.message) for w in caught]
    assert found is not None, f"no checkpoint in {sorted(os.listdir(folder))}"
    return found


def measure_save(folder: str) -> float:
    """How long a save of the job's state takes here (the median of 3)."""
    ckpt = job.make_checkpoint(1)
    times = []
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=job.MAX_TO_KEEP) as manager:
        for step in range(1, 4):
            job.set_step(ckpt, step)
            start = time.perf_counter()
            manager.save()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_after_kill(folder: str, lines: list[str], committed: int) -> tuple[int, str]:
    """The invariants after a kill; returns the latest step and where the kill landed.

    Args:
        folder: The job's folder.
        lines: What the killed child printed.
        committed: The latest step before this child started.
    """
    last = lines[-1].split()
    step = int(last[1])
    if last[0] == "saved":
        # save() returned: the checkpoint is durable, and it is the latest.
        allowed, landed = {step}, "after a save returned"
    else:
        assert last[0] == "saving", lines[-3:]
        allowed, landed = {step - 1, step}, "during a save"
    # What a killed save leaves is its own temp or staging files, and only its own: the
    # job's first save cleaned everything earlier saves left.
    left = leftovers(folder)
    if last[0] == "saved":
        assert left == [], left
    for name in left:
        match = _STEP.match(name)
        assert match is None or int(match.group(1)) == step, (name, step)
    indexes = [n for n in os.listdir(folder) if n.endswith(".index") and n.startswith("ckpt-")]
    prefixes = {n.split(".", 1)[0] for n in os.listdir(folder) if _STEP.match(n)}
    # max_to_keep kept, plus the one being saved (written, not yet recorded or its
    # predecessor not yet deleted) and the data of one being deleted (index goes first).
    assert len(indexes) <= job.MAX_TO_KEEP + 1, sorted(indexes)
    assert len(prefixes) <= job.MAX_TO_KEEP + 2, sorted(prefixes)

    latest = latest_without_fallback(folder)
    got = job.read_step(latest)
    assert latest == os.path.join(folder, f"{job.NAME}-{got}")
    assert got in allowed, f"latest holds step {got}, expected one of {sorted(allowed)}"
    assert got >= committed, f"latest moved back from step {committed} to {got}"
    if got == step and last[0] == "saving":
        landed += ", after its commit"
    if left:
        landed += ", temp files left"
    return got, landed


def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("TRACKPOINT_KILL_SEED") or secrets.randbits(32))
    print(f"TRACKPOINT_KILL_SEED={seed}")
    rng = random.Random(seed)  # noqa: S311 - reproducible by seed, not secret
    took = collections.deque([measure_save(str(tmp_path / "measure"))], maxlen=25)
    folder = str(tmp_path / "run")
    committed = 0
    landings: collections.Counter[str] = collections.Counter()
    for kill in range(KILLS):
        child = Child(CHILD, "loop", folder)
        try:
            resumed = int(child.expect("resumed")[1])
            assert resumed == committed, f"resumed from step {resumed}, latest is {committed}"
            took.append(float(child.expect("saved")[2]))
            child.expect("saving")
            # Uniform over the save and a little beyond (the kill also lands after it).
            time.sleep(rng.uniform(0.0, 1.2 * statistics.median(took)))
            lines = child.kill()
            committed, landed = check_after_kill(folder, lines, committed)
        except AssertionError as err:
            raise AssertionError(
                f"kill {kill + 1} of {KILLS} (TRACKPOINT_KILL_SEED={seed}): {err}\n"
                f"the child printed: {child.lines[-4:]}"
            ) from err
        finally:
            child.close()
        landings[landed] += 1
    print(f"{KILLS} kills, latest step {committed}: {dict(landings)}")
    assert sum(landings.values()) == KILLS

    # A clean start saves once more and leaves exactly the kept checkpoints.
    ckpt = job.make_checkpoint(0)
    with trackpoint.CheckpointManager(ckpt, folder, max_to_keep=job.MAX_TO_KEEP) as manager:
        assert manager.restore_or_initialize() == latest_without_fallback(folder)
        assert job.check_step(ckpt) == committed
        job.set_step(ckpt, committed + 1)
        path = manager.save()
        kept = [os.path.basename(p) for p in manager.checkpoints]
    assert path == latest_without_fallback(folder)
    assert job.read_step(path) == committed + 1
    assert leftovers(folder) == []
    files = sorted(os.listdir(folder))
    for name in kept:
        # One complete set of data files (no shard of another count left over).
        with BundleReader(os.path.join(folder, name)) as reader:
            count = reader.num_shards
        data = [f"{name}.data-{i:05d}-of-{count:05d}" for i in range(count)]
        assert [f for f in files if f.startswith(name + ".")] == [*data, f"{name}.index"]
    assert {f.split(".")[0] for f in files} == {"checkpoint", *kept}
    assert kept[-1] == f"{job.NAME}-{committed + 1}"
    assert len(kept) == job.MAX_TO_KEEP


# -- tier D: the kernel refuses to grow a file (RLIMIT_FSIZE) ---------------------------------

#: (case, expected file, lowest and highest limit): the limit is above everything the
#: first save wrote (800 KB) and below the file the second save fails on.
_FSIZE_CASES = {
    # One 4.8 MB data file: its preallocation fails.
    "1": ("ckpt-2.data-00000-of-00001", 900_000, 4_500_000),
    # Three data files of 1.6 MB: the first one's preallocation fails.
    "3": ("ckpt-2.data-00000-of-00003", 900_000, 1_500_000),
    # The same through the background writer: the error comes at sync().
    "async": ("ckpt-2.data-00000-of-00001", 900_000, 4_500_000),
    # A 1.28 MB index (not preallocated): the kernel writes up to the limit, then EFBIG.
    "index": ("bulk.index", 900_000, 1_200_000),
}


def _fsize_runs() -> list[tuple[str, int]]:
    if not STRESS:
        return [("1", 1_000_000), ("async", 2_000_000), ("index", 1_000_000)]
    rng = random.Random(6)  # noqa: S311 - reproducible, not secret
    cases = sorted(_FSIZE_CASES)
    return [
        (case, rng.randrange(_FSIZE_CASES[case][1], _FSIZE_CASES[case][2]))
        for case in (cases[i % len(cases)] for i in range(20))
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize(("case", "limit"), _fsize_runs(), ids=lambda v: str(v))
def test_a_file_size_limit_fails_the_save_cleanly(tmp_path: Path, case: str, limit: int) -> None:
    folder = str(tmp_path)
    child = Child(CHILD, "fsize", folder, case, str(limit))
    try:
        code = child.finish()
        assert code == 0, child.stderr()
    finally:
        child.close()
    result = json.loads(child.lines[-2])
    name = _FSIZE_CASES[case][0]
    assert result["type"] == ("AsyncSaveError" if case == "async" else "SaveError"), result
    assert result["cause_type"] == "SaveError", result
    assert result["trackpoint"], result
    assert result["oserror"], result
    assert result["errno"] == errno.EFBIG, result
    assert result["file"] == os.path.join(folder, name), result
    assert f"'{os.path.join(folder, name)}'" in result["message"]
    assert "EFBIG" in result["message"]
    assert "ulimit -f" in result["message"]
    # The failed save used up no number, left nothing behind, and moved nothing.
    assert result["counter"] == 1, result
    assert result["files_after"] == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
    ], result
    assert result["latest_after"] == os.path.join(folder, "ckpt-1"), result
    assert job.read_step(os.path.join(folder, "ckpt-1"), tensors=8) == 1
    # With the limit lifted, the same manager saves again.
    assert child.lines[-1] == f"recovered {os.path.join(folder, 'ckpt-2')}"
    assert latest_without_fallback(folder) == os.path.join(folder, "ckpt-2")
    with BundleReader(os.path.join(folder, "ckpt-2")) as reader:
        assert [key for key, err in reader.verify() if err is not None] == []
    assert job.read_step(os.path.join(folder, "ckpt-1"), tensors=8) == 1
    assert leftovers(folder) == []
    assert LOCK_NAME not in os.listdir(folder)
