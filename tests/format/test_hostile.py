"""Hostile files refused: the corruption corpus and adversarial structures (reliability §4.3-4.5).

Part one damages a real two-shard bundle the way disks, copies and crashes do: every bit of
the `.index`, every byte of every data shard, truncation everywhere that matters, zeroed
4 KiB pages, and whole files deleted, swapped, replaced, emptied or turned into something
that is not a file. Part two builds tables by hand with every block checksum recomputed, so
that only the structural checks stand between a doctored file and the reader; each case
must end in a `TrackpointError` naming the file (and the key), allocate at most twice the
input plus 8 MiB, and never hang. Part three does the same to the `checkpoint` state file.

`TRACKPOINT_STRESS=1` adds random multi-byte mutations of both files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cramjam
import ml_dtypes
import numpy as np
import pytest

import trackpoint
from tests._memory import traced
from tests.format.test_bad_input import entry as entry_proto
from trackpoint.cli import main as cli_main
from trackpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    TrackpointError,
    TrackpointWarning,
    UnsupportedCheckpointError,
)
from trackpoint.format import (
    BundleReader,
    BundleWriter,
    CheckpointState,
    TableBuilder,
    TableReader,
    crc32c,
    data_file_name,
    encode_slice_key,
    latest_checkpoint,
    mask,
    read_checkpoint_state,
    write_checkpoint_state,
)
from trackpoint.format._varint import decode_varint, encode_varint
from trackpoint.format.protos import tensor_bundle_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from numpy.typing import NDArray

STRESS = bool(os.environ.get("TRACKPOINT_STRESS"))
MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
MiB = 1 << 20

F32 = "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"
BF16 = "model/dense/bias/.ATTRIBUTES/VARIABLE_VALUE"
STR = "model/vocab/.ATTRIBUTES/VARIABLE_VALUE"
I64 = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
SHARD_OF = {F32: 0, STR: 0, BF16: 1, I64: 1}


#: A hostile file must not make a reader hang: a test that takes longer fails, by name,
#: with every thread's stack (pytest-timeout; the test's body only, not shared fixtures).
hang_guard = pytest.mark.timeout(30, func_only=True)


# -- the fixture: 4 tensors in 2 shards ---------------------------------------------------


def values(step: int) -> dict[str, NDArray[Any]]:
    strings = np.empty(3, dtype=object)
    strings[:] = [f"alpha-{step}".encode(), b"", f"Grüße 二 {step}".encode()]
    return {
        F32: (np.arange(15, dtype=np.float32).reshape(3, 5) - 7.25) * step,
        BF16: (np.linspace(-3, 3, 7) * step).astype(ml_dtypes.bfloat16),
        STR: strings,
        I64: np.array(1000 + step, dtype=np.int64),
    }


def write_fixture(folder: Path, step: int = 2) -> str:
    prefix = str(folder / f"ckpt-{step}")
    with BundleWriter(prefix, num_shards=2) as writer:
        for key, value in values(step).items():
            writer.add(key, value, shard=SHARD_OF[key])
    return prefix


def assert_only_its_tensors_fail(
    prefix: str, which: int, path: str, error: type[TrackpointError]
) -> None:
    """`verify` blames exactly the tensors of data file `which` (1-based), naming file and key."""
    with BundleReader(prefix) as reader:
        results = dict(reader.verify())
    for key, shard in SHARD_OF.items():
        err = results[key]
        if shard != which - 1:
            assert err is None
            continue
        assert isinstance(err, error)
        assert (err.file, err.key) == (path, key)
        assert os.path.basename(path) in str(err)


def files_of(prefix: str) -> list[str]:
    return [prefix + ".index", data_file_name(prefix, 0, 2), data_file_name(prefix, 1, 2)]


@dataclasses.dataclass(frozen=True)
class Pristine:
    index: bytes
    shards: tuple[bytes, bytes]
    layout: dict[str, tuple[int, int, int]]  # key: (shard, offset, size)
    expected: dict[str, NDArray[Any]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    prefix = write_fixture(tmp_path_factory.mktemp("pristine"))
    index, *shards = (Path(path).read_bytes() for path in files_of(prefix))
    layout = {}
    for key, value in TableReader(index).items():
        if key:
            proto = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            layout[key.decode()] = (proto.shard_id, proto.offset, proto.size)
    return Pristine(index, (shards[0], shards[1]), layout, values(2))


def place(folder: Path, index: bytes | None, shards: Sequence[bytes | None], name: str) -> str:
    prefix = str(folder / name)
    for path, content in zip(files_of(prefix), [index, *shards], strict=True):
        if content is not None:
            with open(path, "wb") as f:
                f.write(content)
    return prefix


def read_all(prefix: str, *, mmap: bool = False) -> dict[str, NDArray[Any]]:
    with BundleReader(prefix, mmap=mmap) as reader:
        names = reader.keys()
        return {key: reader.get_tensor(key) for key in names}


def outcome(prefix: str, *, mmap: bool = False) -> dict[str, NDArray[Any]] | TrackpointError:
    """Every tensor, or the TrackpointError reading raised; any other exception escapes."""
    try:
        return read_all(prefix, mmap=mmap)
    except TrackpointError as err:
        return err


def same(got: dict[str, NDArray[Any]], expected: dict[str, NDArray[Any]]) -> bool:
    return got.keys() == expected.keys() and all(
        got[k].dtype == expected[k].dtype and np.array_equal(got[k], expected[k]) for k in got
    )


def test_fixture_is_what_the_corpus_assumes(tmp_path, pristine):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    assert same(read_all(prefix), pristine.expected)
    assert {key: shard for key, (shard, _, _) in pristine.layout.items()} == SHARD_OF
    assert 300 < len(pristine.index) < 1500
    assert pristine.expected[STR].tolist()[1] == b""


# -- 4.3: the corruption corpus -------------------------------------------------------------


def dont_care_index_bytes(table: bytes) -> set[int]:
    """Bytes of a table no reader looks at: the metaindex block (always empty in a bundle),
    its trailer and its footer handle, and the footer's padding (TF ignores them too)."""
    footer = len(table) - 48
    meta_offset, pos = decode_varint(table, footer)
    meta_size, index_handle = decode_varint(table, pos)
    _, pos = decode_varint(table, index_handle)
    _, end = decode_varint(table, pos)
    return (
        set(range(meta_offset, meta_offset + meta_size + 5))
        | set(range(footer, index_handle))
        | set(range(end, len(table) - 8))
    )


def index_bit_flips_are_caught(tmp_path: Path, index: bytes, pristine: Pristine) -> int:
    prefix = place(tmp_path, index, pristine.shards, "ckpt-2")
    path = prefix + ".index"
    ignored = dont_care_index_bytes(index)
    # The metaindex block (8 bytes + 5 of trailer), its handle and the padding; nothing else.
    assert len(ignored) <= 13 + 40, sorted(ignored)
    harmless = set()
    cases = 0
    for position in range(len(index)):
        for bit in range(8):
            mutated = bytearray(index)
            mutated[position] ^= 1 << bit
            with open(path, "wb") as f:
                f.write(mutated)
            got = outcome(prefix)
            cases += 1
            if isinstance(got, TrackpointError):
                assert isinstance(got, CorruptCheckpointError), (position, bit, got)
                assert got.file == path
                assert os.path.basename(path) in str(got)
            else:
                assert position in ignored, (position, bit)
                assert same(got, pristine.expected)
                harmless.add(position)
    assert harmless <= ignored
    return cases


@contextlib.contextmanager
def memory_bound(input_bytes: int) -> Iterator[None]:
    """Fail if any case inside allocated more than twice its input plus 8 MiB.

    The peak over the block bounds every single case's peak (numpy registers its
    allocations with tracemalloc, so a tensor allocated from a lying index shows).
    """
    with traced() as peak:
        yield
    limit = 2 * input_bytes + (8 << 20)
    assert peak.bytes <= limit, f"peak {peak.bytes} bytes for {input_bytes} of input"


@pytest.mark.timeout(120, func_only=True)
def test_every_index_bit_flip_is_refused_or_provably_harmless(tmp_path, pristine):
    size = len(pristine.index) + sum(map(len, pristine.shards))
    with memory_bound(size):
        cases = index_bit_flips_are_caught(tmp_path, pristine.index, pristine)
    assert cases == 8 * len(pristine.index)


def snappy_index(index: bytes) -> bytes:
    out = io.BytesIO()
    builder = TableBuilder(out, compression="snappy")
    for key, value in TableReader(index).items():
        builder.add(key, value)
    builder.finish()
    return out.getvalue()


@pytest.mark.timeout(120, func_only=True)
def test_every_bit_flip_of_a_snappy_index_is_refused_or_provably_harmless(tmp_path, pristine):
    index = snappy_index(pristine.index)
    assert same(read_all(place(tmp_path, index, pristine.shards, "ckpt-2")), pristine.expected)
    index_bit_flips_are_caught(tmp_path, index, pristine)


def owner(pristine: Pristine, shard: int, position: int) -> str:
    for key, (key_shard, offset, size) in pristine.layout.items():
        if key_shard == shard and offset <= position < offset + size:
            return key
    raise AssertionError(f"byte {position} of shard {shard} belongs to no tensor")


@pytest.mark.timeout(120, func_only=True)
def test_every_data_byte_flip_names_the_shard_and_the_tensor(tmp_path, pristine):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    cases = 0
    size = len(pristine.index) + sum(map(len, pristine.shards))
    with memory_bound(size):
        for shard, content in enumerate(pristine.shards):
            path = data_file_name(prefix, shard, 2)
            for position in range(len(content)):
                key = owner(pristine, shard, position)
                for bits in (0x01, 0x80, 0xFF):
                    mutated = bytearray(content)
                    mutated[position] ^= bits
                    with open(path, "wb") as f:
                        f.write(mutated)
                    with BundleReader(prefix) as reader:
                        results = dict(reader.verify())
                    bad = {k: err for k, err in results.items() if err is not None}
                    assert list(bad) == [key], (shard, position, bits, bad)
                    err = bad[key]
                    assert isinstance(err, CorruptCheckpointError)
                    assert (err.file, err.key) == (path, key)
                    assert os.path.basename(path) in str(err)
                    assert key in str(err)
                    if "failed its checksum" in str(err):
                        assert "stored 0x" in str(err)
                        assert "computed 0x" in str(err)
                    for mmap in (False, True):
                        got = outcome(prefix, mmap=mmap)
                        assert isinstance(got, CorruptCheckpointError)
                        assert (got.file, got.key) == (path, key)
                    cases += 1
            with open(path, "wb") as f:
                f.write(content)
    assert cases == 3 * sum(map(len, pristine.shards))
    assert same(read_all(prefix), pristine.expected)


@pytest.mark.timeout(60, func_only=True)
def test_index_truncated_at_every_byte_is_refused(tmp_path, pristine):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    path = prefix + ".index"
    for keep in range(len(pristine.index)):
        os.truncate(path, keep)
        with pytest.raises(CorruptCheckpointError) as info:
            BundleReader(prefix)
        assert info.value.file == path
        with open(path, "wb") as f:
            f.write(pristine.index)


def data_cuts(pristine: Pristine, shard: int) -> list[int]:
    boundaries = {0}
    for key_shard, offset, size in pristine.layout.values():
        if key_shard == shard:
            boundaries |= {offset, offset + size}
    size = len(pristine.shards[shard])
    return sorted({c for b in boundaries for c in (b - 1, b, b + 1) if 0 <= c < size})


def test_data_truncated_at_every_tensor_boundary_names_the_cut_tensors(tmp_path, pristine):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    cases = 0
    for shard, content in enumerate(pristine.shards):
        path = data_file_name(prefix, shard, 2)
        for keep in data_cuts(pristine, shard):
            os.truncate(path, keep)
            with BundleReader(prefix) as reader:
                results = dict(reader.verify())
            for key, (key_shard, offset, size) in pristine.layout.items():
                err = results[key]
                if key_shard != shard or offset + size <= keep:
                    assert err is None, (key, keep)
                    continue
                assert isinstance(err, CorruptCheckpointError), (key, keep)
                assert (err.file, err.key) == (path, key)
                assert "truncated" in str(err)
            cases += 1
            with open(path, "wb") as f:
                f.write(content)
    assert cases >= 12


def test_zeroed_pages_are_refused(tmp_path, pristine):
    # Each file here is smaller than a page: a zeroed first page is a zeroed file.
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    index, shard0, shard1 = files_of(prefix)
    with open(index, "r+b") as f:
        f.write(bytes(len(pristine.index)))
    with pytest.raises(CorruptCheckpointError, match="bad magic number") as info:
        BundleReader(prefix)
    assert info.value.file == index
    with open(index, "wb") as f:
        f.write(pristine.index)
    for shard, path in enumerate((shard0, shard1)):
        with open(path, "r+b") as f:
            f.write(bytes(len(pristine.shards[shard])))
        with BundleReader(prefix) as reader:
            bad = {k: e for k, e in reader.verify() if e is not None}
        assert sorted(bad) == sorted(k for k, s in SHARD_OF.items() if s == shard)
        assert all((e.file, e.key) == (path, k) for k, e in bad.items())  # type: ignore[attr-defined]
        with open(path, "wb") as f:
            f.write(pristine.shards[shard])


def test_zeroed_pages_of_larger_files_name_the_tensors_on_them(tmp_path):
    # Tensors spread over 20 pages of data, and an index of three pages.
    prefix = str(tmp_path / "big")
    arrays = {
        f"model/layer_{i:03d}/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.full(100, i + 1, np.float32)
        for i in range(200)
    }
    with BundleWriter(prefix) as writer:
        for key, value in arrays.items():
            writer.add(key, value)
    index, data = prefix + ".index", data_file_name(prefix, 0, 1)
    with open(data, "rb") as f:
        original = f.read()
    with open(index, "rb") as f:
        table = f.read()
    layout = {}
    for raw_key, serialized in TableReader(table).items():
        if raw_key:
            proto = tensor_bundle_pb2.BundleEntryProto.FromString(serialized)
            layout[raw_key.decode()] = (proto.size, proto.offset)
    for page in range(0, len(original), 4096):
        with open(data, "r+b") as f:
            f.seek(page)
            f.write(bytes(min(4096, len(original) - page)))
        with BundleReader(prefix) as reader:
            bad = {k for k, e in reader.verify() if e is not None}
        hit = {
            k
            for k, (size, offset) in layout.items()
            if offset < page + 4096 and page < offset + size
        }
        assert bad == hit, page
        with open(data, "wb") as f:
            f.write(original)
    assert len(table) > 2 * 4096
    for page in range(0, len(table), 4096):
        zeroed = table[:page] + bytes(len(table[page : page + 4096])) + table[page + 4096 :]
        with open(index, "wb") as f:
            f.write(zeroed)
        with pytest.raises(CorruptCheckpointError) as info:
            BundleReader(prefix)
        assert info.value.file == index


@pytest.mark.parametrize("which", [0, 1, 2], ids=["index", "shard-0", "shard-1"])
def test_each_file_deleted_in_turn(tmp_path, pristine, which):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    path = files_of(prefix)[which]
    os.remove(path)
    if which == 0:
        with pytest.raises(CheckpointNotFoundError, match="is missing") as info:
            BundleReader(prefix)
        assert info.value.file == path
        with pytest.raises(CheckpointNotFoundError):
            trackpoint.CheckpointReader(prefix)
        return
    assert_only_its_tensors_fail(prefix, which, path, IncompleteCheckpointError)


def test_swapped_shards_are_refused_naming_file_and_key(tmp_path, pristine):
    prefix = place(tmp_path, pristine.index, pristine.shards[::-1], "ckpt-2")
    with BundleReader(prefix) as reader:
        results = dict(reader.verify())
    for key, shard in SHARD_OF.items():
        err = results[key]
        assert isinstance(err, CorruptCheckpointError), key
        assert (err.file, err.key) == (data_file_name(prefix, shard, 2), key)


def test_shard_from_an_earlier_save_is_refused(tmp_path, pristine):
    earlier = write_fixture(tmp_path / "earlier", step=1)
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    for shard in (0, 1):
        path = data_file_name(prefix, shard, 2)
        shutil.copyfile(data_file_name(earlier, shard, 2), path)
        with BundleReader(prefix) as reader:
            results = dict(reader.verify())
        for key, key_shard in SHARD_OF.items():
            err = results[key]
            if key_shard != shard:
                assert err is None
                continue
            assert isinstance(err, CorruptCheckpointError), key
            assert (err.file, err.key) == (path, key)
        with open(path, "wb") as f:
            f.write(pristine.shards[shard])


def replace_with(path: str, kind: str) -> None:
    os.remove(path)
    if kind == "empty":
        Path(path).touch()
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("kind", ["empty", "directory", "fifo", "dev-zero-symlink"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["index", "shard-0", "shard-1"])
@hang_guard
def test_file_replaced_by_something_else_is_refused(tmp_path, pristine, kind, which):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    path = files_of(prefix)[which]
    replace_with(path, kind)
    if which == 0:
        with pytest.raises(CorruptCheckpointError) as info:
            BundleReader(prefix)
        assert info.value.file == path
        with pytest.raises(CorruptCheckpointError):
            trackpoint.CheckpointReader(prefix)
        return
    assert_only_its_tensors_fail(prefix, which, path, CorruptCheckpointError)


def test_cli_verify_names_every_bad_tensor_and_exits_1(tmp_path, pristine, capsys):
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    for shard in (0, 1):
        path = data_file_name(prefix, shard, 2)
        mutated = bytearray(pristine.shards[shard])
        mutated[-1] ^= 0x40  # the last tensor of each shard
        with open(path, "wb") as f:
            f.write(mutated)
    assert cli_main(["verify", "--json", prefix]) == 1
    record = json.loads(capsys.readouterr().out)
    last = {
        data_file_name(prefix, s, 2): max(
            (k for k in SHARD_OF if SHARD_OF[k] == s), key=lambda k: pristine.layout[k][1]
        )
        for s in (0, 1)
    }
    assert record["ok"] is False
    assert {p["file"]: p["key"] for p in record["problems"]} == last


@pytest.mark.skipif(not STRESS, reason="TRACKPOINT_STRESS=1 runs random multi-byte mutations")
@pytest.mark.timeout(600, func_only=True)
def test_random_mutations_raise_only_trackpoint_errors(tmp_path, pristine):
    seed = int(os.environ.get("TRACKPOINT_SEED", "6"))
    print(f"TRACKPOINT_SEED={seed}")
    rng = np.random.default_rng(seed)
    prefix = place(tmp_path, pristine.index, pristine.shards, "ckpt-2")
    originals = [pristine.index, *pristine.shards]
    for _ in range(20_000):
        which = int(rng.integers(3))
        content = bytearray(originals[which])
        for _ in range(int(rng.integers(1, 9))):
            content[int(rng.integers(len(content)))] ^= int(rng.integers(1, 256))
        if rng.random() < 0.2:
            del content[int(rng.integers(len(content))) :]
        path = files_of(prefix)[which]
        with open(path, "wb") as f:
            f.write(content)
        for mmap in (False, True):
            got = outcome(prefix, mmap=mmap)
            if isinstance(got, TrackpointError):
                assert got.file is not None
        with open(path, "wb") as f:
            f.write(originals[which])


# -- 4.4: adversarial structure with every checksum recomputed -------------------------------


def trailer(contents: bytes, block_type: int = 0) -> bytes:
    return bytes([block_type]) + struct.pack(
        "<I", mask(crc32c(bytes([block_type]), crc32c(contents)))
    )


def block(
    entries: Sequence[tuple[bytes, bytes]],
    *,
    raw: bytes | None = None,
    restarts: Sequence[int] | None = None,
    num_restarts: int | None = None,
) -> bytes:
    """A block of whole keys, a restart at each (`raw` replaces the encoded entries)."""
    body = bytearray()
    offsets = []
    for key, value in entries:
        offsets.append(len(body))
        body += encode_varint(0) + encode_varint(len(key)) + encode_varint(len(value)) + key + value
    if raw is not None:
        body = bytearray(raw)
        offsets = [0]
    points = list(offsets or [0]) if restarts is None else list(restarts)
    tail = b"".join(struct.pack("<I", p) for p in points)
    count = len(points) if num_restarts is None else num_restarts
    return bytes(body) + tail + struct.pack("<I", count)


def table(
    data_blocks: Sequence[bytes],
    *,
    block_type: int = 0,
    handles: Sequence[bytes] | None = None,
    index_handle: bytes | None = None,
) -> bytes:
    """A whole table, every trailer's crc computed over exactly the bytes stored."""
    out = bytearray()
    index = []
    for i, contents in enumerate(data_blocks):
        handle = encode_varint(len(out)) + encode_varint(len(contents))
        index.append((b"\xff" * 8, handle if handles is None else handles[i]))
        out += contents + trailer(contents, block_type)
    meta = block([])
    meta_handle = encode_varint(len(out)) + encode_varint(len(meta))
    out += meta + trailer(meta)
    index_block = block(index)
    own_handle = encode_varint(len(out)) + encode_varint(len(index_block))
    out += index_block + trailer(index_block)
    footer = meta_handle + (own_handle if index_handle is None else index_handle)
    out += footer.ljust(40, b"\0")[:40] + MAGIC
    return bytes(out)


def header(num_shards: int = 1, *, endianness: int = 0, **version: Any) -> bytes:
    proto = tensor_bundle_pb2.BundleHeaderProto(num_shards=num_shards)
    proto.endianness = endianness  # type: ignore[assignment]
    proto.version.producer = 1
    for name, value in version.items():
        if name == "bad_consumers":
            proto.version.bad_consumers.extend(value)
        else:
            setattr(proto.version, name, value)
    return proto.SerializeToString()


def entry(
    dtype: int,
    shape: Sequence[int],
    data: bytes = b"",
    *,
    offset: int = 0,
    size: int | None = None,
    shard: int = 0,
    crc: int | None = None,
    slices: Sequence[Sequence[tuple[int, int | None]]] = (),
) -> bytes:
    """`test_bad_input.entry` (crc right for `data` unless told), with slices, serialized."""
    proto = entry_proto(dtype, shape, data=data, offset=offset, size=size, shard=shard, crc=crc)
    for extents in slices:
        proto_slice = proto.slices.add()
        for start, length in extents:
            extent = proto_slice.extent.add()
            extent.start = start
            if length is not None:
                extent.length = length
    return proto.SerializeToString()


def f32(*numbers: float) -> bytes:
    return np.array(numbers, np.float32).tobytes()


def length_crc(lengths: Sequence[int], *, big: bool = False) -> int:
    fmt = ">" if big else "<"
    crc = 0
    for n in lengths:
        crc = crc32c(struct.pack(f"{fmt}I" if n <= 0xFFFFFFFF else f"{fmt}Q", n), crc)
    return crc


def strings_data(lengths: Sequence[int], elements: bytes, *, big: bool = False) -> bytes:
    """String tensor bytes with a correct length checksum for whatever lengths are claimed."""
    fmt = ">" if big else "<"
    varints = b"".join(encode_varint(n) for n in lengths)
    return varints + struct.pack(f"{fmt}I", mask(length_crc(lengths, big=big))) + elements


def strings_crc(lengths: Sequence[int], elements: bytes, *, big: bool = False) -> int:
    """The masked entry crc of `strings_data(lengths, elements)`: lengths, their crc, bytes."""
    data = strings_data(lengths, elements, big=big)
    skip = len(b"".join(encode_varint(n) for n in lengths))
    return mask(crc32c(data[skip:], length_crc(lengths, big=big)))


def bundle_index(
    entries: Sequence[tuple[bytes, bytes]], *, head: bytes | None = None, block_type: int = 0
) -> bytes:
    items = [(b"", header() if head is None else head), *sorted(entries)]
    contents = block(items)
    if block_type == 1:
        contents = bytes(cramjam.snappy.compress_raw(contents))
    return table([contents], block_type=block_type)


@dataclasses.dataclass(frozen=True)
class Attack:
    """A hand-made bundle and what reading it must raise.

    `file` is "index" or a shard number; `key` None when the error is about the whole file.
    """

    index: bytes
    shards: Sequence[bytes] = (b"",)
    error: type[TrackpointError] = CorruptCheckpointError
    file: str | int = "index"
    key: str | None = None
    match: str = ""
    num_shards: int | None = None  # how the data files are named, when not len(shards)


X4 = f32(1, 2, 3, 4)


def one(dtype: int, shape: Sequence[int], data: bytes = X4, **kwargs: Any) -> bytes:
    """An index holding tensor "x" (default data: four float32s)."""
    return bundle_index([(b"x", entry(dtype, shape, data, **kwargs))])


def table_level(entries: Sequence[tuple[bytes, bytes]], match: str) -> Attack:
    return Attack(table([block(entries)]), match=match)


GOOD_ENTRY = entry(1, [4], X4)
SNAPPY_BODY = bytes(cramjam.snappy.compress_raw(block([(b"", header()), (b"x", GOOD_ENTRY)])))


def restart_attack(**kwargs: Any) -> Attack:
    return Attack(
        table([block([(b"", header()), (b"x", GOOD_ENTRY)], **kwargs)]), [X4], match="restart"
    )


def raw_block_attack(raw: bytes, match: str) -> Attack:
    return Attack(table([block([], raw=raw)]), [X4], match=match)


def snappy_attack(body: bytes, match: str) -> Attack:
    return Attack(table([body], block_type=1), [X4], match=match)


def sliced(
    shape: Sequence[int],
    parts: Sequence[tuple[Sequence[tuple[int, int]], bytes]],
    data_dtype: int = 1,
) -> Attack:
    """A sliced tensor "w" of `shape` whose slices and their data are `parts`."""
    full = entry(data_dtype, shape, b"", size=0, crc=0, slices=[extents for extents, _ in parts])
    entries = [(b"w", full)]
    offset = 0
    blob = b""
    for extents, data in parts:
        lengths = [length for _, length in extents]
        entries.append(
            (encode_slice_key("w", tuple(extents)), entry(data_dtype, lengths, data, offset=offset))
        )
        offset += len(data)
        blob += data
    return Attack(bundle_index(sorted(entries)), [blob])


def million_slices() -> bytes:
    """Tensor "w" listing 10^6 one-element slices, made as bytes (the message API is slow)."""
    base = entry(1, [10**6], b"", size=0, crc=0)
    one_slice = entry(1, [10**6], b"", size=0, crc=0, slices=[[(0, 1)]])[len(base) :]
    return bundle_index([(b"w", base + one_slice * 10**6)])


U63 = 1 << 63
STR_2_60 = strings_data([1 << 60], b"abc")


ATTACKS: dict[str, Callable[[], Attack]] = {
    # shapes
    "huge-shape-2^40": lambda: Attack(one(1, [1 << 40]), [X4], key="x", match="cannot be read"),
    "huge-shape-2^32x2^32": lambda: Attack(one(1, [1 << 32, 1 << 32]), [X4], key="x"),
    "int64-overflowing-shape": lambda: Attack(one(1, [1 << 62] * 3), [X4], key="x"),
    "dim-int64-max": lambda: Attack(one(1, [U63 - 1]), [X4], key="x"),
    "string-shape-2^62": lambda: Attack(one(7, [1 << 62], X4), [X4], key="x"),
    "negative-dim": lambda: Attack(one(1, [4, -1]), [X4], key="x", match="negative"),
    "dim-int64-min": lambda: Attack(one(1, [-U63]), [X4], key="x", match="negative"),
    "rank-255": lambda: Attack(one(1, [1] * 255), [X4], key="x", match="invalid shape"),
    # where the bytes are
    "offset-past-eof": lambda: Attack(
        one(1, [4], offset=4), [X4], file=0, key="x", match="only 16"
    ),
    "offset-2^63": lambda: Attack(
        one(1, [4], offset=U63 - 1), [X4], file=0, key="x", match="only 16"
    ),
    "size-past-eof": lambda: Attack(
        one(1, [1 << 38], size=1 << 40), [X4], file=0, key="x", match="only 16"
    ),
    "string-size-past-eof": lambda: Attack(
        one(7, [1 << 40], size=(1 << 40) + 4), [X4], file=0, key="x"
    ),
    "negative-offset": lambda: Attack(one(1, [4], offset=-16), [X4], key="x", match="negative"),
    "shard-id-equal-to-count": lambda: Attack(
        one(1, [4], shard=1), [X4], key="x", match="in shard 1"
    ),
    "shard-id-2^31": lambda: Attack(one(1, [4], shard=(1 << 31) - 1), [X4], key="x", match="shard"),
    "num-shards-0": lambda: Attack(bundle_index([], head=header(0)), match="0 data shards"),
    "num-shards-10^9": lambda: Attack(
        bundle_index([], head=header(10**9)), match="1000000000 data shards"
    ),
    "num-shards-negative": lambda: Attack(
        bundle_index([], head=header(-1)), match="-1 data shards"
    ),
    # dtypes
    "dtype-invalid-0": lambda: Attack(one(0, [4]), [X4], UnsupportedCheckpointError, key="x"),
    "dtype-unknown-50": lambda: Attack(one(50, [4]), [X4], UnsupportedCheckpointError, key="x"),
    "dtype-ref-float-101": lambda: Attack(one(101, [4]), [X4], UnsupportedCheckpointError, key="x"),
    "dtype-ref-bfloat16-114": lambda: Attack(
        one(114, [4]), [X4], UnsupportedCheckpointError, key="x"
    ),
    "dtype-variant": lambda: Attack(
        one(21, [4]), [X4], UnsupportedCheckpointError, key="x", match="variant"
    ),
    "dtype-resource": lambda: Attack(
        one(20, [4]), [X4], UnsupportedCheckpointError, key="x", match="resource"
    ),
    "dtype-int32-max": lambda: Attack(
        one((1 << 31) - 1, [4]), [X4], UnsupportedCheckpointError, key="x"
    ),
    "dtype-negative": lambda: Attack(one(-5, [4]), [X4], UnsupportedCheckpointError, key="x"),
    # sizes
    "size-plus-1": lambda: Attack(
        one(1, [4], size=17), [X4 + b"\0"], key="x", match="needs 16 bytes"
    ),
    "size-minus-1": lambda: Attack(one(1, [4], size=15), [X4], key="x", match="needs 16 bytes"),
    "scalar-size-0": lambda: Attack(one(9, [], size=0), [X4], key="x", match="needs 8 bytes"),
    "bfloat16-odd-size": lambda: Attack(
        one(14, [2], f32(1)[:3]), [X4], key="x", match="needs 4 bytes"
    ),
    # keys and their order
    "duplicate-keys": lambda: table_level(
        [(b"", header()), (b"x", GOOD_ENTRY), (b"x", GOOD_ENTRY)], "out of order"
    ),
    "unsorted-keys": lambda: table_level(
        [(b"", header()), (b"y", GOOD_ENTRY), (b"x", GOOD_ENTRY)], "out of order"
    ),
    "header-missing": lambda: table_level([(b"x", GOOD_ENTRY)], "not the bundle header"),
    "header-not-first": lambda: table_level([(b"a", GOOD_ENTRY), (b"", header())], "out of order"),
    "header-twice": lambda: table_level([(b"", header()), (b"", header())], "out of order"),
    "no-entries": lambda: table_level([], "not the bundle header"),
    "keys-unsorted-across-blocks": lambda: Attack(
        table([block([(b"", header()), (b"y", GOOD_ENTRY)]), block([(b"x", GOOD_ENTRY)])]),
        [X4],
        match="out of order",
    ),
    # block structure
    "shared-longer-than-previous-key": lambda: raw_block_attack(
        b"\x00\x00\x00" + b"\x05\x01\x00x", "shares 5 bytes"
    ),
    "shared-at-a-restart": lambda: raw_block_attack(b"\x03\x00\x00", "shares 3 bytes"),
    "num-restarts-too-large": lambda: restart_attack(num_restarts=1000),
    "num-restarts-2^32-1": lambda: restart_attack(num_restarts=0xFFFFFFFF),
    "num-restarts-0": lambda: restart_attack(restarts=[], num_restarts=0),
    "restart-past-the-array": lambda: restart_attack(restarts=[0, 1 << 31]),
    "restart-not-at-0": lambda: restart_attack(restarts=[3]),
    "value-length-2^32": lambda: raw_block_attack(
        b"\x00\x01" + encode_varint(1 << 32) + b"x", "runs past the block"
    ),
    "key-length-2^63": lambda: raw_block_attack(
        b"\x00" + encode_varint(U63) + b"\x00x", "runs past the block"
    ),
    "block-too-short": lambda: Attack(table([b"\x01\x00"]), [X4], match="too short"),
    # block handles
    "data-handle-offset-2^63": lambda: Attack(
        table([block([(b"", header())])], handles=[encode_varint(U63) + encode_varint(10)]),
        match="past the end",
    ),
    "data-handle-size-2^64-1": lambda: Attack(
        table([block([(b"", header())])], handles=[b"\x00" + encode_varint((1 << 64) - 1)]),
        match="past the end",
    ),
    "data-handle-trailing-bytes": lambda: Attack(
        table([block([(b"", header())])], handles=[b"\x00\x10\x00"]), match="trailing bytes"
    ),
    "index-handle-offset-2^63": lambda: Attack(
        table([block([(b"", header())])], index_handle=encode_varint(U63) + b"\x10"),
        match="past the end",
    ),
    "index-handle-size-2^63": lambda: Attack(
        table([block([(b"", header())])], index_handle=b"\x00" + encode_varint(U63)),
        match="past the end",
    ),
    # varints
    "11-byte-varint-in-entry": lambda: raw_block_attack(
        b"\x80" * 10 + b"\x00", "longer than 10 bytes"
    ),
    "varint-over-64-bits": lambda: raw_block_attack(b"\xff" * 9 + b"\x02\x00\x00", "64 bits"),
    "varint-truncated-by-restarts": lambda: raw_block_attack(b"\x00\x01\x80", "runs past the end"),
    "11-byte-varint-in-footer": lambda: Attack(
        table([block([(b"", header())])], index_handle=b"\x80" * 11), match="bad footer"
    ),
    "11-byte-varint-in-entry-proto": lambda: Attack(
        bundle_index([(b"x", b"\x08" + b"\x80" * 10 + b"\x00")]), key="x", match="does not parse"
    ),
    "truncated-entry-proto": lambda: Attack(
        bundle_index([(b"x", GOOD_ENTRY[:-2])]), key="x", match="does not parse"
    ),
    "truncated-header-proto": lambda: Attack(
        bundle_index([], head=header()[:-1]), match="header does not parse"
    ),
    # compression
    "snappy-bomb-4GiB": lambda: snappy_attack(
        encode_varint(1 << 32) + b"\x00" * 64, "declares 4294967296 bytes"
    ),
    "snappy-bomb-4GiB-1": lambda: snappy_attack(
        encode_varint((1 << 32) - 1) + SNAPPY_BODY[1:], "declares"
    ),
    "snappy-one-byte-over-max-expansion": lambda: snappy_attack(
        encode_varint(30 * 64 // 3 + 1) + bytes(30), "declares 641 bytes"
    ),
    "snappy-preamble-6-bytes": lambda: snappy_attack(b"\xff" * 6, "bad length preamble"),
    "snappy-empty": lambda: snappy_attack(b"", "bad length preamble"),
    "snappy-understated-length": lambda: snappy_attack(b"\x05" + SNAPPY_BODY[1:], "decompress"),
    "snappy-garbage": lambda: snappy_attack(b"\x20" + b"\xfe" * 40, "decompress"),
    "snappy-hiding-unsorted-keys": lambda: snappy_attack(
        bytes(
            cramjam.snappy.compress_raw(
                block([(b"", header()), (b"y", GOOD_ENTRY), (b"x", GOOD_ENTRY)])
            )
        ),
        "out of order",
    ),
    "zstd-leveldb-type-2": lambda: Attack(
        table([block([(b"", header())])], block_type=2), match="compression type 2"
    ),
    "zstd-rocksdb-type-7": lambda: Attack(
        table([block([(b"", header())])], block_type=7), match="compression type 7"
    ),
    "block-type-255": lambda: Attack(
        table([block([(b"", header())])], block_type=255), match="compression type 255"
    ),
    # strings
    "string-length-2^60-valid-crc": lambda: Attack(
        one(7, [1], STR_2_60), [STR_2_60], file=0, key="x", match="do not fit"
    ),
    "string-lengths-summing-to-2^64": lambda: Attack(
        one(7, [2], strings_data([U63, U63], b"ab")),
        [strings_data([U63, U63], b"ab")],
        file=0,
        key="x",
    ),
    "string-length-11-byte-varint": lambda: Attack(
        one(7, [1], b"\x80" * 10 + b"\x01" + b"\0" * 4),
        [b"\x80" * 10 + b"\x01" + b"\0" * 4],
        file=0,
        key="x",
    ),
    "string-numel-above-size": lambda: Attack(
        one(7, [1000], b"\0" * 10), [b"\0" * 10], key="x", match="cannot fit"
    ),
    "string-numel-2^62": lambda: Attack(
        one(7, [1 << 31, 1 << 31], b"\0" * 10), [b"\0" * 10], key="x"
    ),
    # slices
    "slice-out-of-range": lambda: Attack(
        bundle_index([(b"w", entry(1, [4], b"", size=0, crc=0, slices=[[(3, 2)]]))]),
        key="w",
        match="bad slice",
    ),
    "slice-negative-start": lambda: Attack(
        bundle_index([(b"w", entry(1, [4], b"", size=0, crc=0, slices=[[(-1, 2)]]))]),
        key="w",
        match="bad slice",
    ),
    "slice-rank-mismatch": lambda: Attack(
        bundle_index([(b"w", entry(1, [4], b"", size=0, crc=0, slices=[[(0, 2), (0, 1)]]))]),
        key="w",
    ),
    "slice-without-its-entry": lambda: Attack(
        bundle_index([(b"w", entry(1, [4], b"", size=0, crc=0, slices=[[(0, 4)]]))]),
        key="w",
        match="no entry",
    ),
    "slices-overlapping": lambda: dataclasses.replace(
        sliced([4], [([(0, 3)], f32(1, 2, 3)), ([(2, 2)], f32(9, 4))]), key="w", match="overlap"
    ),
    "slices-with-a-gap": lambda: dataclasses.replace(
        sliced([4], [([(0, 1)], f32(1)), ([(2, 2)], f32(3, 4))]), key="w", match="fewer bytes"
    ),
    "slice-of-other-dtype": lambda: Attack(
        bundle_index(
            [
                (b"w", entry(1, [2], b"", size=0, crc=0, slices=[[(0, 2)]])),
                (encode_slice_key("w", ((0, 2),)), entry(9, [2], b"\0" * 16)),
            ]
        ),
        [b"\0" * 16],
        key="w",
        match="not what its extents say",
    ),
    "10^6-slices": lambda: Attack(
        million_slices(), error=UnsupportedCheckpointError, key="w", match="1000000 slices"
    ),
    # versions and byte order
    "producer-too-new": lambda: Attack(
        bundle_index([], head=header(producer=1 << 30, min_consumer=2)),
        error=UnsupportedCheckpointError,
        match="newer",
    ),
    "min-consumer-int32-max": lambda: Attack(
        bundle_index([], head=header(min_consumer=(1 << 31) - 1)),
        error=UnsupportedCheckpointError,
        match="newer",
    ),
    "bad-consumers-lists-us": lambda: Attack(
        bundle_index([], head=header(bad_consumers=[0, 1, 2])),
        error=UnsupportedCheckpointError,
        match="newer",
    ),
    "big-endian-string-with-little-endian-length-crc": lambda: Attack(
        bundle_index([(b"s", entry(7, [1], strings_data([3], b"abc")))], head=header(endianness=1)),
        [strings_data([3], b"abc")],
        file=0,
        key="s",
        match="length checksum",
    ),
    "endianness-2": lambda: Attack(
        bundle_index([], head=header(endianness=2)), match="unknown endianness"
    ),
}


def attempt(prefix: str) -> TrackpointError | None:
    """Open the bundle and read every tensor (plainly, mapped and by verify): the first error."""
    try:
        with BundleReader(prefix) as reader:
            names = reader.keys()
            for key in names:
                reader.get_tensor(key)
            for _, err in reader.verify():
                if err is not None:
                    raise err
        with BundleReader(prefix, mmap=True) as reader:
            for key in names:
                reader.get_tensor(key)
    except TrackpointError as err:
        return err
    return None


@pytest.mark.parametrize("name", list(ATTACKS))
@hang_guard
def test_doctored_structure_is_refused_within_budget(tmp_path, name):
    attack = ATTACKS[name]()
    num_shards = attack.num_shards or len(attack.shards)
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(attack.index)
    for shard, content in enumerate(attack.shards):
        with open(data_file_name(prefix, shard, num_shards), "wb") as f:
            f.write(content)
    input_size = len(attack.index) + sum(map(len, attack.shards))
    with traced() as measured:
        err = attempt(prefix)
    peak = measured.bytes
    assert err is not None, "the doctored bundle was read without complaint"
    assert type(err) is attack.error, repr(err)
    assert attack.match in str(err), str(err)
    expected_file = (
        prefix + ".index"
        if attack.file == "index"
        else data_file_name(prefix, int(attack.file), num_shards)
    )
    assert err.file == expected_file
    assert err.key == attack.key
    assert peak <= 2 * input_size + 8 * MiB, f"peak {peak} bytes for {input_size} bytes of input"


def test_builder_makes_bundles_the_reader_accepts(tmp_path):
    strings = strings_data([3, 0], b"abc")
    index = bundle_index(
        [
            (b"s", entry(7, [2], strings, crc=strings_crc([3, 0], b"abc"))),
            (b"x", entry(1, [4], X4, offset=len(strings))),
        ]
    )
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        f.write(strings + X4)
    got = read_all(prefix)
    assert got["x"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert got["s"].tolist() == [b"abc", b""]
    # and the same holds under Snappy, and for a sliced tensor
    with open(prefix + ".index", "wb") as f:
        f.write(bundle_index([(b"x", entry(1, [4], X4, offset=len(strings)))], block_type=1))
    assert read_all(prefix)["x"].tolist() == [1.0, 2.0, 3.0, 4.0]
    attack = sliced([4], [([(0, 1)], f32(1)), ([(1, 3)], f32(2, 3, 4))])
    with open(prefix + ".index", "wb") as f:
        f.write(attack.index)
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        f.write(attack.shards[0])
    assert read_all(prefix)["w"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_big_endian_bundle_reads_as_tensorflow_reads_it(tmp_path):
    # BIG is not an attack: TF byte-swaps such bundles, and so do we.
    numbers = np.array([1.5, -2.0], ">f4").tobytes()
    strings = strings_data([2, 1], b"hiz", big=True)
    index = bundle_index(
        [
            (b"f", entry(1, [2], numbers)),
            (
                b"s",
                entry(
                    7, [2], strings, offset=len(numbers), crc=strings_crc([2, 1], b"hiz", big=True)
                ),
            ),
        ],
        head=header(endianness=1),
    )
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        f.write(numbers + strings)
    got = read_all(prefix)
    assert got["f"].tolist() == [1.5, -2.0]
    assert got["s"].tolist() == [b"hi", b"z"]


def test_newer_producer_with_a_compatible_consumer_is_read(tmp_path):
    # TF's CheckVersions accepts any producer as long as min_consumer and bad_consumers allow it.
    prefix = str(tmp_path / "ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(bundle_index([(b"x", GOOD_ENTRY)], head=header(producer=1 << 30)))
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        f.write(X4)
    assert read_all(prefix)["x"].tolist() == [1.0, 2.0, 3.0, 4.0]


# -- Snappy index blocks: read, and TensorFlow reads ours ----------------------------------


def test_snappy_index_reads_like_the_uncompressed_one(tmp_path, pristine):
    index = snappy_index(pristine.index)
    footer = len(index) - 48
    _, pos = decode_varint(index, footer)
    _, pos = decode_varint(index, pos)
    index_offset, pos = decode_varint(index, pos)
    index_size, _ = decode_varint(index, pos)
    assert index[index_offset + index_size] == 1
    prefix = place(tmp_path, index, pristine.shards, "ckpt-2")
    assert same(read_all(prefix), pristine.expected)
    assert list(TableReader(index).items()) == list(TableReader(pristine.index).items())


def test_snappy_block_above_the_hard_cap_is_refused_before_allocating(monkeypatch):
    # The 1 GiB cap needs ~50 MB of compressed input to reach; a lowered cap shows the check.
    from trackpoint.format import _sstable

    body = bytes(cramjam.snappy.compress_raw(bytes(5000)))  # zeros: far below max expansion
    monkeypatch.setattr(_sstable, "_MAX_BLOCK_BYTES", 4096)
    with pytest.raises(_sstable.TableError, match=r"declares 5000 bytes.*at most 4096"):
        TableReader(table([body], block_type=1))


@pytest.mark.tf
def test_tensorflow_reads_a_bundle_whose_index_is_snappy(tmp_path, pristine, tf):
    prefix = place(tmp_path, snappy_index(pristine.index), pristine.shards, "ckpt-2")
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(pristine.expected)
    for key, value in pristine.expected.items():
        got = reader.get_tensor(key)
        if value.dtype == object:
            assert list(got.reshape(-1)) == list(value.reshape(-1))
        else:
            assert np.array_equal(np.asarray(got).astype(value.dtype), value)


# -- the `checkpoint` state file ---------------------------------------------------------------


def test_state_file_truncated_anywhere_is_refused_or_still_names_the_latest(tmp_path, pristine):
    for step in (1, 2):
        place(tmp_path, pristine.index, pristine.shards, f"ckpt-{step}")
    write_checkpoint_state(
        tmp_path,
        tmp_path / "ckpt-2",
        [tmp_path / "ckpt-1", tmp_path / "ckpt-2"],
        [1.5e9, 1.6e9],
        1.4e9,
    )
    path = tmp_path / "checkpoint"
    text = path.read_bytes()
    for keep in range(len(text)):
        path.write_bytes(text[:keep])
        got: CheckpointState | CorruptCheckpointError | None
        try:
            got = read_checkpoint_state(tmp_path)
        except CorruptCheckpointError as err:
            got = err
        if isinstance(got, CorruptCheckpointError):
            assert got.file == str(path)
            with pytest.raises(CorruptCheckpointError):
                latest_checkpoint(tmp_path)
            continue
        state = got
        # A cut between fields (or inside a number) leaves a shorter, valid state.
        assert state is not None
        assert state.model_checkpoint_path == str(tmp_path / "ckpt-2")
        assert latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-2")


@pytest.mark.parametrize("seed", range(8))
def test_state_file_of_garbage_is_refused(tmp_path, seed):
    rng = np.random.default_rng(seed)
    garbage = rng.bytes(int(rng.integers(1, 2000)))
    (tmp_path / "checkpoint").write_bytes(garbage)
    with pytest.raises(CorruptCheckpointError) as info:
        latest_checkpoint(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")


def test_state_file_naming_missing_checkpoints(tmp_path, pristine):
    place(tmp_path, pristine.index, pristine.shards, "ckpt-1")
    write_checkpoint_state(
        tmp_path, tmp_path / "ckpt-3", [tmp_path / "ckpt-1", tmp_path / "ckpt-3"]
    )
    with pytest.warns(TrackpointWarning, match="'ckpt-3'.* is missing"):
        assert latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-1")
    os.remove(tmp_path / "ckpt-1.index")
    with pytest.raises(CheckpointNotFoundError, match="files are gone") as info:
        latest_checkpoint(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("form", ["absolute", "dot-dot"])
def test_state_file_pointing_outside_its_folder_is_ignored_and_never_touched(
    tmp_path, pristine, form
):
    outside = tmp_path / "other"
    outside.mkdir()
    place(outside, pristine.index, pristine.shards, "ckpt-9")
    run = tmp_path / "run"
    run.mkdir()
    named = str(outside / "ckpt-9") if form == "absolute" else "../other/ckpt-9"
    (run / "checkpoint").write_text(
        f'model_checkpoint_path: "{named}"\nall_model_checkpoint_paths: "{named}"\n',
        encoding="utf-8",
    )
    before = snapshot(outside)
    # A folder's latest checkpoint is one of its own (issue 12; a divergence from TF).
    with pytest.warns(TrackpointWarning, match="outside"):
        assert latest_checkpoint(run) is None
    assert same(read_all(str(outside / "ckpt-9")), pristine.expected)
    # A manager in `run` that saves and sweeps must leave the other folder alone.
    ckpt = trackpoint.Checkpoint(v=trackpoint.Variable(np.zeros(3, np.float32)))
    manager = trackpoint.CheckpointManager(ckpt, run, max_to_keep=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackpointWarning)
        for _ in range(3):
            manager.save()
    assert snapshot(outside) == before


@pytest.mark.parametrize("folder_name", ["run[1]", "run*", "run?x", "run[!a]{b}"])
def test_glob_metacharacters_in_folder_names_are_plain_characters(tmp_path, folder_name):
    run = tmp_path / folder_name
    decoys = [tmp_path / "run1", tmp_path / "runAx", tmp_path / "runb"]
    for decoy in decoys:
        decoy.mkdir()
        with BundleWriter(decoy / "ckpt-1") as writer:
            writer.add("decoy", np.zeros(1))
        write_checkpoint_state(decoy, decoy / "ckpt-1")
    before = {d.name: snapshot(d) for d in decoys}
    variable = trackpoint.Variable(np.zeros(3, np.float32))
    ckpt = trackpoint.Checkpoint(v=variable)
    manager = trackpoint.CheckpointManager(ckpt, run, max_to_keep=1)
    for step in range(3):
        variable.assign(np.full(3, step, np.float32))
        manager.save()
    assert latest_checkpoint(run) == str(run / "ckpt-3")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt")) == [
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]
    variable.assign(np.zeros(3, np.float32))
    ckpt.restore(manager.latest_checkpoint).assert_consumed()
    assert variable.numpy().tolist() == [2.0, 2.0, 2.0]
    assert {d.name: snapshot(d) for d in decoys} == before


def test_100_mb_state_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "checkpoint"
    with open(path, "wb") as f:
        f.write(b'model_checkpoint_path: "ckpt-1"\n')
        f.truncate(100 * MiB)  # sparse: no disk used
    with traced() as peak, pytest.raises(CorruptCheckpointError, match="too large") as info:
        read_checkpoint_state(tmp_path)
    assert info.value.file == str(path)
    assert peak.bytes < MiB


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@hang_guard
def test_fifo_named_checkpoint_does_not_block(tmp_path, pristine):
    place(tmp_path, pristine.index, pristine.shards, "ckpt-1")
    os.mkfifo(tmp_path / "checkpoint")
    with pytest.raises(CorruptCheckpointError, match="not a regular file") as info:
        latest_checkpoint(tmp_path)
    assert info.value.file == str(tmp_path / "checkpoint")
    with pytest.raises(CorruptCheckpointError):
        trackpoint.latest_checkpoint(tmp_path)
