"""The engine: save plans, parallel shard writers, parallel verified reads into place."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import trackpoint
from tests._commit_log import RecordingStorage, assert_committed
from tests._compare import assert_bitwise_equal
from tests._memory import traced_peak
from tests.interop._values import DTYPE_SAMPLES, SHAPE_SAMPLES, strings
from trackpoint import storage
from trackpoint.engine import plan_save, read_into_many, write_bundle
from trackpoint.engine._plan import BATCH_BYTES
from trackpoint.errors import CorruptCheckpointError, InvalidValueError
from trackpoint.format import BundleReader, BundleWriter, data_file_name

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

MiB = 1 << 20


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mixed_state(seed: int = 0) -> list[tuple[str, Any]]:
    """Large and small floats, ints, a string tensor, a scalar and an empty tensor."""
    rng = np.random.default_rng(seed)
    items: list[tuple[str, Any]] = [
        (f"big/{i}", rng.random(int(n), dtype=np.float32))
        for i, n in enumerate(rng.integers(300_000, 1_500_000, 7))
    ]
    items += [(f"small/{i:03d}", rng.integers(0, 100, int(n))) for i, n in enumerate(range(1, 300))]
    items += [
        ("scalar", np.float64(3.5)),
        ("empty", np.zeros((0, 3), np.float32)),
        ("names", strings("a", "bc", "", "déf")),
    ]
    return items


def assert_reads_back(prefix: Path, items: list[tuple[str, Any]]) -> None:
    reader = BundleReader(prefix)
    assert sorted(reader.keys()) == sorted(k for k, _ in items)
    for key, value in items:
        assert_bitwise_equal(reader.get_tensor(key), np.asarray(value), key)


# -- plans ------------------------------------------------------------------------------


def test_plan_balances_shards_within_the_largest_value():
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.integers(MiB, 64 * MiB, 60)]
    plan = plan_save(sizes, 4)
    assert max(plan.shard_sizes) - min(plan.shard_sizes) <= max(sizes)
    assert sum(plan.shard_sizes) == sum(sizes)
    placed = sorted(item.index for shard in plan.shards for item in shard)
    assert placed == list(range(len(sizes)))


def test_plan_is_deterministic_and_keeps_the_callers_order_inside_a_shard():
    sizes = [3 * MiB, 10, 2 * MiB, 5 * MiB, 20, MiB]
    first, second = plan_save(sizes, 3), plan_save(list(sizes), 3)
    assert first == second
    for shard in first.shards:
        indices = [item.index for item in shard]
        assert indices == sorted(indices)
        offsets = [item.offset for item in shard]
        assert offsets == sorted(offsets)
        assert offsets[:1] in ([], [0])


def test_one_shard_plan_is_the_callers_layout():
    sizes = [5, MiB, 7, 2 * MiB, 0, 9]
    plan = plan_save(sizes, 1, last=1)
    assert [item.index for item in plan.shards[0]] == [0, 2, 3, 4, 5, 1]
    end_of_big = 12 + 2 * MiB
    assert [item.offset for item in plan.shards[0]] == [
        0,
        5,
        12,
        end_of_big,
        end_of_big,
        end_of_big + 9,
    ]


def test_plan_keeps_small_neighbours_together():
    small = BATCH_BYTES // 1000 - 1  # just under one run of small values
    sizes = [1000] * small + [8 * MiB, 8 * MiB]
    plan = plan_save(sizes, 2)
    shard_of = {item.index: item.shard for shard in plan.shards for item in shard}
    assert len({shard_of[i] for i in range(small)}) == 1
    assert shard_of[small] != shard_of[small + 1]


def test_plan_puts_the_last_value_at_the_end_of_the_last_shard():
    plan = plan_save([MiB] * 5 + [100], 3, last=5)
    assert plan.shards[-1][-1].index == 5


@pytest.mark.parametrize(("num_shards", "last"), [(0, None), (2, 9)], ids=["no-shard", "last"])
def test_plan_refuses_bad_arguments(num_shards, last):
    with pytest.raises(InvalidValueError):
        plan_save([1, 2], num_shards, last=last)


# -- writing ----------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "two-threads"])
def test_one_shard_save_is_byte_identical_to_bundle_writer(tmp_path, threads):
    items = mixed_state() + [(s.key + "_s", s.value) for s in DTYPE_SAMPLES + SHAPE_SAMPLES]
    with BundleWriter(tmp_path / "a" / "ckpt") as writer:
        for key, value in items:
            writer.add(key, value)
    write_bundle(tmp_path / "b" / "ckpt", items, num_shards=1, threads=threads, last_key="scalar")
    # The pinned value moves to the end; the reference writes it there too.
    reordered = [kv for kv in items if kv[0] != "scalar"] + [("scalar", np.float64(3.5))]
    with BundleWriter(tmp_path / "c" / "ckpt") as writer:
        for key, value in reordered:
            writer.add(key, value)
    write_bundle(tmp_path / "d" / "ckpt", items, num_shards=1, threads=threads)
    for name in ("ckpt.index", "ckpt.data-00000-of-00001"):
        assert (tmp_path / "d" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_multi_shard_save_reads_back(tmp_path):
    items = mixed_state()
    write_bundle(tmp_path / "ckpt", items, num_shards=3, threads=2)
    assert files(tmp_path) == [
        "ckpt.data-00000-of-00003",
        "ckpt.data-00001-of-00003",
        "ckpt.data-00002-of-00003",
        "ckpt.index",
    ]
    sizes = [(tmp_path / data_file_name("ckpt", s, 3)).stat().st_size for s in range(3)]
    assert max(sizes) - min(sizes) <= 1_500_000 * 4
    assert_reads_back(tmp_path / "ckpt", items)


@pytest.mark.parametrize("second", ["a", b"a"], ids=["str", "bytes"])
def test_save_refuses_duplicate_keys_before_writing(tmp_path, second):
    with pytest.raises(InvalidValueError, match="'a' was added twice"):
        write_bundle(
            tmp_path / "ckpt", [("a", np.ones(2)), ("b", np.ones(1)), (second, np.ones(2))]
        )
    assert files(tmp_path) == []


def test_keys_given_as_str_or_bytes_from_an_iterator_sort_as_utf8(tmp_path):
    items: list[tuple[str | bytes, np.ndarray]] = [
        ("z", np.ones(1)),
        ("é", np.ones(2)),
        (b"\xe2\x82\xac", np.ones(3)),
        ("a", np.ones(4)),
    ]
    write_bundle(tmp_path / "ckpt", iter(items), last_key="é")
    reader = BundleReader(tmp_path / "ckpt")
    # The index's bytewise order: "é" is c3 a9, "€" is e2 82 ac.
    assert list(reader.keys()) == ["a", "z", "é", "€"]
    np.testing.assert_array_equal(reader.get_tensor("€"), np.ones(3))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    calls = []
    real_pwrite = os.pwrite

    def failing_pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(OSError, match="No space left"):
        write_bundle(tmp_path / "ckpt", mixed_state(), num_shards=2, threads=2)
    assert files(tmp_path) == []


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_save_renames_every_data_file_before_the_index_appears(tmp_path, durable):
    store = RecordingStorage()
    with storage.use(store):
        write_bundle(tmp_path / "ckpt", mixed_state(), num_shards=2, durable=durable)
    assert_committed(store.ops, tmp_path / "ckpt", num_shards=2, durable=durable)


def test_durable_save_syncs_each_file_before_its_rename_and_the_folder_after(tmp_path):
    items = mixed_state()
    store = RecordingStorage()
    with storage.use(store):
        write_bundle(tmp_path / "ckpt", items, num_shards=2, durable=True)
    assert_committed(store.ops, tmp_path / "ckpt", num_shards=2, durable=True)
    synced = {
        os.path.basename(op.path).split(".tp-tmp-")[0] for op in store.ops if op.kind == "fsync"
    }
    assert synced == set(files(tmp_path))  # both data files and the index, nothing else
    assert_reads_back(tmp_path / "ckpt", items)


def test_sync_save_does_not_copy_big_arrays(tmp_path):
    state = [(f"w{i}", np.ones(16 * MiB, np.uint8)) for i in range(8)]  # 128 MiB
    write_bundle(tmp_path / "warm", state[:1])  # staging buffers exist already
    peak = traced_peak(lambda: write_bundle(tmp_path / "ckpt", state, num_shards=2, threads=2))
    assert peak < 0.05 * 128 * MiB + 4 * MiB


# -- many small tensors -----------------------------------------------------------------


def test_twenty_thousand_tiny_tensors_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    items = [
        (f"t/{i:05d}", rng.random(int(n), dtype=np.float32))
        for i, n in enumerate(rng.integers(0, 40, 20_000))
    ]
    write_bundle(tmp_path / "ckpt", items, num_shards=2, threads=2)
    outs = [(key, np.full_like(value, -1.0)) for key, value in items]
    read_into_many(BundleReader(tmp_path / "ckpt"), outs, threads=2)
    for (_, out), (_, value) in zip(outs, items, strict=True):
        np.testing.assert_array_equal(out, value)


def test_checkpoint_of_many_small_arrays_restores_in_place(tmp_path):
    arrays = {f"a{i}": np.full(i % 50 + 1, i, np.int32) for i in range(3000)}
    ckpt = trackpoint.Checkpoint(state=arrays)
    path = ckpt.save(tmp_path / "ckpt")
    originals = {k: v.copy() for k, v in arrays.items()}
    for value in arrays.values():
        value[...] = -1
    trackpoint.Checkpoint(state=arrays).restore(path).assert_consumed()
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, originals[key])


# -- reading ----------------------------------------------------------------------------


def test_parallel_read_fills_existing_arrays(tmp_path):
    items = [(k, v) for k, v in mixed_state() if k != "names"]
    write_bundle(tmp_path / "ckpt", items, num_shards=2)
    outs = [(key, np.zeros_like(np.asarray(value))) for key, value in items]
    read_into_many(BundleReader(tmp_path / "ckpt"), outs, threads=2)
    for (_, out), (_, value) in zip(outs, items, strict=True):
        np.testing.assert_array_equal(out, value)


@pytest.mark.parametrize("key", ["big/3", "small/150"], ids=["direct-read", "batched-read"])
def test_flipped_byte_names_the_tensor_and_file(tmp_path, key):
    items = [(k, v) for k, v in mixed_state() if k != "names"]
    write_bundle(tmp_path / "ckpt", items, num_shards=2)
    reader = BundleReader(tmp_path / "ckpt")
    info = reader.info(key)
    path = reader.data_path(info.shard)
    entry_offset = reader._entries[key].offset
    with open(path, "r+b") as f:
        f.seek(entry_offset + info.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    outs = [(k, np.zeros_like(np.asarray(v))) for k, v in items]
    with pytest.raises(CorruptCheckpointError, match="failed its checksum") as caught:
        read_into_many(BundleReader(tmp_path / "ckpt"), outs, threads=2)
    assert caught.value.key == key
    assert caught.value.file == path


def test_truncated_shard_names_the_tensor_and_file(tmp_path):
    items = [("a", np.ones(4 * MiB, np.uint8)), ("b", np.ones(100, np.uint8))]
    write_bundle(tmp_path / "ckpt", items, num_shards=1)
    reader = BundleReader(tmp_path / "ckpt")
    outs = [(k, np.zeros_like(v)) for k, v in items]
    reader.locate("a", outs[0][1])  # opens the file while it is whole
    os.truncate(reader.data_path(0), 3 * MiB)
    with pytest.raises(CorruptCheckpointError, match="truncated") as caught:
        read_into_many(reader, outs[:1])
    assert caught.value.key == "a"
    assert caught.value.file == reader.data_path(0)


def test_read_checks_every_buffer_before_reading(tmp_path):
    write_bundle(tmp_path / "ckpt", [("a", np.ones(3)), ("b", np.ones(3))])
    a, b = np.zeros(3), np.zeros(4)
    with pytest.raises(InvalidValueError, match="'b'"):
        read_into_many(BundleReader(tmp_path / "ckpt"), [("a", a), ("b", b)])
    assert not a.any()


def test_restore_into_existing_arrays_allocates_little(tmp_path):
    state = {f"w{i}": np.full(4 * MiB, i, np.float32) for i in range(12)}  # 192 MiB
    state.update({f"s{i}": np.full(1000, i, np.float32) for i in range(2000)})  # ~8 MiB
    total = sum(v.nbytes for v in state.values())
    path = trackpoint.Checkpoint(state=state).save(tmp_path / "ckpt")
    for value in state.values():
        value[...] = -1
    ckpt = trackpoint.Checkpoint(state=state)
    ckpt.restore(path)  # warm: staging buffers, imports
    for value in state.values():
        value[...] = -1
    peak = traced_peak(lambda: ckpt.restore(path).assert_consumed())
    assert peak < 0.05 * total + 8 * MiB
    assert all((value == int(key[1:])).all() for key, value in state.items())


# -- the checkpoint API -----------------------------------------------------------------


def big_and_small_state(seed: int = 0) -> dict[str, NDArray[Any]]:
    """Over 8 MiB in all (so the restore reads with several threads), large and small values."""
    rng = np.random.default_rng(seed)
    state: dict[str, NDArray[Any]] = {
        f"big{i}": rng.random(400_000, dtype=np.float32)  # 1.5 MiB each
        for i in range(6)
    }
    state.update({f"small{i:03d}": rng.integers(0, 100, 50) for i in range(300)})
    return state


def test_first_save_commits_data_then_index_then_state_file(tmp_path):
    ckpt = trackpoint.Checkpoint(state=big_and_small_state())
    store = RecordingStorage()
    with storage.use(store):
        path = ckpt.save(tmp_path / "ckpt")  # durable by default
    assert path == str(tmp_path / "ckpt-1")
    assert_committed(
        store.ops, path, num_shards=1, durable=True, state_file=tmp_path / "checkpoint"
    )


def test_three_shard_save_commits_every_data_file_before_the_index(tmp_path):
    state = {f"w{i}": np.full(MiB, i, np.float32) for i in range(6)}
    store = RecordingStorage()
    with storage.use(store):
        path = trackpoint.Checkpoint(state=state).save(
            tmp_path / "ckpt", trackpoint.CheckpointOptions(num_shards=3, threads=2)
        )
    assert BundleReader(path).num_shards == 3
    assert_committed(
        store.ops, path, num_shards=3, durable=True, state_file=tmp_path / "checkpoint"
    )


@pytest.mark.parametrize("name", ["big3", "small150"], ids=["large-value", "batched-small-value"])
@pytest.mark.parametrize("how", ["restore", "read"])
def test_restore_of_a_flipped_data_byte_raises_naming_the_tensor_and_file(tmp_path, name, how):
    state = big_and_small_state()
    path = trackpoint.Checkpoint(state=state).save(tmp_path / "ckpt")
    key = f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE"
    with BundleReader(path) as reader:
        where = reader.locate(key, np.zeros_like(state[name]))
        assert where is not None  # read by the engine's parallel pass
        data_file, position = where.file, where.offset + where.size // 2
    with open(data_file, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x10]))
    fresh = {k: np.zeros_like(v) for k, v in state.items()}
    with pytest.raises(CorruptCheckpointError, match="failed its checksum") as caught:
        getattr(trackpoint.Checkpoint(state=fresh), how)(path)
    assert (caught.value.key, caught.value.file) == (key, data_file)
    assert f"tensor '{key}' in '{os.path.basename(data_file)}'" in str(caught.value)


def test_checkpoint_options_choose_shards(tmp_path):
    w = trackpoint.Variable(np.arange(10, dtype=np.float32))
    ckpt = trackpoint.Checkpoint(w=w)
    ckpt.write(tmp_path / "small")
    assert BundleReader(tmp_path / "small").num_shards == 1
    ckpt.write(tmp_path / "three", trackpoint.CheckpointOptions(num_shards=3, threads=2))
    reader = BundleReader(tmp_path / "three")
    assert reader.num_shards == 3
    assert reader.info("_CHECKPOINTABLE_OBJECT_GRAPH").shard == 2
    w.assign(np.zeros(10))
    trackpoint.Checkpoint(w=w).read(tmp_path / "three").assert_consumed()
    np.testing.assert_array_equal(w.numpy(), np.arange(10))


@pytest.mark.tf
def test_tensorflow_reads_a_multi_shard_save(tf, tmp_path):
    rng = np.random.default_rng(5)
    kernel = rng.random((300, 700), dtype=np.float32)
    bias = rng.random(700, dtype=np.float32)
    step = trackpoint.Variable(np.int64(42))
    prefix = trackpoint.Checkpoint(kernel=kernel, bias=bias, step=step).write(
        tmp_path / "ckpt", trackpoint.CheckpointOptions(num_shards=3, threads=2)
    )
    assert BundleReader(prefix).num_shards == 3
    reader = tf.train.load_checkpoint(prefix)
    assert_bitwise_equal(reader.get_tensor("kernel/.ATTRIBUTES/VARIABLE_VALUE"), kernel, "kernel")
    assert_bitwise_equal(reader.get_tensor("bias/.ATTRIBUTES/VARIABLE_VALUE"), bias, "bias")
    theirs = tf.train.Checkpoint(
        kernel=tf.Variable(tf.zeros((300, 700))),
        bias=tf.Variable(tf.zeros(700)),
        step=tf.Variable(tf.constant(0, tf.int64)),
    )
    theirs.read(prefix).assert_consumed()
    assert_bitwise_equal(theirs.kernel.numpy(), kernel, "kernel restored by TF")
    assert int(theirs.step.numpy()) == 42
