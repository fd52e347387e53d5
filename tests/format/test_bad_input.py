"""Damaged, doctored and foreign files: each fails with a TrackpointError naming the file.

Doctored indexes are built with TableBuilder and the generated protos, so their block
checksums are valid and only the bundle-level checks can catch what is wrong with them.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._memory import traced_peak
from trackpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    TrackpointError,
    UnsupportedCheckpointError,
)
from trackpoint.format import BundleReader, BundleWriter, TableBuilder, data_file_name
from trackpoint.format._crc32c import crc32c, mask
from trackpoint.format._dtypes import encode_strings
from trackpoint.format._sstable import MAGIC
from trackpoint.format._varint import decode_varint, encode_varint
from trackpoint.format.protos import tensor_bundle_pb2
from trackpoint.reader import load_checkpoint

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from numpy.typing import NDArray

Entry = tensor_bundle_pb2.BundleEntryProto


# -- helpers -------------------------------------------------------------------------------


def entry(
    dtype: int,
    shape: Sequence[int],
    *,
    data: bytes = b"",
    offset: int = 0,
    size: int | None = None,
    shard: int = 0,
    crc: int | None = None,
) -> Entry:
    """An entry whose crc is right for `data` unless told otherwise."""
    proto = Entry()
    proto.dtype = dtype  # type: ignore[assignment]
    proto.shape.SetInParent()
    for dim in shape:
        proto.shape.dim.add().size = dim
    proto.shard_id = shard
    proto.offset = offset
    proto.size = len(data) if size is None else size
    proto.crc32c = mask(crc32c(data)) if crc is None else crc
    return proto


def header(num_shards: int = 1, **version: Any) -> tensor_bundle_pb2.BundleHeaderProto:
    proto = tensor_bundle_pb2.BundleHeaderProto(num_shards=num_shards)
    proto.version.producer = 1
    for name, value in version.items():
        if name == "bad_consumers":
            proto.version.bad_consumers.extend(value)
        else:
            setattr(proto.version, name, value)
    return proto


def make_bundle(
    folder: Path,
    entries: dict[bytes, Entry | bytes],
    *,
    shards: Sequence[bytes] = (b"",),
    head: tensor_bundle_pb2.BundleHeaderProto | bytes | None = None,
    name: str = "ckpt",
) -> str:
    """Write data shards and an index (valid table, possibly doctored bundle) by hand."""
    prefix = str(folder / name)
    for i, data in enumerate(shards):
        with open(data_file_name(prefix, i, len(shards)), "wb") as f:
            f.write(data)
    head = header(len(shards)) if head is None else head
    with open(prefix + ".index", "wb") as out:
        table = TableBuilder(out)
        table.add(b"", head if isinstance(head, bytes) else head.SerializeToString())
        for key in sorted(entries):
            value = entries[key]
            table.add(key, value if isinstance(value, bytes) else value.SerializeToString())
        table.finish()
    return prefix


def float32s(*values: float) -> bytes:
    return np.array(values, np.float32).tobytes()


def good_bundle(folder: Path, *, num_shards: int = 1) -> str:
    prefix = str(folder / "ckpt")
    with BundleWriter(prefix, num_shards=num_shards) as writer:
        # Shard 0: a at 0 (64 bytes), s at 64 (lengths 05 06, length crc, "helloworld!").
        writer.add("a", np.arange(16, dtype=np.float32), shard=0)
        strings = np.empty(2, dtype=object)
        strings[:] = [b"hello", b"world!"]
        writer.add("s", strings, shard=0)
        # Shard 0 at 81, or alone in the last shard.
        writer.add("b", np.arange(4, dtype=np.int64), shard=num_shards - 1)
    return prefix


def read_everything(prefix: str, **kwargs: Any) -> dict[str, NDArray[Any]]:
    with BundleReader(prefix, **kwargs) as reader:
        return {info.key: reader.get_tensor(info.key) for info in reader.infos()}


def outcome(prefix: str, **kwargs: Any) -> dict[str, NDArray[Any]] | TrackpointError:
    """Every tensor of the bundle, or the TrackpointError reading it raised (others escape)."""
    try:
        return read_everything(prefix, **kwargs)
    except TrackpointError as err:
        return err


def read_error(prefix: str, key: str, match: str, **kwargs: Any) -> CorruptCheckpointError:
    """The CorruptCheckpointError that reading `key` raises (fails if it raises nothing)."""
    with (
        BundleReader(prefix, **kwargs) as reader,
        pytest.raises(CorruptCheckpointError, match=match) as info,
    ):
        reader.get_tensor(key)
    return info.value


def flip(path: Path | str, position: int, bits: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ bits]))


# -- missing files ----------------------------------------------------------------------


def test_reader_rejects_missing_index(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with pytest.raises(CheckpointNotFoundError, match=r"'ckpt\.index' is missing") as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"
    assert isinstance(info.value, FileNotFoundError)


def test_load_checkpoint_rejects_missing_index_beside_data_files(tmp_path):
    prefix = good_bundle(tmp_path)
    os.remove(prefix + ".index")
    with pytest.raises(CheckpointNotFoundError, match="although its data files exist") as info:
        load_checkpoint(prefix)
    assert info.value.file == prefix + ".index"
    assert "ckpt.data-00000-of-00001" in str(info.value)


def test_load_checkpoint_names_other_checkpoints_when_the_prefix_is_missing(tmp_path):
    good_bundle(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="the folder holds ckpt") as info:
        load_checkpoint(tmp_path / "ckpt-7")
    assert info.value.file == str(tmp_path / "ckpt-7.index")
    assert info.value.candidates == (str(tmp_path / "ckpt"),)


def test_load_checkpoint_rejects_a_missing_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere" / "ckpt")


def test_reader_rejects_missing_data_shard(tmp_path):
    prefix = good_bundle(tmp_path, num_shards=2)
    missing = prefix + ".data-00001-of-00002"
    os.remove(missing)
    with BundleReader(prefix) as reader:  # the index alone opens, as in TF
        assert reader.get_tensor("a").shape == (16,)  # shard 0 is still there
        with pytest.raises(IncompleteCheckpointError, match="must stay together") as info:
            reader.get_tensor("b")
    assert info.value.file == missing
    assert "'ckpt.data-00001-of-00002' is missing" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_verify_reports_a_missing_shard_for_each_key_in_it(tmp_path):
    prefix = good_bundle(tmp_path, num_shards=2)
    os.remove(prefix + ".data-00001-of-00002")
    with BundleReader(prefix) as reader:
        results = dict(reader.verify())
    assert results["a"] is None
    assert isinstance(results["b"], IncompleteCheckpointError)


# -- damaged data ------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 10, 63, 64], ids=lambda n: f"keep-{n}")
def test_reader_rejects_truncated_data_shard(tmp_path, keep):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    os.truncate(data, keep)
    err = read_error(prefix, "a" if keep < 64 else "s", "truncated")
    assert err.file == data
    assert err.key in ("a", "s")


def test_reader_rejects_truncated_data_shard_with_mmap(tmp_path):
    prefix = good_bundle(tmp_path)
    os.truncate(prefix + ".data-00000-of-00001", 20)
    err = read_error(prefix, "a", "truncated", mmap=True)
    assert err.key == "a"


@pytest.mark.parametrize(
    ("position", "key"),
    [(0, "a"), (63, "a"), (81, "b"), (81 + 31, "b")],
    ids=["first-byte", "last-byte", "other-tensor", "last-tensor-last-byte"],
)
def test_reader_rejects_flipped_tensor_byte(tmp_path, position, key):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    assert os.path.getsize(data) == 81 + 32
    flip(data, position)
    for mmap in (False, True):
        err = read_error(prefix, key, "failed its checksum", mmap=mmap)
        assert err.file == data
        assert err.key == key
        assert "restore an earlier checkpoint" in str(err)


def test_reader_rejects_flipped_string_byte(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    flip(data, 64 + 2 + 4)  # first byte of "hello"
    err = read_error(prefix, "s", "failed its checksum")
    assert (err.file, err.key) == (data, "s")


def test_reader_rejects_flipped_string_length_checksum(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    flip(data, 64 + 2)  # inside the masked length crc
    err = read_error(prefix, "s", "length checksum")
    assert (err.file, err.key) == (data, "s")


def test_reader_rejects_flipped_string_length(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    flip(data, 64, 0x02)  # "hello" now claims 7 bytes: the lengths no longer fit the size
    err = read_error(prefix, "s", "do not fit its stored size")
    assert (err.file, err.key) == (data, "s")


def test_flipped_data_bytes_never_escape_as_raw_errors(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    size = os.path.getsize(data)
    for position in range(size):
        for bits in (0x01, 0x80):
            flip(data, position, bits)
            with pytest.raises(CorruptCheckpointError) as info:
                read_everything(prefix)
            assert info.value.file == data
            assert info.value.key in ("a", "b", "s")
            flip(data, position, bits)
    assert read_everything(prefix)["b"].tolist() == [0, 1, 2, 3]


# -- damaged or foreign index files ------------------------------------------------------


def test_reader_rejects_flipped_index_byte(tmp_path):
    prefix = good_bundle(tmp_path)
    index = prefix + ".index"
    flip(index, 5)  # inside the header entry of the first data block
    with pytest.raises(CorruptCheckpointError, match="block checksum mismatch") as info:
        BundleReader(prefix)
    assert info.value.file == index
    assert "not a readable checkpoint index" in str(info.value)


def test_every_flipped_index_byte_is_caught_or_harmless(tmp_path):
    prefix = good_bundle(tmp_path)
    index = prefix + ".index"
    expected = read_everything(prefix)
    size = os.path.getsize(index)
    # Bytes no reader needs, ignored as TF ignores them: the metaindex block (always empty in
    # a bundle), its trailer and its handle in the footer, and the footer's zero padding.
    with open(index, "rb") as f:
        table = f.read()
    meta_offset, pos = decode_varint(table, size - 48)
    meta_size, index_handle = decode_varint(table, pos)
    _, pos = decode_varint(table, index_handle)
    _, pos = decode_varint(table, pos)
    ignored = set(range(meta_offset, meta_offset + meta_size + 5))
    ignored |= set(range(size - 48, index_handle)) | set(range(pos, size - 8))
    for position in range(size):
        for bits in (0x01, 0x10, 0xFF):
            flip(index, position, bits)
            got = outcome(prefix)
            if isinstance(got, TrackpointError):
                assert isinstance(got, (CorruptCheckpointError, UnsupportedCheckpointError))
                assert got.file == index
            else:
                assert position in ignored, position
                assert got.keys() == expected.keys()
                assert all(np.array_equal(got[k], expected[k]) for k in got)
            flip(index, position, bits)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'model_checkpoint_path: "ckpt-1"\n',
        np.random.default_rng(7).bytes(4096),
        b"\x00" * 48,
        b"\x00" * 40 + struct.pack("<Q", 0xDB4775248B80FB57),
    ],
    ids=["empty", "text-file", "random-bytes", "zeros", "magic-only"],
)
def test_reader_rejects_files_that_are_not_checkpoints(tmp_path, content):
    index = tmp_path / "ckpt.index"
    index.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match="not a readable checkpoint index") as info:
        BundleReader(tmp_path / "ckpt")
    assert info.value.file == str(index)
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(index)


@pytest.mark.parametrize("keep", [1, 47, 48, 100, -1], ids=lambda n: f"keep-{n}")
def test_reader_rejects_truncated_index(tmp_path, keep):
    prefix = good_bundle(tmp_path)
    index = prefix + ".index"
    os.truncate(index, keep if keep > 0 else os.path.getsize(index) + keep)
    with pytest.raises(CorruptCheckpointError, match="not a readable checkpoint index") as info:
        BundleReader(prefix)
    assert info.value.file == index


@pytest.mark.parametrize(
    ("entries", "phrase"),
    [
        ({}, None),
        ({b"a": b"\x08"}, "does not parse"),
        ({b"a": b"\xff\xff\xff"}, "does not parse"),
    ],
    ids=["only-header", "truncated-entry-proto", "garbage-entry-proto"],
)
def test_reader_checks_entry_protos(tmp_path, entries, phrase):
    prefix = make_bundle(tmp_path, entries)
    if phrase is None:
        with BundleReader(prefix) as reader:
            assert reader.keys() == []
        return
    with pytest.raises(CorruptCheckpointError, match=phrase) as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"


def test_reader_rejects_index_without_a_header(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as out:
        table = TableBuilder(out)
        table.add(b"a", entry(1, [0]).SerializeToString())
        table.finish()
    with pytest.raises(CorruptCheckpointError, match="not the bundle header") as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"


def test_reader_rejects_empty_table(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as out:
        TableBuilder(out).finish()
    with pytest.raises(CorruptCheckpointError, match="not the bundle header"):
        BundleReader(prefix)


@pytest.mark.parametrize(
    ("head", "phrase"),
    [
        (b"\x08", "header does not parse"),
        (header(num_shards=0), "declares 0 data shards"),
        (header(num_shards=-3), "declares -3 data shards"),
        (header(num_shards=1 << 30), "declares 1073741824 data shards"),
        (tensor_bundle_pb2.BundleHeaderProto(num_shards=1, endianness=5), "unknown endianness"),  # type: ignore[arg-type]
    ],
    ids=["unparsable", "no-shards", "negative-shards", "huge-shards", "bad-endianness"],
)
def test_reader_rejects_bad_headers(tmp_path, head, phrase):
    prefix = make_bundle(tmp_path, {}, head=head)
    with pytest.raises(CorruptCheckpointError, match=phrase) as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"


@pytest.mark.parametrize(
    "version",
    [{"min_consumer": 2}, {"min_consumer": 7, "producer": 9}, {"bad_consumers": [1]}],
    ids=["min-consumer-2", "newer-producer", "bad-consumer"],
)
def test_reader_rejects_bundles_for_newer_readers(tmp_path, version):
    prefix = make_bundle(tmp_path, {}, head=header(**version))
    with pytest.raises(UnsupportedCheckpointError, match="written by a newer TensorFlow") as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"


def test_reader_accepts_a_header_without_version(tmp_path):
    prefix = make_bundle(
        tmp_path,
        {b"x": entry(1, [2], data=float32s(1, 2))},
        shards=[float32s(1, 2)],
        head=tensor_bundle_pb2.BundleHeaderProto(num_shards=1),
    )
    assert read_everything(prefix)["x"].tolist() == [1.0, 2.0]


# -- doctored entries ----------------------------------------------------------------------


def test_doctored_bundle_helper_makes_readable_bundles(tmp_path):
    data = float32s(1, 2, 3)
    prefix = make_bundle(tmp_path, {b"x": entry(1, [3], data=data)}, shards=[data])
    assert read_everything(prefix)["x"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("doctored", "phrase"),
    [
        (entry(1, [4], data=float32s(1, 2, 3, 4), offset=4), "which has only 16 bytes"),
        (entry(1, [4], data=float32s(1, 2, 3, 4), offset=1 << 40), "which has only 16 bytes"),
        (entry(1, [8], data=float32s(*range(8))), "which has only 16 bytes"),
        (entry(1, [1 << 28], size=1 << 30), "which has only 16 bytes"),
    ],
    ids=["offset-past-end", "huge-offset", "size-past-end", "huge-size"],
)
def test_reader_rejects_entry_running_past_its_shard(tmp_path, doctored, phrase):
    prefix = make_bundle(tmp_path, {b"x": doctored}, shards=[float32s(1, 2, 3, 4)])
    data = prefix + ".data-00000-of-00001"

    def attempt(mmap: bool) -> CorruptCheckpointError:
        with BundleReader(prefix, mmap=mmap) as reader:
            assert reader.keys() == ["x"]
            with pytest.raises(CorruptCheckpointError, match=phrase) as info:
                reader.get_tensor("x")
        return info.value

    for mmap in (False, True):
        err = attempt(mmap)
        assert (err.file, err.key) == (data, "x")
        assert "truncated" in str(err)
    assert traced_peak(lambda: attempt(False)) < 1 << 20


def test_reader_rejects_string_entry_running_past_its_shard_without_allocating(tmp_path):
    header_bytes, crc = encode_strings([b"abc"])
    data = header_bytes + b"abc"
    doctored = entry(7, [1], data=data, size=1 << 40, crc=mask(crc))
    prefix = make_bundle(tmp_path, {b"s": doctored}, shards=[data])
    with BundleReader(prefix) as reader:

        def read() -> None:
            with pytest.raises(CorruptCheckpointError, match="truncated") as info:
                reader.get_tensor("s")
            assert info.value.key == "s"

        assert traced_peak(read) < 1 << 20


@pytest.mark.parametrize(
    ("dtype", "shape", "size"),
    [
        (1, [1 << 40, 1 << 40], 16),
        (1, [1 << 62, 1 << 62, 1 << 62], 16),
        (9, [1 << 61], 16),
        (7, [1 << 40, 1 << 40], 16),
        (7, [1 << 31], 16),
    ],
    ids=["float-2^80", "float-2^186", "int64-2^61", "string-2^80", "string-2^31"],
)
def test_reader_rejects_element_count_overflow_without_allocating(tmp_path, dtype, shape, size):
    prefix = make_bundle(
        tmp_path, {b"x": entry(dtype, shape, data=float32s(1, 2, 3, 4))}, shards=[b"\0" * size]
    )
    index = prefix + ".index"

    def attempt() -> None:
        with BundleReader(prefix) as reader:
            assert reader.info("x").shape == tuple(shape)
            with pytest.raises(CorruptCheckpointError, match="cannot be read") as info:
                reader.get_tensor("x")
            assert (info.value.file, info.value.key) == (index, "x")

    assert traced_peak(attempt) < 1 << 20


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "phrase"),
    [
        (1, [3], float32s(1, 2), "needs 12 bytes but the index says it has 8"),
        (1, [], float32s(1, 2), "needs 4 bytes but the index says it has 8"),
        (1, [0], float32s(1), "needs 0 bytes but the index says it has 4"),
        (10, [2, 2], b"\x01\x00\x01", "needs 4 bytes"),
        (7, [3], b"\x00\x00\x00", "cannot fit"),
    ],
    ids=["short", "scalar-long", "zero-size-with-bytes", "bool", "strings"],
)
def test_reader_rejects_shape_that_does_not_match_the_stored_size(
    tmp_path, dtype, shape, data, phrase
):
    prefix = make_bundle(
        tmp_path,
        {b"bad": entry(dtype, shape, data=data), b"ok": entry(1, [1], data=float32s(5))},
        shards=[float32s(5)],
    )
    with BundleReader(prefix) as reader:
        assert reader.get_tensor("ok").tolist() == [5.0]  # the rest of the bundle still reads
        with pytest.raises(CorruptCheckpointError, match=phrase) as info:
            reader.get_tensor("bad")
        assert (info.value.file, info.value.key) == (prefix + ".index", "bad")
        if dtype != 7:  # strings cannot be read into a buffer at all
            with pytest.raises(CorruptCheckpointError, match=phrase):
                reader.read_into("bad", np.empty(shape, reader.info("bad").dtype.numpy))
        results = dict(reader.verify())
    assert isinstance(results["bad"], CorruptCheckpointError)
    assert results["ok"] is None


@pytest.mark.parametrize(
    ("lengths", "elements", "count"),
    [
        ([3, 2], b"abcde", 3),
        ([3, 9], b"abcde", 2),
        ([1, 1], b"abcde", 2),
    ],
    ids=["fewer-lengths-than-elements", "lengths-too-long", "lengths-too-short"],
)
def test_reader_rejects_string_lengths_that_do_not_sum_to_the_size(
    tmp_path, lengths, elements, count
):
    length_bytes = bytes(lengths)  # one-byte varints
    length_crc = crc32c(b"".join(struct.pack("<I", n) for n in lengths))
    data = length_bytes + struct.pack("<I", mask(length_crc)) + elements
    prefix = make_bundle(tmp_path, {b"s": entry(7, [count], data=data)}, shards=[data])
    with BundleReader(prefix) as reader, pytest.raises(CorruptCheckpointError) as info:
        reader.get_tensor("s")
    assert info.value.file == prefix + ".data-00000-of-00001"
    assert info.value.key == "s"
    assert "which do not fit its stored size of 11 bytes" in str(info.value)


@pytest.mark.parametrize("shard", [1, 5, -1], ids=["equal", "past", "negative"])
def test_reader_rejects_shard_id_out_of_range(tmp_path, shard):
    prefix = make_bundle(tmp_path, {b"x": entry(1, [1], data=float32s(1), shard=shard)})
    with pytest.raises(CorruptCheckpointError, match=f"is in shard {shard}") as info:
        BundleReader(prefix)
    assert (info.value.file, info.value.key) == (prefix + ".index", "x")


@pytest.mark.parametrize(("field", "value"), [("offset", -1), ("size", -4)], ids=["offset", "size"])
def test_reader_rejects_negative_offset_or_size(tmp_path, field, value):
    doctored = entry(1, [1], data=float32s(1))
    setattr(doctored, field, value)
    prefix = make_bundle(tmp_path, {b"x": doctored}, shards=[float32s(1)])
    with pytest.raises(CorruptCheckpointError, match="negative offset or size") as info:
        BundleReader(prefix)
    assert info.value.key == "x"


@pytest.mark.parametrize(
    "make",
    [
        lambda e: e.shape.dim.add().__setattr__("size", -1),
        lambda e: setattr(e.shape, "unknown_rank", True),
        lambda e: [e.shape.dim.add() for _ in range(300)],
    ],
    ids=["negative-dim", "unknown-rank", "rank-300"],
)
def test_reader_rejects_invalid_shapes(tmp_path, make):
    doctored = entry(1, [])
    make(doctored)
    prefix = make_bundle(tmp_path, {b"x": doctored})
    with pytest.raises(CorruptCheckpointError, match=r"invalid shape|negative dimension") as info:
        BundleReader(prefix)
    assert (info.value.file, info.value.key) == (prefix + ".index", "x")


@pytest.mark.parametrize("number", [0, 34, 99, 101, 1 << 20], ids=lambda n: f"dtype-{n}")
def test_unknown_dtype_number_is_listed_but_not_read(tmp_path, number):
    prefix = make_bundle(tmp_path, {b"x": entry(number, [1], data=b"\0")}, shards=[b"\0"])
    reader = BundleReader(prefix)  # the rest of the checkpoint stays readable
    assert reader.info("x").dtype.name == f"unknown_dtype_{number}"
    with pytest.raises(UnsupportedCheckpointError, match=f"unknown dtype number {number}") as info:
        reader.get_tensor("x")
    assert (info.value.file, info.value.key) == (prefix + ".index", "x")


@pytest.mark.parametrize(("number", "name"), [(21, "variant"), (20, "resource")], ids=["v", "r"])
def test_undecodable_dtype_is_listed_but_not_read(tmp_path, number, name):
    payload = b"\x03abc" + b"\0" * 4
    prefix = make_bundle(
        tmp_path,
        {
            b"it/.ATTRIBUTES/ITERATOR_STATE": entry(number, [1], data=payload),
            b"w": entry(1, [1], data=float32s(2), offset=len(payload)),
        },
        shards=[payload + float32s(2)],
    )
    key = "it/.ATTRIBUTES/ITERATOR_STATE"
    with BundleReader(prefix) as reader:
        assert reader.keys() == [key, "w"]
        assert reader.info(key).dtype == name
        with pytest.raises(UnsupportedCheckpointError, match=f"dtype {name}") as info:
            reader.get_tensor(key)
        assert (info.value.key, info.value.file) == (key, prefix + ".index")
        assert key in str(info.value)
        with pytest.raises(UnsupportedCheckpointError):
            reader.read_into(key, np.empty(1, np.uint8))
        assert dict(reader.verify()) == {key: None, "w": None}
        assert reader.get_tensor("w").tolist() == [2.0]


# -- Snappy-compressed index blocks ------------------------------------------------------


def block_with_trailer(contents: bytes, block_type: int) -> bytes:
    return (
        contents
        + bytes([block_type])
        + struct.pack("<I", mask(crc32c(contents + bytes([block_type]))))
    )


def index_with_one_snappy_block(contents: bytes) -> bytes:
    """A table whose one data block is `contents` labelled Snappy (crc right, handles right)."""
    empty = struct.pack("<II", 0, 1)  # no entries, one restart point at 0
    handle = encode_varint(0) + encode_varint(len(contents))
    index = bytes([0, 1, len(handle)]) + b"\xff" + handle + struct.pack("<II", 0, 1)
    out = block_with_trailer(contents, 1)
    meta_handle = encode_varint(len(out)) + encode_varint(len(empty))
    out += block_with_trailer(empty, 0)
    index_handle = encode_varint(len(out)) + encode_varint(len(index))
    out += block_with_trailer(index, 0)
    return out + (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", MAGIC)


@pytest.mark.timeout(30)  # without the check, a bomb would allocate what it declares
@pytest.mark.parametrize(
    "declared", [30 * 64 // 3 + 1, 64 << 20], ids=["one-byte-over-the-expansion", "bomb"]
)
def test_reader_refuses_a_snappy_block_declaring_more_than_its_bytes_can_expand_to(
    tmp_path, declared
):
    contents = encode_varint(declared) + bytes(30)  # 30 compressed bytes: at most 640 out
    prefix = str(tmp_path / "ckpt")
    with open(data_file_name(prefix, 0, 1), "wb"):
        pass
    with open(prefix + ".index", "wb") as f:
        f.write(index_with_one_snappy_block(contents))
    phrase = f"Snappy-compressed and declares {declared} bytes uncompressed, more than"
    with pytest.raises(CorruptCheckpointError, match=phrase) as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"
    assert "(at most 640)" in str(info.value)


# -- doctored slices -----------------------------------------------------------------------


def sliced_full_entry(shape: Sequence[int], *slices: Sequence[tuple[int, int | None]]) -> Entry:
    full = entry(1, shape)
    full.size = 0
    full.crc32c = 0
    for extents in slices:
        proto_slice = full.slices.add()
        for start, length in extents:
            extent = proto_slice.extent.add()
            extent.start = start
            if length is not None:
                extent.length = length
    return full


def test_reader_rejects_slice_listed_without_its_entry(tmp_path):
    prefix = make_bundle(tmp_path, {b"emb": sliced_full_entry([4], [(0, 2)], [(2, 2)])})
    err = read_error(prefix, "emb", "has no entry in the index")
    assert (err.file, err.key) == (prefix + ".index", "emb")


def test_reader_rejects_slice_outside_the_full_shape(tmp_path):
    prefix = make_bundle(tmp_path, {b"emb": sliced_full_entry([4], [(3, 2)])})
    with pytest.raises(CorruptCheckpointError, match="bad slice") as info:
        BundleReader(prefix)
    assert info.value.key == "emb"


@pytest.mark.timeout(30)  # without the limit, opening walks every slice (or worse)
def test_reader_refuses_an_entry_listing_more_slices_than_it_reads(tmp_path):
    count = (1 << 16) + 1  # one over the limit
    full = sliced_full_entry([count], *([(i, 1)] for i in range(count)))
    prefix = make_bundle(tmp_path, {b"emb": full})
    with pytest.raises(
        UnsupportedCheckpointError, match=f"lists {count} slices, more than"
    ) as info:
        BundleReader(prefix)
    assert (info.value.key, info.value.file) == ("emb", prefix + ".index")


def test_reader_rejects_huge_sliced_shape_without_allocating(tmp_path):
    from trackpoint.format import encode_slice_key

    data = float32s(1, 2)
    prefix = make_bundle(
        tmp_path,
        {
            b"emb": sliced_full_entry([1 << 40, 1 << 40], [(0, 1), (0, 2)]),
            encode_slice_key("emb", ((0, 1), (0, 2))): entry(1, [1, 2], data=data),
        },
        shards=[data],
    )

    def attempt() -> None:
        err = read_error(prefix, "emb", "hold fewer bytes")
        assert err.key == "emb"

    assert traced_peak(attempt) < 1 << 20


def test_reader_rejects_huge_sliced_string_shape_without_allocating(tmp_path):
    # A string-typed full entry has no fixed width; it used to reach np.empty and raise a
    # raw ValueError ("array is too big").
    from trackpoint.format import encode_slice_key

    length_header, crc = encode_strings([b"a"])
    data = length_header + b"a"
    full = sliced_full_entry([1 << 40, 1 << 40], [(0, 1), (0, 1)])
    full.dtype = 7  # type: ignore[assignment]
    part = entry(7, [1, 1], data=data, crc=mask(crc))
    prefix = make_bundle(
        tmp_path, {b"s": full, encode_slice_key("s", ((0, 1), (0, 1))): part}, shards=[data]
    )

    def attempt() -> None:
        err = read_error(prefix, "s", "hold fewer bytes")
        assert (err.key, err.file) == ("s", prefix + ".index")

    assert traced_peak(attempt) < 1 << 20


def test_slice_listed_many_times_does_not_inflate_the_allocation(tmp_path):
    # One 4 KB slice listed 2000 times in the full entry must not pass for 8 MB of data.
    from trackpoint.format import encode_slice_key

    data = float32s(*range(1000))
    full = sliced_full_entry([2000 * 1000], *([[(0, 1000)]] * 2000))
    prefix = make_bundle(
        tmp_path,
        {b"w": full, encode_slice_key("w", ((0, 1000),)): entry(1, [1000], data=data)},
        shards=[data],
    )
    with BundleReader(prefix) as reader:
        peak = traced_peak(lambda: read_error(prefix, "w", "hold fewer bytes"))
        assert reader.info("w").shape == (2_000_000,)
    assert peak < 4 << 20  # the full tensor would be 8 MB


def test_reader_rejects_slice_entry_of_the_wrong_shape(tmp_path):
    from trackpoint.format import encode_slice_key

    data = float32s(1, 2, 3)
    prefix = make_bundle(
        tmp_path,
        {
            b"emb": sliced_full_entry([4], [(0, 2)]),
            encode_slice_key("emb", ((0, 2),)): entry(1, [3], data=data),
        },
        shards=[data],
    )
    with pytest.raises(CorruptCheckpointError, match="not what its extents say") as info:
        BundleReader(prefix)
    assert info.value.key == "emb"


# -- things that are not files ---------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_reader_refuses_fifo_named_index_without_hanging(tmp_path):
    prefix = str(tmp_path / "ckpt")
    os.mkfifo(prefix + ".index")
    with pytest.raises(CorruptCheckpointError, match="not a regular file") as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"
    with pytest.raises(TrackpointError):
        load_checkpoint(prefix)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_reader_refuses_fifo_in_place_of_a_data_shard_without_hanging(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    os.remove(data)
    os.mkfifo(data)
    err = read_error(prefix, "a", "not a regular file")
    assert err.file == data


def test_reader_refuses_directory_named_index(tmp_path):
    prefix = str(tmp_path / "ckpt")
    os.mkdir(prefix + ".index")
    with pytest.raises(CorruptCheckpointError, match="not a regular file") as info:
        BundleReader(prefix)
    assert info.value.file == prefix + ".index"
    with pytest.raises(TrackpointError):
        load_checkpoint(prefix)


def test_reader_refuses_directory_in_place_of_a_data_shard(tmp_path):
    prefix = good_bundle(tmp_path)
    data = prefix + ".data-00000-of-00001"
    os.remove(data)
    os.mkdir(data)
    err = read_error(prefix, "a", "not a regular file")
    assert err.file == data


# -- fuzzing: random damage only ever raises TrackpointErrors -------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """(index bytes, data bytes) of a plain bundle and of one with a sliced tensor."""
    folder = tmp_path_factory.mktemp("pristine")
    sliced = str(folder / "sliced")
    with BundleWriter(sliced) as writer:
        writer.add_slice("emb", [4, 2], [(0, 2), (0, None)], np.ones((2, 2), np.float32))
        writer.add_slice("emb", [4, 2], [(2, 2), (0, None)], np.zeros((2, 2), np.float32))
        writer.add("s", np.array([b"x", b""], dtype=object))
    out = {}
    for prefix in (good_bundle(folder), sliced):
        with open(prefix + ".index", "rb") as f:
            index = f.read()
        with open(prefix + ".data-00000-of-00001", "rb") as f:
            data = f.read()
        out[os.path.basename(prefix)] = (index, data)
    return out


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bundle=st.sampled_from(["ckpt", "sliced"]),
    target=st.sampled_from(["index", "data"]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1 << 16), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 16)),
)
def test_random_damage_raises_only_trackpoint_errors(
    tmp_path, pristine, bundle, target, edits, cut
):
    index, data = pristine[bundle]
    raw = bytearray(index if target == "index" else data)
    for position, bits in edits:
        raw[position % len(raw)] ^= bits
    if cut is not None:
        del raw[cut % (len(raw) + 1) :]
    prefix = str(tmp_path / "fuzz")
    with open(prefix + ".index", "wb") as f:
        f.write(bytes(raw) if target == "index" else index)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(raw) if target == "data" else data)
    # Anything but a TrackpointError (struct.error, IndexError, DecodeError, ...) fails here.
    for mmap in (False, True):
        got = outcome(prefix, mmap=mmap)
        if isinstance(got, TrackpointError):
            assert got.file is not None
