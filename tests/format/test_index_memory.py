"""The parsed index costs little memory per tensor and reads back exactly what was written.

A restore of tens of thousands of small tensors keeps the reader's index for its whole
length: one object per tensor used to cost ~330 bytes each (more than 5% of a 4 KiB
tensor); the columnar index keeps ~135 (a 39-character key alone is 88 of them). Opening
streams the table, so the peak is the file's bytes plus the index, not every entry twice.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests._compare import assert_bitwise_equal
from tests.format.test_bad_input import entry, header
from trackpoint.errors import CorruptCheckpointError, KeyNotFoundError
from trackpoint.format import BundleReader, BundleWriter, TableBuilder, data_file_name
from trackpoint.format._dtypes import DType
from trackpoint.format._index import EntryIndex
from trackpoint.format._sstable import TableError, iter_table
from trackpoint.format.protos import tensor_bundle_pb2

if TYPE_CHECKING:
    from pathlib import Path

MANY = 20_000
# Measured: ~134 bytes per key retained and ~150 beyond the file's bytes at the peak of
# opening; the index of one object per tensor retained ~330 and peaked ~515 beyond them.
RETAINED_PER_KEY = 180
OPEN_PEAK_PER_KEY = 200


def many_key(i: int) -> str:
    return f"model/t{i:05d}/.ATTRIBUTES/VARIABLE_VALUE"


def many_value(i: int) -> np.ndarray:
    return np.full(4, i, np.float32)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bundle of MANY small tensors, two shards, keys as TF names object-graph values."""
    prefix = str(tmp_path_factory.mktemp("many") / "ckpt")
    with BundleWriter(prefix, num_shards=2) as writer:
        for i in range(MANY):
            writer.add(many_key(i), many_value(i), shard=i % 2)
    return prefix


def open_traced(prefix: str) -> tuple[BundleReader, int, int]:
    """Open a reader; return it, the bytes it retains and the traced peak while opening."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reader = BundleReader(prefix)
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return reader, retained - before, peak - before


def test_reader_of_many_small_tensors_retains_little_per_key(many):
    BundleReader(many).close()  # imports and caches are not the index's
    reader, retained, peak = open_traced(many)
    with open(many + ".index", "rb") as f:
        index_bytes = len(f.read())
    with reader:
        assert len(reader.keys()) == MANY
        assert retained <= RETAINED_PER_KEY * MANY, f"{retained / MANY:.0f} bytes per key"
        beyond_file = peak - index_bytes
        assert beyond_file <= OPEN_PEAK_PER_KEY * MANY + (1 << 20), (
            f"{beyond_file / MANY:.0f} bytes per key beyond the file's {index_bytes}"
        )


def test_every_key_of_a_large_index_reads_back(many):
    with BundleReader(many) as reader:
        keys = reader.keys()
        assert keys == sorted(many_key(i) for i in range(MANY))
        for i, info in enumerate(reader.infos()):
            assert info.key is keys[i]  # the index's own string, not a copy
            assert (info.dtype.name, info.shape, info.size, info.sliced) == (
                "float32",
                (4,),
                16,
                False,
            )
        for i in range(0, MANY, 7):
            key = many_key(i)
            assert key in reader
            info = reader.info(key)
            assert info.key is keys[i]
            assert info.shard == i % 2
            assert_bitwise_equal(reader.get_tensor(key), many_value(i), key)
            out = np.empty(4, np.float32)
            reader.read_into(key, out)
            assert_bitwise_equal(out, many_value(i), key)
        assert many_key(MANY) not in reader
        assert b"model" not in reader
        with pytest.raises(KeyNotFoundError, match="did you mean") as caught:
            reader.info(many_key(3)[:-1])
        assert caught.value.key == many_key(3)[:-1]
        assert reader.data_files_complete()
        assert all(error is None for _, error in reader.verify())


def test_data_files_complete_sees_a_short_shard_of_many(many, tmp_path):
    copy = str(tmp_path / "ckpt")
    for name in [many + ".index", data_file_name(many, 0, 2), data_file_name(many, 1, 2)]:
        with open(name, "rb") as src, open(copy + name[len(many) :], "wb") as dst:
            dst.write(src.read())
    with open(data_file_name(copy, 1, 2), "r+b") as f:
        f.truncate(MANY * 8 - 1)  # the last tensor of shard 1 loses its last byte
    with BundleReader(copy) as reader:
        assert not reader.data_files_complete()


def odd_bundle(folder: Path) -> str:
    """Keys that are not valid UTF-8 among valid ones, a sliced tensor and strings."""
    prefix = str(folder / "ckpt")
    strings = np.empty(2, dtype=object)
    strings[:] = [b"hello", b"world!"]
    with BundleWriter(prefix, num_shards=2) as writer:
        # b"a]" sorts before b"a\xff" as bytes, but "a]" after "a\\xff" as decoded text.
        writer.add(b"a]", np.array([1], np.int8), shard=0)
        writer.add(b"a\xff", np.array([2], np.int8), shard=1)
        # Both decode to "odd\\xff": the later one in the index is read, as TF's map does.
        writer.add(b"odd\\xff", np.array([3], np.int16), shard=0)
        writer.add(b"odd\xff", np.array([4], np.int16), shard=1)
        writer.add(b"\xed\xa0\x80surrogate", np.array([5], np.uint8), shard=0)
        writer.add("strings", strings, shard=1)
        writer.add_slice("w", [4, 2], [(0, 2), (0, None)], np.arange(4.0).reshape(2, 2), shard=0)
        writer.add_slice("w", [4, 2], [(2, 2), (0, None)], np.arange(4.0, 8).reshape(2, 2), shard=1)
        writer.add("z", np.arange(3, dtype=np.uint16), shard=1)
    return prefix


def test_keys_that_are_not_utf8_slices_and_strings_read_back(tmp_path):
    prefix = odd_bundle(tmp_path)
    with BundleReader(prefix) as reader:
        # In the index's (bytes) order: the key that was not UTF-8 (0xed) comes last.
        assert reader.keys() == [
            "a]",
            "a\\xff",
            "odd\\xff",
            "strings",
            "w",
            "z",
            "\\xed\\xa0\\x80surrogate",
        ]
        expected = {
            "a]": [1],
            "a\\xff": [2],
            "odd\\xff": [4],
            "strings": [b"hello", b"world!"],
            "w": np.arange(8.0).reshape(4, 2).tolist(),
            "z": [0, 1, 2],
            "\\xed\\xa0\\x80surrogate": [5],
        }
        for key, values in expected.items():
            assert key in reader
            assert reader.get_tensor(key).tolist() == values
        assert [info.key for info in reader.infos()] == reader.keys()
        sliced = reader.info("w")
        assert (sliced.shape, sliced.shard, sliced.sliced, sliced.size) == ((4, 2), -1, True, 64)
        assert reader.info("odd\\xff").dtype.name == "int16"
        assert reader.data_files_complete()
        assert dict(reader.verify()) == dict.fromkeys(expected)
    with BundleReader(prefix, mmap=True) as mapped:
        assert mapped.get_tensor("a\\xff").tolist() == [2]


def test_data_files_complete_sees_a_missing_slice_shard(tmp_path):
    prefix = odd_bundle(tmp_path)
    with open(data_file_name(prefix, 1, 2), "r+b") as f:
        f.truncate(0)
    with BundleReader(prefix) as reader:
        assert not reader.data_files_complete()


def test_streamed_table_yields_what_the_whole_table_holds():
    items = [(f"k{i:04d}".encode(), bytes([i % 256]) * (i % 40)) for i in range(500)]
    out = io.BytesIO()
    builder = TableBuilder(out, block_size=128)
    for key, value in items:
        builder.add(key, value)
    builder.finish()
    assert list(iter_table(out.getvalue())) == items


def test_damaged_table_is_reported_before_a_bad_entry_read_earlier(tmp_path):
    # The first entry does not parse, and a data block further on fails its checksum:
    # the table's damage is named, as when the whole table was checked before any entry.
    prefix = str(tmp_path / "ckpt")
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        f.write(bytes(64))
    out = io.BytesIO()
    table = TableBuilder(out, block_size=64)
    table.add(b"", header().SerializeToString())
    table.add(b"a", b"\x08")  # a varint cut short
    good: tensor_bundle_pb2.BundleEntryProto = entry(1, [4], data=bytes(16))
    for i in range(20):
        table.add(f"b{i:02d}".encode(), good.SerializeToString())
    table.finish()
    data = bytearray(out.getvalue())
    data[data.rfind(good.SerializeToString()) + 1] ^= 0x01  # in the last data block
    with open(prefix + ".index", "wb") as f:
        f.write(data)
    with pytest.raises(CorruptCheckpointError, match="block checksum mismatch") as caught:
        BundleReader(prefix)
    assert isinstance(caught.value.__cause__, TableError)
    assert caught.value.file == prefix + ".index"


def test_index_widens_its_columns_for_many_dtypes_and_shards():
    # A damaged index may list hundreds of unknown dtype numbers; a bundle may have
    # more shards than one byte counts.
    index = EntryIndex(70_000)
    for i in range(300):
        dtype = DType(1000 + i, f"unknown_dtype_{1000 + i}", None)
        index.append(f"k{i:03d}", dtype, (i, 2), 69_999 - i, i, 2**62 + i, 2**32 - 1, None)
    index.finish()
    for i in range(0, 300, 37):
        got = index[f"k{i:03d}"]
        assert (got.dtype.enum, got.shape, got.shard, got.offset, got.size, got.crc) == (
            1000 + i,
            (i, 2),
            69_999 - i,
            i,
            2**62 + i,
            2**32 - 1,
        )
    ends = index.data_ends()
    assert ends is not None
    assert ends[69_999] == 2**62  # offset 0 + size 2**62
    assert ends[69_700] == 299 + 2**62 + 299
