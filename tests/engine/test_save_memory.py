"""A save of many small tensors adds little memory: the issue's bound is 5% of the state.

Everything a sync save keeps per tensor counts here: the walk of the objects, the keys,
the values' byte views, the plan, the checksums, the index entries and the object graph.
It was ~1.7 KiB per tensor (34 MiB for 20,000 tensors); it is now ~330 bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from tests._memory import traced_peak
from trackpoint.format import BundleReader, BundleWriter
from trackpoint.graph import OBJECT_GRAPH_KEY

if TYPE_CHECKING:
    from numpy.typing import NDArray

MiB = 1 << 20
COUNT = 20_000


@pytest.fixture(scope="module")
def small_state() -> dict[str, NDArray[np.float32]]:
    """20,000 float32 arrays of 1-10 KiB each, ~107 MiB in all, each with its own values."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(256, 2560, COUNT)
    return {f"v{i:05d}": rng.random(int(n), dtype=np.float32) for i, n in enumerate(sizes)}


def test_sync_save_of_twenty_thousand_small_tensors_adds_under_five_percent(
    tmp_path: Path, small_state: dict[str, NDArray[np.float32]]
) -> None:
    state_bytes = sum(a.nbytes for a in small_state.values())
    ckpt = trackpoint.Checkpoint(state=small_state)
    options = trackpoint.CheckpointOptions(durable=False)
    ckpt.write(tmp_path / "warm", options)  # staging buffers and adapters exist already
    peak = traced_peak(lambda: ckpt.write(tmp_path / "ckpt", options))
    # ~6.3 MiB now; 34 MiB (1.7 KiB a tensor) before the save kept its bookkeeping lean.
    assert peak < 0.05 * state_bytes + 4 * MiB, f"{peak / COUNT:.0f} bytes a tensor"
    assert peak < 500 * COUNT + 2 * MiB, f"{peak / COUNT:.0f} bytes a tensor"
    fresh = {key: np.full_like(value, -1.0) for key, value in small_state.items()}
    trackpoint.Checkpoint(state=fresh).read(tmp_path / "ckpt").assert_consumed()
    for key, value in small_state.items():
        np.testing.assert_array_equal(fresh[key], value)


def test_lean_save_writes_the_same_bytes_as_the_bundle_writer(tmp_path: Path) -> None:
    # Values prepared, planned and indexed without objects per value; the files are still
    # byte for byte those of the one-tensor-at-a-time writer (TF's layout: node order,
    # the object graph last).
    rng = np.random.default_rng(11)
    sizes = rng.integers(0, 300, 3000)
    state: dict[str, NDArray[Any]] = {
        f"a{i:04d}": rng.random(int(n), dtype=np.float32) for i, n in enumerate(sizes)
    }
    state["strided"] = np.arange(20, dtype=np.int64)[::2]  # prepared as a contiguous copy
    state["big_endian"] = np.arange(5, dtype=">i4")
    state["text"] = np.array([b"x", "yz"], dtype=object)
    prefix = trackpoint.Checkpoint(state=state).write(
        tmp_path / "ckpt", trackpoint.CheckpointOptions(num_shards=1)
    )
    graph = BundleReader(prefix).get_tensor(OBJECT_GRAPH_KEY)
    with BundleWriter(tmp_path / "by_writer") as writer:
        for name, value in state.items():
            writer.add(f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE", value)
        writer.add(OBJECT_GRAPH_KEY, graph)
    for suffix in (".index", ".data-00000-of-00001"):
        ours = Path(f"{prefix}{suffix}").read_bytes()
        assert ours == Path(f"{tmp_path / 'by_writer'}{suffix}").read_bytes(), suffix


def test_async_save_of_many_small_tensors_reads_back(
    tmp_path: Path, small_state: dict[str, NDArray[np.float32]]
) -> None:
    ckpt = trackpoint.Checkpoint(state=small_state)
    options = trackpoint.CheckpointOptions(enable_async=True, durable=False)
    ckpt.write(tmp_path / "ckpt", options)
    ckpt.sync()
    reader = BundleReader(tmp_path / "ckpt")
    for key in ("v00000", "v09999", "v19999"):
        np.testing.assert_array_equal(
            reader.get_tensor(f"state/{key}/.ATTRIBUTES/VARIABLE_VALUE"), small_state[key]
        )
