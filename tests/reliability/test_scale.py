"""Scale: 100,000 variables with an optimizer slot each, and one tensor over 4 GiB.

- 100k float32[2] variables trained one step by `SGD(momentum=0.9)` (a `momentum` slot
  per variable: 200,001 tensors with the object graph): the round trip is bit-exact,
  TensorFlow's `tf.train.load_checkpoint` reads every key with the value saved there,
  and `trackpoint inspect` needs only the `.index` (it runs on a folder holding the
  index alone).
- A uint8 tensor of 2**32 + 4097 bytes (offsets, sizes and the crc cross 32 bits): the
  round trip is exact, and neither saving nor reading into a preallocated buffer holds
  more than the tensor + 64 MiB (peak RSS, measured in a child process). It needs ~4 GiB
  of free disk and ~5 GiB of memory, and takes minutes here: run with `TRACKPOINT_STRESS=1`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from tests._compare import assert_bitwise_equal
from trackpoint.cli import main as cli_main
from trackpoint.optimizers import SGD

if TYPE_CHECKING:
    from pathlib import Path

STRESS = os.environ.get("TRACKPOINT_STRESS") == "1"
COUNT = 100_000


def _model(count: int) -> tuple[trackpoint.Checkpoint, list[trackpoint.Variable], SGD]:
    variables = [trackpoint.Variable(np.zeros(2, np.float32)) for _ in range(count)]
    model = trackpoint.Module()
    model.layers = variables
    optimizer = SGD(0.1, momentum=0.9)
    return trackpoint.Checkpoint(model=model, optimizer=optimizer), variables, optimizer


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A checkpoint of 100k variables and their momentum slots, and the values saved."""
    ckpt, variables, optimizer = _model(COUNT)
    values = np.arange(2 * COUNT, dtype=np.float32).reshape(COUNT, 2) * np.float32(0.37)
    for variable, row in zip(variables, values, strict=True):
        variable.assign(row)
    grads = np.sin(values)  # different per variable, so a swapped slot would show
    optimizer.apply_gradients(list(zip(grads, variables, strict=True)))
    slots = np.stack([_slot(optimizer, v) for v in variables])
    weights = np.stack([v.numpy() for v in variables])
    folder = tmp_path_factory.mktemp("many")
    prefix = ckpt.write(str(folder / "ckpt"))
    return {"prefix": prefix, "weights": weights, "slots": slots}


def _slot(optimizer: SGD, variable: trackpoint.Variable) -> np.ndarray[Any, Any]:
    slot = optimizer.get_slot(variable, "momentum")
    assert slot is not None
    return np.asarray(slot.numpy())  # type: ignore[attr-defined]


@pytest.mark.slow
def test_100k_variables_with_slots_round_trip_bit_exact(many):
    ckpt, variables, optimizer = _model(COUNT)
    ckpt.read(many["prefix"]).assert_consumed()  # the slots are created by the restore
    weights = np.stack([v.numpy() for v in variables])
    slots = np.stack([_slot(optimizer, v) for v in variables])
    assert_bitwise_equal(weights, many["weights"], "weights")
    assert_bitwise_equal(slots, many["slots"], "momentum slots")
    assert len(trackpoint.list_variables(many["prefix"])) == 2 * COUNT + 1  # + object graph


@pytest.mark.slow
@pytest.mark.tf
def test_tensorflow_reads_every_value_of_100k_variables_and_their_slots(many, tf):
    reader = tf.train.load_checkpoint(many["prefix"])
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    ours = dict(trackpoint.list_variables(many["prefix"]))
    assert set(shapes) == set(ours)
    assert len(shapes) == 2 * COUNT + 1
    weight_keys = [f"model/layers/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(COUNT)]
    slot_keys = [
        f"model/layers/{i}/.OPTIMIZER_SLOT/optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE"
        for i in range(COUNT)
    ]
    for keys, expected in ((weight_keys, many["weights"]), (slot_keys, many["slots"])):
        assert {dtypes[key].name for key in keys} == {"float32"}
        assert all(shapes[key] == [2] for key in keys)
        # Every value, from one reader, compared as one array: row i is key i's bytes.
        read = np.stack([reader.get_tensor(key) for key in keys])
        assert_bitwise_equal(read, expected, keys[0].replace("/0/", "/<i>/"))


@pytest.mark.slow
def test_inspect_of_100k_variables_needs_only_the_index(many, tmp_path, capsys):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(many["prefix"] + ".index", alone / "ckpt.index")  # no data file beside it
    assert cli_main(["inspect", "--json", str(alone / "ckpt")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["tensors"]) == 2 * COUNT + 1
    assert record["total_bytes"] == os.path.getsize(many["prefix"] + ".data-00000-of-00001")


# -- one tensor over 4 GiB --------------------------------------------------------------------

BIG = 2**32 + 4097
SLACK = 64 << 20

#: Run in a child process, so that its peak RSS is this test's alone.
_CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import trackpoint

    def pattern(start, n):
        i = np.arange(start, start + n, dtype=np.uint64)
        return ((i * np.uint64(0x9E3779B1)) >> np.uint64(23)).astype(np.uint8)

    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    mode, prefix, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    step = 1 << 20
    base = rss()
    big = np.empty(size, np.uint8)
    if mode == "save":
        for start in range(0, size, step):
            big[start : start + step] = pattern(start, min(step, size - start))
        trackpoint.Checkpoint(big=big).write(prefix)
    else:
        trackpoint.Checkpoint(big=big).read(prefix).assert_consumed()  # in place
        for start in range(0, size, step):
            n = min(step, size - start)
            if not np.array_equal(big[start : start + n], pattern(start, n)):
                raise SystemExit(f"bytes {start}..{start + n} differ")
    print(base, rss())
    """
)


def _run_child(mode: str, prefix: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, prefix, str(BIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    base, peak = (int(x) for x in done.stdout.split()[-2:])
    return base, peak


def _available_memory() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not STRESS, reason="writes and reads 4 GiB (minutes): TRACKPOINT_STRESS=1")
def test_a_tensor_over_4_gib_round_trips_within_its_size_plus_64_mib(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < BIG + (2 << 30):
        pytest.skip(f"needs {BIG + (2 << 30):,} bytes of free disk, {free:,} are free")
    if sys.platform != "linux" or _available_memory() < BIG + (1 << 30):
        pytest.skip("needs Linux and ~5 GiB of available memory")
    prefix = str(tmp_path / "big")
    base, peak = _run_child("save", prefix)
    assert peak - base <= BIG + SLACK, f"saving peaked at {(peak - base - BIG) >> 20} MiB extra"
    info = dict(trackpoint.list_variables(prefix))
    assert info["big/.ATTRIBUTES/VARIABLE_VALUE"] == [BIG]
    # One tensor, so one data file holds it all, whatever the shard count chosen.
    sizes = [e.stat().st_size for e in os.scandir(tmp_path) if ".data-" in e.name]
    assert max(sizes) > 2**32
    base, peak = _run_child("read", prefix)  # also checks every byte and the crc
    assert peak - base <= BIG + SLACK, f"reading peaked at {(peak - base - BIG) >> 20} MiB extra"
