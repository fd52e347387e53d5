"""BundleWriter and BundleReader: dtypes, shards, slices, buffers, mmap (format doc §4-6)."""

from __future__ import annotations

import gc
import mmap
import os
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import pytest

from tests._commit_log import SyscallLog
from tests._memory import traced_peak
from trackpoint.errors import (
    CorruptCheckpointError,
    InvalidValueError,
    KeyNotFoundError,
    NotTrackableError,
    TrackpointError,
)
from trackpoint.format import (
    BundleReader,
    BundleWriter,
    TableReader,
    data_file_name,
    encode_slice_key,
    index_file_name,
)
from trackpoint.format._crc32c import mask
from trackpoint.format.protos import tensor_bundle_pb2, types_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

SIGNED = [-2, -1, 0, 1, 1, -2]  # inside int2's range
UNSIGNED = [0, 1, 2, 3, 3, 0]  # inside uint2's range
FLOATS = [0.0, 0.5, -1.0, 2.0, 3.0, -6.0]  # exact in float4_e2m1fn and every float8

NUMERIC_DTYPES = [
    ("float16", np.float16, FLOATS),
    ("bfloat16", ml_dtypes.bfloat16, FLOATS),
    ("float32", np.float32, FLOATS),
    ("float64", np.float64, FLOATS),
    ("float8_e5m2", ml_dtypes.float8_e5m2, FLOATS),
    ("float8_e4m3fn", ml_dtypes.float8_e4m3fn, FLOATS),
    ("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz, FLOATS),
    ("float8_e4m3b11fnuz", ml_dtypes.float8_e4m3b11fnuz, FLOATS),
    ("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz, FLOATS),
    ("float4_e2m1fn", ml_dtypes.float4_e2m1fn, FLOATS),
    ("int4", ml_dtypes.int4, SIGNED),
    ("uint4", ml_dtypes.uint4, UNSIGNED),
    ("int2", ml_dtypes.int2, SIGNED),
    ("uint2", ml_dtypes.uint2, UNSIGNED),
    ("int8", np.int8, SIGNED),
    ("int16", np.int16, SIGNED),
    ("int32", np.int32, SIGNED),
    ("int64", np.int64, SIGNED),
    ("uint8", np.uint8, UNSIGNED),
    ("uint16", np.uint16, UNSIGNED),
    ("uint32", np.uint32, UNSIGNED),
    ("uint64", np.uint64, UNSIGNED),
    ("bool", np.bool_, [True, False, True, True, False, False]),
    ("complex64", np.complex64, [1 + 2j, -3j, 0, 1, 0.5j, -1]),
    ("complex128", np.complex128, [1 + 2j, -3j, 0, 1, 0.5j, -1]),
]


def write(prefix: Path | str, tensors: dict[str, Any], **kwargs: Any) -> str:
    with BundleWriter(prefix, **kwargs) as writer:
        for key, value in tensors.items():
            writer.add(key, value)
    return str(prefix)


def read_all(prefix: Path | str, **kwargs: Any) -> dict[str, NDArray[Any]]:
    with BundleReader(prefix, **kwargs) as reader:
        return {info.key: reader.get_tensor(info.key) for info in reader.infos()}


def assert_same(got: NDArray[Any], expected: NDArray[Any]) -> None:
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


def index_entries(prefix: Path | str) -> dict[bytes, bytes]:
    with open(index_file_name(str(prefix)), "rb") as f:
        return dict(TableReader(f.read()).items())


def entry_proto(prefix: Path | str, key: bytes) -> tensor_bundle_pb2.BundleEntryProto:
    proto = tensor_bundle_pb2.BundleEntryProto()
    proto.ParseFromString(index_entries(prefix)[key])
    return proto


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- round trips of every dtype -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "np_dtype", "values"), NUMERIC_DTYPES, ids=[row[0] for row in NUMERIC_DTYPES]
)
def test_every_numeric_dtype_round_trips(tmp_path, name, np_dtype, values):
    value = np.array(values, dtype=np_dtype).reshape(2, 3)
    prefix = write(tmp_path / "ckpt", {"v": value})
    with BundleReader(prefix) as reader:
        assert reader.info("v").dtype == name
        assert reader.info("v").shape == (2, 3)
        assert reader.info("v").size == value.nbytes
        got = reader.get_tensor("v")
    assert_same(got, value)
    # The data file holds exactly the element bytes, one byte per sub-byte element.
    data = (tmp_path / "ckpt.data-00000-of-00001").read_bytes()
    assert data == value.tobytes()


@pytest.mark.parametrize(
    ("name", "np_dtype", "values"), NUMERIC_DTYPES, ids=[row[0] for row in NUMERIC_DTYPES]
)
def test_every_numeric_dtype_round_trips_as_a_scalar(tmp_path, name, np_dtype, values):
    value = np.array(values[1], dtype=np_dtype)
    prefix = write(tmp_path / "ckpt", {"s": value})
    got = read_all(prefix)["s"]
    assert got.shape == ()
    assert_same(got, value)
    proto = entry_proto(prefix, b"s")
    assert proto.HasField("shape")
    assert len(proto.shape.dim) == 0


def test_numpy_scalars_and_python_values_are_accepted(tmp_path):
    prefix = write(tmp_path / "ckpt", {"f": np.float32(1.5), "i": 7, "l": [1.0, 2.0], "b": True})
    got = read_all(prefix)
    assert_same(got["f"], np.array(1.5, np.float32))
    assert_same(got["i"], np.array(7))
    assert_same(got["l"], np.array([1.0, 2.0]))
    assert_same(got["b"], np.array(True))


def bytes_objects(*items: bytes) -> NDArray[Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@pytest.mark.parametrize(
    "elements",
    [
        [b"hello", b""],
        [b""],
        ["é".encode(), "日本語".encode(), b"\xff\xfe"],
        [b"x" * (1 << 20)],
        [b"ends with nul\x00", b"\x00\x00", b"a\x00b\x00"],
        [bytes(range(256)) * 3],
    ],
    ids=["plain", "only-empty", "non-ascii-and-binary", "one-mib", "trailing-nuls", "all-bytes"],
)
def test_string_tensors_round_trip_as_bytes_objects(tmp_path, elements):
    value = bytes_objects(*elements)
    prefix = write(tmp_path / "ckpt", {"s": value})
    with BundleReader(prefix) as reader:
        assert reader.info("s").dtype == "string"
        got = reader.get_tensor("s")
    assert got.dtype == object
    assert got.shape == value.shape
    assert all(type(item) is bytes for item in got.ravel())
    assert got.tolist() == elements


def test_str_and_fixed_width_string_arrays_are_written_as_bytes(tmp_path):
    prefix = write(
        tmp_path / "ckpt",
        {
            "u": np.array(["héllo", "wörld"]),
            "b": np.array([[b"ab", b"c"], [b"", b"def"]], dtype="S3"),
            "o": np.array(["x", "ÿ"], dtype=object),
        },
    )
    got = read_all(prefix)
    assert got["u"].tolist() == ["héllo".encode(), "wörld".encode()]
    assert got["b"].shape == (2, 2)
    assert got["b"].dtype == object
    assert got["b"].tolist() == [[b"ab", b"c"], [b"", b"def"]]
    assert got["o"].tolist() == [b"x", "ÿ".encode()]


def test_string_scalar_and_empty_string_tensor_round_trip(tmp_path):
    scalar = np.array(b"hello", dtype=object)
    empty = np.empty((0, 3), dtype=object)
    prefix = write(tmp_path / "ckpt", {"scalar": scalar, "empty": empty})
    got = read_all(prefix)
    assert got["scalar"].shape == ()
    assert got["scalar"].item() == b"hello"
    assert got["empty"].shape == (0, 3)
    assert got["empty"].dtype == object
    # §5.3: a scalar "hello" is stored as 05 d9 c6 9c 43 68 65 6c 6c 6f; [0] strings as mask(0).
    data = (tmp_path / "ckpt.data-00000-of-00001").read_bytes()
    assert bytes.fromhex("05d9c69c4368656c6c6f") in data
    assert entry_proto(prefix, b"empty").size == 4


def test_non_string_objects_are_refused(tmp_path):
    with BundleWriter(tmp_path / "ckpt") as writer, pytest.raises(NotTrackableError):
        writer.add("o", np.array([1, None], dtype=object))


@pytest.mark.parametrize(
    "shape", [(0,), (0, 3), (3, 0, 2), (2, 1, 3, 1, 2, 2)], ids=["0", "0x3", "3x0x2", "6d"]
)
def test_zero_size_and_high_rank_tensors_round_trip(tmp_path, shape):
    value = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    prefix = write(tmp_path / "ckpt", {"a": np.ones(2, np.int8), "v": value})
    got = read_all(prefix)["v"]
    assert_same(got, value)


def test_zero_size_entry_is_written_as_tf_does(tmp_path):
    # §4.2/§5.2: size 0 omitted, crc = mask(0), offset = current end of the shard.
    prefix = write(tmp_path / "ckpt", {"a": np.ones(3, np.float32), "z": np.empty((0, 3))})
    proto = entry_proto(prefix, b"z")
    assert (proto.size, proto.offset, proto.crc32c) == (0, 12, mask(0))
    assert [d.size for d in proto.shape.dim] == [0, 3]


def test_writer_matches_the_worked_example_of_the_format_doc(tmp_path):
    prefix = write(
        tmp_path / "t",
        {"x": np.array([1.0, 2.0], np.float32), "s": bytes_objects(b"hi", b"")},
    )
    data = (tmp_path / "t.data-00000-of-00001").read_bytes()
    assert data.hex(" ") == "00 00 80 3f 00 00 00 40 02 00 78 27 0b 34 68 69"
    index = (tmp_path / "t.index").read_bytes()
    expected = (
        "00 00 06 08 01 1a 02 08 01"
        "00 01 11 73 08 07 12 04 12 02 08 02 20 08 28 08 35 9e 9e 48 ed"
        "00 01 0f 78 08 01 12 04 12 02 08 02 28 08 35 59 3c e5 35"
        "00 00 00 00 01 00 00 00 00 dd 33 d4 b5"
        "00 00 00 00 01 00 00 00 00 c0 f2 a1 b0"
        "00 01 02 79 00 39 00 00 00 00 01 00 00 00 00 70 4c 70 b5"
        "3e 08 4b 0e" + " 00" * 36 + "57 fb 80 8b 24 75 47 db"
    )
    assert index == bytes.fromhex(expected.replace(" ", ""))
    assert read_all(prefix)["x"].tolist() == [1.0, 2.0]


def test_data_is_written_in_add_order_without_padding(tmp_path):
    prefix = write(
        tmp_path / "ckpt",
        {
            "z": np.array([1, 2, 3], np.int8),
            "a": np.array([4.0], np.float64),
            "m": np.array([5], np.int16),
        },
    )
    offsets = {k: entry_proto(prefix, k).offset for k in (b"z", b"a", b"m")}
    assert offsets == {b"z": 0, b"a": 3, b"m": 11}


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: np.asfortranarray(a),
        lambda a: a[::-1],
    ],
    ids=["strided", "transposed", "fortran", "reversed"],
)
def test_non_contiguous_inputs_are_written_in_c_order(tmp_path, make):
    value = make(np.arange(24, dtype=np.float32).reshape(4, 6))
    prefix = write(tmp_path / "ckpt", {"v": value})
    assert_same(read_all(prefix)["v"], np.ascontiguousarray(value))


@pytest.mark.parametrize("np_dtype", [">f4", ">i8", ">c16", ">u2"], ids=["f4", "i8", "c16", "u2"])
def test_big_endian_inputs_are_written_little_endian(tmp_path, np_dtype):
    value = np.arange(6).astype(np_dtype).reshape(2, 3)
    prefix = write(tmp_path / "ckpt", {"v": value})
    got = read_all(prefix)["v"]
    little = value.astype(np.dtype(np_dtype).newbyteorder("<"))
    assert_same(got, little)
    assert (tmp_path / "ckpt.data-00000-of-00001").read_bytes() == little.tobytes()


def test_writer_does_not_modify_its_inputs(tmp_path):
    value = np.arange(6).astype(">f4")
    before = value.copy()
    write(tmp_path / "ckpt", {"v": value})
    assert value.dtype == np.dtype(">f4")
    assert value.tobytes() == before.tobytes()


# -- big-endian bundles ---------------------------------------------------------------


def test_reader_byte_swaps_big_endian_bundles(tmp_path):
    from trackpoint.format import TableBuilder
    from trackpoint.format._crc32c import crc32c

    value = np.arange(6, dtype=">i4").reshape(2, 3)
    stored = value.tobytes()
    (tmp_path / "be.data-00000-of-00001").write_bytes(stored)
    header = tensor_bundle_pb2.BundleHeaderProto(
        num_shards=1, endianness=tensor_bundle_pb2.BundleHeaderProto.BIG
    )
    header.version.producer = 1
    entry = tensor_bundle_pb2.BundleEntryProto(
        dtype=types_pb2.DT_INT32, size=len(stored), crc32c=mask(crc32c(stored))
    )
    entry.shape.dim.add().size = 2
    entry.shape.dim.add().size = 3
    with open(tmp_path / "be.index", "wb") as index:
        table = TableBuilder(index)
        table.add(b"", header.SerializeToString())
        table.add(b"v", entry.SerializeToString())
        table.finish()
    with BundleReader(tmp_path / "be") as reader:
        assert reader.big_endian
        assert reader.get_tensor("v").tolist() == [[0, 1, 2], [3, 4, 5]]
        out = np.empty((2, 3), np.int32)
        reader.read_into("v", out)
        assert out.tolist() == [[0, 1, 2], [3, 4, 5]]
    with BundleReader(tmp_path / "be", mmap=True) as reader:
        assert reader.get_tensor("v").tolist() == [[0, 1, 2], [3, 4, 5]]


# -- shards ------------------------------------------------------------------------------


def test_explicit_shards_hold_what_they_are_given(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix, num_shards=3) as writer:
        writer.add("a", np.arange(4, dtype=np.int32), shard=2)
        writer.add("b", np.arange(3, dtype=np.int64), shard=0)
        writer.add("c", np.array([b"x"], dtype=object), shard=2)
    assert files_in(tmp_path) == [
        "ckpt.data-00000-of-00003",
        "ckpt.data-00001-of-00003",
        "ckpt.data-00002-of-00003",
        "ckpt.index",
    ]
    assert (tmp_path / "ckpt.data-00001-of-00003").stat().st_size == 0
    assert (tmp_path / "ckpt.data-00002-of-00003").read_bytes()[:16] == np.arange(
        4, dtype=np.int32
    ).tobytes()
    with BundleReader(prefix) as reader:
        assert reader.num_shards == 3
        assert [reader.info(k).shard for k in "abc"] == [2, 0, 2]
        assert reader.get_tensor("a").tolist() == [0, 1, 2, 3]
        assert reader.get_tensor("b").tolist() == [0, 1, 2]
        assert reader.get_tensor("c").tolist() == [b"x"]
        assert reader.data_path(1) == prefix + ".data-00001-of-00003"


def test_automatic_sharding_fills_the_smallest_shard(tmp_path):
    prefix = str(tmp_path / "ckpt")
    sizes = [100, 10, 10, 50, 5]
    with BundleWriter(prefix, num_shards=2) as writer:
        for i, n in enumerate(sizes):
            writer.add(f"t{i}", np.zeros(n, np.uint8))
    with BundleReader(prefix) as reader:
        shards = [reader.info(f"t{i}").shard for i in range(len(sizes))]
        for i, n in enumerate(sizes):
            assert reader.get_tensor(f"t{i}").shape == (n,)
    # 100 → shard 0; then shard 1 gets 10, 10, 50 (70 < 100); then 5 → shard 1 (70 < 100).
    assert shards == [0, 1, 1, 1, 1]
    assert (tmp_path / "ckpt.data-00000-of-00002").stat().st_size == 100
    assert (tmp_path / "ckpt.data-00001-of-00002").stat().st_size == 75


@pytest.mark.parametrize("num_shards", [0, -1, 1 << 21], ids=["zero", "negative", "huge"])
def test_writer_refuses_bad_shard_counts(tmp_path, num_shards):
    with pytest.raises(InvalidValueError, match="num_shards"):
        BundleWriter(tmp_path / "ckpt", num_shards=num_shards)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("shard", [-1, 2, 99], ids=["negative", "equal", "past"])
def test_writer_refuses_shard_numbers_out_of_range(tmp_path, shard):
    with BundleWriter(tmp_path / "ckpt", num_shards=2) as writer:
        with pytest.raises(InvalidValueError, match="out of range"):
            writer.add("a", np.zeros(1), shard=shard)
        writer.add("b", np.zeros(1))


def test_data_file_names_are_zero_padded_like_tf():
    assert data_file_name("p", 0, 1) == "p.data-00000-of-00001"
    assert data_file_name("dir/p", 12, 345) == "dir/p.data-00012-of-00345"
    assert data_file_name("p", 123456, 200000) == "p.data-123456-of-200000"
    assert index_file_name("dir/p-3") == "dir/p-3.index"


def test_writer_creates_missing_folders(tmp_path):
    prefix = write(tmp_path / "a" / "b" / "ckpt", {"v": np.ones(1)})
    assert read_all(prefix)["v"].tolist() == [1.0]


# -- read_into --------------------------------------------------------------------------


def test_read_into_fills_the_callers_buffer(tmp_path):
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    prefix = write(tmp_path / "ckpt", {"v": value})
    out = np.full((3, 4), -1, np.float32)
    address = out.ctypes.data
    with BundleReader(prefix) as reader:
        reader.read_into("v", out)
    assert_same(out, value)
    assert out.ctypes.data == address


def test_read_into_a_view_of_a_larger_buffer(tmp_path):
    value = np.arange(4, dtype=np.int64)
    prefix = write(tmp_path / "ckpt", {"v": value})
    big = np.zeros(10, np.int64)
    with BundleReader(prefix) as reader:
        reader.read_into("v", big[3:7])
    assert big.tolist() == [0, 0, 0, 0, 1, 2, 3, 0, 0, 0]


def read_only(shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
    out = np.zeros(shape, dtype)
    out.flags.writeable = False
    return out


@pytest.mark.parametrize(
    ("make_out", "phrase"),
    [
        (lambda: np.zeros((4, 3), np.float32), "the buffer is float32 \\[4, 3\\]"),
        (lambda: np.zeros(12, np.float32), "the buffer is float32 \\[12\\]"),
        (lambda: np.zeros((3, 4), np.float64), "the buffer is float64"),
        (lambda: np.zeros((3, 4), np.int32), "the buffer is int32"),
        (lambda: np.zeros((3, 8), np.float32)[:, ::2], "writeable and C-contiguous"),
        (lambda: np.zeros((4, 3), np.float32).T, "writeable and C-contiguous"),
        (lambda: read_only((3, 4), np.float32), "writeable and C-contiguous"),
    ],
    ids=["wrong-shape", "flat", "wrong-dtype", "same-width-dtype", "strided", "fortran", "ro"],
)
def test_read_into_refuses_buffers_that_do_not_fit(tmp_path, make_out, phrase):
    prefix = write(tmp_path / "ckpt", {"v": np.ones((3, 4), np.float32)})
    out = make_out()
    before = out.copy()
    with BundleReader(prefix) as reader, pytest.raises(InvalidValueError, match=phrase):
        reader.read_into("v", out)
    assert np.array_equal(out, before)


def test_read_into_refuses_string_tensors(tmp_path):
    prefix = write(tmp_path / "ckpt", {"s": bytes_objects(b"a")})
    with BundleReader(prefix) as reader, pytest.raises(InvalidValueError, match="holds strings"):
        reader.read_into("s", np.empty(1, dtype=object))


def test_read_into_unknown_key_raises_key_not_found(tmp_path):
    prefix = write(tmp_path / "ckpt", {"weights": np.ones(1)})
    with BundleReader(prefix) as reader, pytest.raises(KeyNotFoundError) as info:
        reader.read_into("weight", np.empty(1))
    assert info.value.key == "weight"
    assert "did you mean 'weights'" in str(info.value)
    assert isinstance(info.value, KeyError)


# -- mmap -------------------------------------------------------------------------------


def mapped_base(array: NDArray[Any]) -> object:
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def test_mmap_returns_read_only_views_of_the_data_file(tmp_path):
    value = np.arange(12, dtype=np.float64).reshape(3, 4)
    prefix = write(tmp_path / "ckpt", {"a": np.ones(3, np.int8), "v": value})
    reader = BundleReader(prefix, mmap=True)
    got = reader.get_tensor("v")
    assert_same(got, value)
    assert got.flags.writeable is False
    base = mapped_base(got)
    assert isinstance(base, memoryview)
    assert isinstance(base.obj, mmap.mmap)
    # Zero-copy: the view starts at the tensor's offset inside the mapping.
    assert base.readonly
    assert len(base) == value.nbytes
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 5
    # Two tensors of one shard share one mapping.
    assert mapped_base(reader.get_tensor("a")).obj is base.obj  # type: ignore[attr-defined]
    # Closing the reader leaves live views valid.
    reader.close()
    assert_same(got, value)
    del got, base
    gc.collect()


def test_mmap_views_of_strings_and_empty_tensors_are_ordinary_arrays(tmp_path):
    prefix = write(tmp_path / "ckpt", {"s": bytes_objects(b"a", b""), "z": np.empty((0, 2))})
    with BundleReader(prefix, mmap=True) as reader:
        assert reader.get_tensor("s").tolist() == [b"a", b""]
        assert reader.get_tensor("z").shape == (0, 2)


def test_mmap_verifies_checksums(tmp_path):
    prefix = write(tmp_path / "ckpt", {"v": np.arange(8, dtype=np.int32)})
    path = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x10
    path.write_bytes(bytes(raw))
    with (
        BundleReader(prefix, mmap=True) as reader,
        pytest.raises(CorruptCheckpointError, match="failed its checksum"),
    ):
        reader.get_tensor("v")


def test_disabled_checksums_return_damaged_data(tmp_path):
    prefix = write(tmp_path / "ckpt", {"v": np.zeros(8, dtype=np.uint8)})
    path = tmp_path / "ckpt.data-00000-of-00001"
    path.write_bytes(b"\x00\x00\x07" + b"\x00" * 5)
    with BundleReader(prefix, verify_checksums=False) as reader:
        assert reader.get_tensor("v").tolist() == [0, 0, 7, 0, 0, 0, 0, 0]
    with BundleReader(prefix) as reader:
        results = dict(reader.verify())
    assert isinstance(results["v"], CorruptCheckpointError)


def test_verify_reports_every_key(tmp_path):
    prefix = write(tmp_path / "ckpt", {"a": np.ones(2), "s": bytes_objects(b"x")})
    with BundleReader(prefix) as reader:
        assert dict(reader.verify()) == {"a": None, "s": None}


# -- sliced tensors ----------------------------------------------------------------------


def test_sliced_tensor_is_reassembled_and_its_slice_keys_hidden(tmp_path):
    full = np.arange(10, dtype=np.float32).reshape(5, 2)
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix) as writer:
        writer.add_slice("emb", [5, 2], [(0, 3), (0, None)], full[:3])
        writer.add_slice("emb", [5, 2], [(3, 2), (0, None)], full[3:])
        writer.add("other", np.ones(1))
    with BundleReader(prefix) as reader:
        assert reader.keys() == ["emb", "other"]
        info = reader.info("emb")
        assert (info.sliced, info.shard, info.shape, info.size) == (True, -1, (5, 2), 40)
        assert_same(reader.get_tensor("emb"), full)
        out = np.empty((5, 2), np.float32)
        reader.read_into("emb", out)
        assert_same(out, full)
    entries = index_entries(prefix)
    # TF spells every length out, a whole dimension included: the tf1_saver fixture's
    # keys are exactly these bytes.
    assert bytes.fromhex("00656d6200010102808380 82".replace(" ", "")) in entries
    assert encode_slice_key("emb", ((0, 3), (0, 2))) in entries
    assert encode_slice_key("emb", ((3, 2), (0, 2))) in entries
    full_proto = entry_proto(prefix, b"emb")
    assert len(full_proto.slices) == 2
    assert full_proto.size == 0


def test_slices_in_different_shards_are_reassembled(tmp_path):
    full = np.arange(24, dtype=np.int64).reshape(4, 6)
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix, num_shards=3) as writer:
        writer.add_slice("w", [4, 6], [(0, 2), (0, 3)], full[:2, :3], shard=2)
        writer.add_slice("w", [4, 6], [(0, 2), (3, 3)], full[:2, 3:], shard=0)
        writer.add_slice("w", [4, 6], [(2, 2), (0, None)], full[2:], shard=1)
    slice_shards = sorted(
        entry_proto(prefix, k).shard_id for k in index_entries(prefix) if k.startswith(b"\x00")
    )
    assert slice_shards == [0, 1, 2]
    assert_same(read_all(prefix)["w"], full)
    with BundleReader(prefix, mmap=True) as reader:
        assert_same(reader.get_tensor("w"), full)


@pytest.mark.parametrize(
    ("parts", "phrase"),
    [
        ([(0, 3)], "hold fewer bytes than its shape"),
        ([(0, 3), (1, 3)], "overlaps another"),  # enough bytes, row 4 missing; TF refuses overlaps
    ],
    ids=["too-few-bytes", "overlapping-gap"],
)
def test_incomplete_slice_cover_raises(tmp_path, parts, phrase):
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix) as writer:
        for start, length in parts:
            writer.add_slice("emb", [5, 2], [(start, length), (0, None)], np.ones((length, 2)))
    with BundleReader(prefix) as reader:
        assert reader.info("emb").shape == (5, 2)
        with pytest.raises(CorruptCheckpointError, match=phrase) as info:
            reader.get_tensor("emb")
    assert info.value.key == "emb"
    assert info.value.file == prefix + ".index"


@pytest.mark.parametrize(
    ("extents", "value_shape", "phrase"),
    [
        ([(0, 3)], (3,), "rank"),
        ([(0, 3), (0, None)], (2, 2), "has shape \\[2, 2\\]"),
        ([(4, 3), (0, None)], (3, 2), "outside"),
    ],
    ids=["rank", "shape", "outside"],
)
def test_add_slice_refuses_bad_extents(tmp_path, extents, value_shape, phrase):
    with BundleWriter(tmp_path / "ckpt") as writer, pytest.raises(InvalidValueError, match=phrase):
        writer.add_slice("emb", [5, 2], extents, np.ones(value_shape))


def test_add_slice_refuses_the_same_slice_twice_and_mixed_dtypes(tmp_path):
    with BundleWriter(tmp_path / "ckpt") as writer:
        writer.add_slice("emb", [4], [(0, 2)], np.ones(2, np.float32))
        with pytest.raises(InvalidValueError, match="added twice"):
            writer.add_slice("emb", [4], [(0, 2)], np.ones(2, np.float32))
        with pytest.raises(InvalidValueError, match="different dtypes"):
            writer.add_slice("emb", [4], [(2, 2)], np.ones(2, np.int32))
        writer.add_slice("emb", [4], [(2, 2)], np.ones(2, np.float32))


def test_whole_tensor_and_slices_cannot_share_a_key(tmp_path):
    with BundleWriter(tmp_path / "ckpt") as writer:
        writer.add("a", np.ones(4))
        with pytest.raises(InvalidValueError, match="reserved or was added"):
            writer.add_slice("a", [4], [(0, 2)], np.ones(2))
        writer.add_slice("b", [4], [(0, 2)], np.ones(2))
        with pytest.raises(InvalidValueError, match="added twice"):
            writer.add("b", np.ones(4))
        writer.add_slice("b", [4], [(2, 2)], np.ones(2))


# -- dtype override, keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "np_dtype"),
    [("qint8", np.int8), ("quint8", np.uint8), ("qint16", np.int16), ("qint32", np.int32)],
    ids=["qint8", "quint8", "qint16", "qint32"],
)
def test_quantized_dtype_override_keeps_its_tf_name(tmp_path, name, np_dtype):
    value = np.array([1, 2, 3], dtype=np_dtype)
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix) as writer:
        writer.add("q", value, dtype=name)
    with BundleReader(prefix) as reader:
        assert reader.info("q").dtype == name
        assert_same(reader.get_tensor("q"), value)


def test_dtype_override_of_a_different_width_is_refused(tmp_path):
    with BundleWriter(tmp_path / "ckpt") as writer, pytest.raises(NotTrackableError, match="as"):
        writer.add("q", np.ones(3, np.int32), dtype="qint8")


def test_dtype_override_of_the_same_width_reinterprets_nothing(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix) as writer:
        writer.add("u", np.array([1, 2], np.int16), dtype="quint16")
    assert read_all(prefix)["u"].tolist() == [1, 2]


@pytest.mark.parametrize("dtype", ["variant", "resource"], ids=["variant", "resource"])
def test_undecodable_dtypes_cannot_be_written(tmp_path, dtype):
    with BundleWriter(tmp_path / "ckpt") as writer, pytest.raises(NotTrackableError, match=dtype):
        writer.add("v", np.zeros(1), dtype=dtype)


@pytest.mark.parametrize(
    ("keys", "phrase"),
    [
        (["a", "a"], "added twice"),
        (["a", b"a"], "added twice"),
        ([""], "reserved for the bundle header"),
        ([b""], "reserved for the bundle header"),
        (["\x00hidden"], "reserved"),
    ],
    ids=["duplicate", "duplicate-bytes", "empty", "empty-bytes", "nul-prefix"],
)
def test_writer_refuses_duplicate_and_reserved_keys(tmp_path, keys, phrase):
    with BundleWriter(tmp_path / "ckpt") as writer:
        for key in keys[:-1]:
            writer.add(key, np.zeros(1))
        with pytest.raises(InvalidValueError, match=phrase):
            writer.add(keys[-1], np.zeros(1))


def test_keys_are_sorted_bytewise_in_the_index(tmp_path):
    keys = ["é", "a", "Z", "_", "a/b", "a.b", "ab"]
    prefix = write(tmp_path / "ckpt", {k: np.zeros(1, np.int8) for k in keys})
    raw_keys = list(index_entries(prefix))
    assert raw_keys[0] == b""
    assert raw_keys[1:] == sorted(k.encode() for k in keys)
    with BundleReader(prefix) as reader:
        assert reader.keys() == sorted(keys, key=str.encode)
        assert "é" in reader
        assert "missing" not in reader


def test_header_is_what_tf_writes(tmp_path):
    prefix = write(tmp_path / "ckpt", {"v": np.ones(1)}, num_shards=2)
    assert index_entries(prefix)[b""].hex(" ") == "08 02 1a 02 08 01"


def test_writer_refuses_adds_after_finish(tmp_path):
    writer = BundleWriter(tmp_path / "ckpt")
    writer.add("a", np.ones(1))
    writer.finish()
    writer.finish()  # finishing twice is harmless
    with pytest.raises(InvalidValueError, match="already finished"):
        writer.add("b", np.ones(1))


# -- failures leave nothing behind, writing does not copy ---------------------------------


class Boom(Exception):
    pass


def write_then_fail(prefix: Path | str, error: Exception, **kwargs: Any) -> None:
    with BundleWriter(prefix, **kwargs) as writer:
        writer.add("a", np.ones(1000))
        raise error


def test_exception_inside_the_writer_block_leaves_no_files(tmp_path):
    with pytest.raises(Boom):
        write_then_fail(tmp_path / "ckpt", Boom(), num_shards=2)
    assert files_in(tmp_path) == []


def test_failed_add_leaves_no_files(tmp_path):
    bad = {"a": np.ones(10), "b": np.array([object()], dtype=object)}
    with pytest.raises(NotTrackableError):
        write(tmp_path / "ckpt", bad)
    assert files_in(tmp_path) == []


def test_failed_write_keeps_the_previous_bundle_intact(tmp_path):
    prefix = write(tmp_path / "ckpt", {"a": np.ones(3)})
    before = files_in(tmp_path)
    with pytest.raises(Boom):
        write_then_fail(prefix, Boom())
    assert files_in(tmp_path) == before
    assert read_all(prefix)["a"].tolist() == [1.0, 1.0, 1.0]


def test_unfinished_writer_has_only_temporary_files(tmp_path):
    writer = BundleWriter(tmp_path / "ckpt")
    writer.add("v", np.ones(3))
    names = files_in(tmp_path)
    assert len(names) == 1
    assert names[0].startswith("ckpt.data-00000-of-00001.tp-tmp-")
    writer.abort()
    assert files_in(tmp_path) == []


SEVERAL = {f"v{i}": np.arange(5) + i for i in range(4)}


@pytest.mark.parametrize("num_shards", [1, 3])
def test_writer_renames_the_index_after_every_data_file(tmp_path, monkeypatch, num_shards):
    # A bundle whose .index exists is complete: the index must appear last.
    log = SyscallLog(monkeypatch)
    write(tmp_path / "ckpt", SEVERAL, num_shards=num_shards)
    log.assert_committed(tmp_path / "ckpt", num_shards=num_shards, durable=False)


@pytest.mark.parametrize("num_shards", [1, 3])
def test_durable_write_syncs_each_file_before_its_rename_and_the_folder_after(
    tmp_path, monkeypatch, num_shards
):
    log = SyscallLog(monkeypatch)
    durable = write(tmp_path / "a" / "ckpt", SEVERAL, num_shards=num_shards, durable=True)
    log.assert_committed(durable, num_shards=num_shards, durable=True)
    # The syncs change nothing in the files.
    plain = write(tmp_path / "b" / "ckpt", SEVERAL, num_shards=num_shards)
    assert files_in(tmp_path / "a") == files_in(tmp_path / "b")
    for name in files_in(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert {k: v.tolist() for k, v in read_all(durable).items()} == {
        k: v.tolist() for k, v in read_all(plain).items()
    }


def test_tracemalloc_sees_numpy_buffers():
    # The control for the tests below: a copy of 16 MiB shows up as a 16 MiB peak.
    value = np.ones(16 << 20, dtype=np.uint8)
    assert traced_peak(value.copy) >= 16 << 20


def test_adding_a_big_array_does_not_copy_it(tmp_path):
    value = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB
    with BundleWriter(tmp_path / "ckpt") as writer:
        peak = traced_peak(lambda: writer.add("big", value))
    assert peak < 4 << 20
    assert (tmp_path / "ckpt.data-00000-of-00001").stat().st_size == 64 << 20


def test_adding_a_big_strided_array_copies_it_at_most_once(tmp_path):
    # A non-contiguous array has to be made contiguous, but only once.
    value = np.ones((2, 16 << 20), dtype=np.uint8)[:, ::2]  # 16 MiB of elements
    with BundleWriter(tmp_path / "ckpt") as writer:
        peak = traced_peak(lambda: writer.add("big", value))
    assert peak < (16 << 20) + (4 << 20)


def test_reading_into_a_buffer_allocates_nothing_big(tmp_path):
    value = np.ones(32 << 20, dtype=np.uint8)
    prefix = write(tmp_path / "ckpt", {"big": value})
    out = np.empty_like(value)
    with BundleReader(prefix) as reader:
        peak = traced_peak(lambda: reader.read_into("big", out))
    assert peak < 4 << 20
    assert out.all()


def test_get_tensor_allocates_the_result_once(tmp_path):
    prefix = write(tmp_path / "ckpt", {"big": np.ones(32 << 20, dtype=np.uint8)})
    with BundleReader(prefix) as reader:
        peak = traced_peak(lambda: reader.get_tensor("big"))
    assert peak < (32 << 20) + (4 << 20)


def test_every_error_is_a_trackpoint_error():
    for cls in (CorruptCheckpointError, InvalidValueError, KeyNotFoundError, NotTrackableError):
        assert issubclass(cls, TrackpointError)


def test_find_info_is_info_or_none(tmp_path):
    with BundleWriter(tmp_path / "ckpt") as writer:
        writer.add("a", np.arange(3, dtype=np.int16))
    reader = BundleReader(tmp_path / "ckpt")
    assert reader.find_info("a") == reader.info("a")
    assert reader.find_info("b") is None
