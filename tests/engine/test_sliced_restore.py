"""Partitioned (sliced) tensors restore like the others: in the parallel pass, in place.

TF's partitioned variables store a tensor as slices, usually row blocks (split along the
first axis). Each row block is a contiguous part of the live array, so it is read straight
into it with the other values; other slices are read one at a time into their place. No
restore holds a second copy of the tensor.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import trackpoint
from tests._memory import traced_peak
from trackpoint.engine import read_into_many
from trackpoint.errors import CorruptCheckpointError
from trackpoint.format import BundleReader, BundleWriter

MiB = 1 << 20


def _write_row_blocks(prefix: Path, full: np.ndarray, blocks: int, shards: int = 2) -> None:
    rows = len(full)
    cuts = np.linspace(0, rows, blocks + 1).astype(int)
    with BundleWriter(prefix, num_shards=shards) as writer:
        for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
            writer.add_slice(
                "emb",
                list(full.shape),
                [(int(start), int(stop - start)), (0, None)],
                full[start:stop],
                shard=i % shards,
            )
        writer.add("other", np.arange(10, dtype=np.float32))


def test_row_blocks_join_the_parallel_pass_and_fill_the_live_array(tmp_path):
    full = np.arange(4000 * 64, dtype=np.float32).reshape(4000, 64)
    _write_row_blocks(tmp_path / "ckpt", full, blocks=5)
    reader = BundleReader(tmp_path / "ckpt")
    out = np.zeros_like(full)
    parts = reader.locate_parts("emb", out)
    assert parts is not None
    assert len(parts) == 5
    # Each part's destination is a view of the live array, not a buffer of its own.
    assert all(np.shares_memory(place, out) for _, place in parts)
    other = np.zeros(10, np.float32)
    read_into_many(reader, [("emb", out), ("other", other)], threads=2)
    np.testing.assert_array_equal(out, full)
    np.testing.assert_array_equal(other, np.arange(10, dtype=np.float32))


def test_restoring_a_partitioned_variable_holds_no_second_copy(tmp_path):
    full = np.random.default_rng(3).random((8192, 512), dtype=np.float32)  # 16 MiB
    _write_row_blocks(tmp_path / "ckpt", full, blocks=4)
    out = np.zeros_like(full)
    reader = BundleReader(tmp_path / "ckpt")
    read_into_many(reader, [("emb", out)])  # warm: read buffers, thread pool
    out[...] = 0
    peak = traced_peak(lambda: read_into_many(reader, [("emb", out)]))
    assert peak < 2 * MiB  # the tensor is 16 MiB; reading it through a copy needed 16 more
    np.testing.assert_array_equal(out, full)


def test_column_blocks_are_read_into_their_place_one_part_at_a_time(tmp_path):
    full = np.arange(64 * 4096, dtype=np.float32).reshape(64, 4096)  # 1 MiB
    with BundleWriter(tmp_path / "ckpt") as writer:
        for start in range(0, 4096, 1024):
            writer.add_slice("w", [64, 4096], [(0, None), (start, 1024)], full[:, start:][:, :1024])
    reader = BundleReader(tmp_path / "ckpt")
    out = np.zeros_like(full)
    assert reader.locate_parts("w", out) is None  # a column block is strided in `out`
    peak = traced_peak(lambda: reader.read_into("w", out))
    assert peak < 0.5 * full.nbytes  # one part's buffer (a quarter), not the whole tensor
    np.testing.assert_array_equal(out, full)
    np.testing.assert_array_equal(reader.get_tensor("w"), full)


def test_a_damaged_part_is_named_and_reported_by_the_parallel_pass(tmp_path):
    full = np.arange(100 * 8, dtype=np.float32).reshape(100, 8)
    _write_row_blocks(tmp_path / "ckpt", full, blocks=2, shards=1)
    data = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF  # inside the first row block
    data.write_bytes(bytes(raw))
    reader = BundleReader(tmp_path / "ckpt")
    with pytest.raises(CorruptCheckpointError) as caught:
        read_into_many(reader, [("emb", np.zeros_like(full))])
    assert caught.value.key == "emb[0:50, 0:8]"


@pytest.mark.parametrize("pairwise", [True, False], ids=["box-test", "element-mask"])
def test_overlaps_and_gaps_are_refused_before_any_part_is_read(tmp_path, monkeypatch, pairwise):
    from trackpoint.format import _slices

    if not pairwise:
        monkeypatch.setattr(_slices, "_PAIRWISE_SLICES", 0)
    with BundleWriter(tmp_path / "overlap") as writer:
        writer.add_slice("w", [6, 2], [(0, 4), (0, None)], np.ones((4, 2)))
        writer.add_slice("w", [6, 2], [(3, 3), (0, None)], np.ones((3, 2)))
    with BundleWriter(tmp_path / "gap") as writer:
        writer.add_slice("w", [6, 2], [(0, 2), (0, None)], np.ones((2, 2)))
        writer.add_slice("w", [6, 2], [(3, 3), (0, None)], np.ones((3, 2)))
    out = np.full((6, 2), 7.0)
    with pytest.raises(CorruptCheckpointError, match=r"slice \[3:6, 0:2\] of tensor .w. overlaps"):
        read_into_many(BundleReader(tmp_path / "overlap"), [("w", out)])
    with pytest.raises(CorruptCheckpointError, match="hold fewer bytes than its shape"):
        read_into_many(BundleReader(tmp_path / "gap"), [("w", out)])
    assert (out == 7.0).all()  # refused before a byte was read into it


@pytest.mark.parametrize("fixture", ["sharded_variable/ckpt", "max_shard_size/ckpt"])
def test_tensorflow_partitioned_variables_restore_into_live_arrays(tf_fixtures, fixture):
    # sharded_variable: TF2 ShardedVariable, two row blocks (the parallel pass);
    # max_shard_size: `mod/a` cut into row and column blocks over five shards (part by part).
    prefix = tf_fixtures / fixture
    with BundleReader(prefix) as reader:
        names = [k for k in reader.keys() if k.startswith("mod/")]  # noqa: SIM118
        live = {k: np.zeros(reader.info(k).shape, reader.info(k).dtype.numpy) for k in names}
        expect = {k: reader.get_tensor(k) for k in names}
    numeric = {k: v for k, v in live.items() if v.dtype != object}
    module = {k.split("/")[1]: v for k, v in numeric.items()}
    # `mod/c` (strings) is not restored here: partial on purpose.
    trackpoint.Checkpoint(mod=module).read(prefix, expect_partial=True)
    for key, value in numeric.items():
        np.testing.assert_array_equal(value, expect[key], err_msg=key)
    assert any(BundleReader(prefix).info(k).sliced for k in numeric)
