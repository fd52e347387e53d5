"""TableBuilder and TableReader on their own: TF's LevelDB table layout (TF format doc §3)."""

from __future__ import annotations

import io
import itertools
import struct
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackpoint.format._crc32c import crc32c, mask
from trackpoint.format._sstable import (
    DEFAULT_BLOCK_SIZE,
    FOOTER_SIZE,
    MAGIC,
    TableBuilder,
    TableError,
    TableReader,
    short_successor,
    shortest_separator,
)
from trackpoint.format._varint import decode_varint, encode_varint

if TYPE_CHECKING:
    from collections.abc import Iterable

# -- helpers: an independent little parser and assembler of tables ---------------------


def build(items: Iterable[tuple[bytes, bytes]], **kwargs: Any) -> bytes:
    out = io.BytesIO()
    builder = TableBuilder(out, **kwargs)
    for key, value in items:
        builder.add(key, value)
    builder.finish()
    assert builder.file_size == len(out.getvalue())
    return out.getvalue()


def parse_block(block: bytes) -> tuple[list[tuple[int, int, bytes, bytes]], list[int]]:
    """(entries as (offset, shared, key, value), restart offsets) of one block."""
    (count,) = struct.unpack_from("<I", block, len(block) - 4)
    restarts_start = len(block) - 4 - 4 * count
    restarts = list(struct.unpack_from(f"<{count}I", block, restarts_start))
    entries = []
    pos, key = 0, b""
    while pos < restarts_start:
        start = pos
        shared, pos = decode_varint(block, pos)
        non_shared, pos = decode_varint(block, pos)
        value_len, pos = decode_varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((start, shared, key, block[pos : pos + value_len]))
        pos += value_len
    return entries, restarts


def footer_handles(table: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    footer = table[-FOOTER_SIZE:]
    assert footer[-8:] == struct.pack("<Q", MAGIC)
    meta_off, pos = decode_varint(footer, 0)
    meta_size, pos = decode_varint(footer, pos)
    index_off, pos = decode_varint(footer, pos)
    index_size, pos = decode_varint(footer, pos)
    return (meta_off, meta_size), (index_off, index_size)


def index_entries(table: bytes) -> list[tuple[bytes, int, int]]:
    """(index key, data block offset, data block size) per data block."""
    _, (offset, size) = footer_handles(table)
    entries, _ = parse_block(table[offset : offset + size])
    out = []
    for _, _, key, handle in entries:
        block_offset, pos = decode_varint(handle, 0)
        block_size, _ = decode_varint(handle, pos)
        out.append((key, block_offset, block_size))
    return out


def trailer(contents: bytes, block_type: int = 0) -> bytes:
    return bytes([block_type]) + struct.pack(
        "<I", mask(crc32c(bytes([block_type]), crc32c(contents)))
    )


def raw_block(
    entries: Iterable[tuple[int, bytes, bytes]], restarts: list[int] | str | None = None
) -> bytes:
    """A block of (shared, non_shared bytes, value) triples; restarts [0] unless given.

    `restarts="all"` puts a restart at every entry, as in an index block.
    """
    buf = bytearray()
    offsets = []
    for shared, non_shared, value in entries:
        offsets.append(len(buf))
        buf += encode_varint(shared) + encode_varint(len(non_shared)) + encode_varint(len(value))
        buf += non_shared + value
    if restarts == "all":
        restarts = offsets
    elif restarts is None:
        restarts = [0]
    for restart in restarts:
        buf += struct.pack("<I", restart)
    buf += struct.pack("<I", len(restarts))
    return bytes(buf)


def assemble(blocks: Iterable[tuple[bytes, bytes]], *, block_type: int = 0) -> bytes:
    """A table of the given (data block contents, index key) pairs, all checksums valid."""
    out = bytearray()
    index = []
    for contents, index_key in blocks:
        handle = encode_varint(len(out)) + encode_varint(len(contents))
        index.append((0, index_key, handle))
        out += contents + trailer(contents, block_type)
    meta = raw_block([])
    meta_handle = encode_varint(len(out)) + encode_varint(len(meta))
    out += meta + trailer(meta)
    index_block = raw_block(index, restarts="all")
    index_handle = encode_varint(len(out)) + encode_varint(len(index_block))
    out += index_block + trailer(index_block)
    out += (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    return bytes(out)


def with_block_crc_fixed(table: bytes, offset: int, size: int) -> bytes:
    """`table` with the trailer of the block at (offset, size) recomputed."""
    contents = table[offset : offset + size]
    return table[: offset + size] + trailer(contents) + table[offset + size + 5 :]


# -- round trips ----------------------------------------------------------------------


def test_table_round_trips_a_few_entries():
    items = [(b"", b"header"), (b"a", b"1"), (b"ab", b"2"), (b"b", b"")]
    reader = TableReader(build(items))
    assert list(reader.items()) == items
    assert len(reader) == 4


def test_empty_table_reads_as_no_entries():
    table = build([])
    assert index_entries(table) == []
    assert list(TableReader(table).items()) == []


def test_empty_values_round_trip():
    items = [(f"k{i:03d}".encode(), b"") for i in range(40)]
    assert list(TableReader(build(items)).items()) == items


def test_table_matches_the_worked_example_of_the_format_doc():
    # §3.4: the index of SaveV2(["x", "s"], [float32 [1, 2], string ["hi", ""]]).
    items = [
        (b"", bytes.fromhex("08011a020801")),
        (b"s", bytes.fromhex("08071204120208022008280835 9e9e48ed".replace(" ", ""))),
        (b"x", bytes.fromhex("080112041202080228083559 3ce535".replace(" ", ""))),
    ]
    table = build(items)
    assert len(table) == 142
    assert table[0x39:0x3E].hex() == "00dd33d4b5"  # data block trailer
    assert table[0x3E:0x4B].hex() == "0000000001000000" + "00c0f2a1b0"  # empty metaindex
    assert table[0x4B:0x5E].hex() == "000102790039" + "0000000001000000" + "00704c70b5"
    assert table[0x5E:].hex() == "3e084b0e" + "00" * 36 + "57fb808b247547db"


def test_large_table_spans_many_data_blocks_and_reads_back_in_order():
    # ~100-byte keys sharing long prefixes, as TF object paths do.
    prefix = b"model/" + b"layer_with_a_rather_long_name/" * 2
    items = [
        (
            prefix + f"{i // 100:04d}/sub/{i:06d}/.ATTRIBUTES/VARIABLE_VALUE".encode(),
            b"v" * (i % 41),
        )
        for i in range(20_000)
    ]
    assert all(90 <= len(k) <= 110 for k, _ in items)
    table = build(items)
    blocks = index_entries(table)
    assert len(blocks) >= 3
    assert len(table) > 2 * DEFAULT_BLOCK_SIZE
    got = list(TableReader(table).items())
    assert got == items
    # Blocks follow each other with their 5-byte trailers, and every block but the last
    # was finished as soon as it reached the target size (TF's policy, §3.3).
    for (_, offset, size), (_, next_offset, _) in itertools.pairwise(blocks):
        assert next_offset == offset + size + 5
        assert DEFAULT_BLOCK_SIZE <= size < DEFAULT_BLOCK_SIZE + 200


def test_index_keys_separate_the_data_blocks():
    items = [(f"key/{i:05d}".encode(), b"x" * 50) for i in range(2_000)]
    table = build(items, block_size=4096)
    blocks = index_entries(table)
    assert len(blocks) > 10
    lasts, firsts = [], []
    for _, offset, size in blocks:
        entries, _ = parse_block(table[offset : offset + size])
        firsts.append(entries[0][2])
        lasts.append(entries[-1][2])
    for i, (index_key, _, _) in enumerate(blocks):
        if i + 1 < len(blocks):
            assert index_key == shortest_separator(lasts[i], firsts[i + 1])
            assert lasts[i] <= index_key < firsts[i + 1]
        else:
            assert index_key == short_successor(lasts[i])
    assert list(TableReader(table).items()) == items


def test_index_block_has_a_restart_at_every_entry():
    items = [(f"key/{i:05d}".encode(), b"x" * 50) for i in range(500)]
    table = build(items, block_size=1024)
    _, (offset, size) = footer_handles(table)
    entries, restarts = parse_block(table[offset : offset + size])
    assert len(entries) > 1
    assert restarts == [start for start, _, _, _ in entries]
    assert all(shared == 0 for _, shared, _, _ in entries)


def test_data_blocks_restart_every_16_entries():
    items = [(f"common/prefix/{i:04d}".encode(), b"v") for i in range(100)]
    table = build(items)
    (_, offset, size) = index_entries(table)[0]
    entries, restarts = parse_block(table[offset : offset + size])
    assert len(entries) == 100
    assert restarts == [entries[i][0] for i in range(0, 100, 16)]
    for i, (_, shared, _, _) in enumerate(entries):
        if i % 16 == 0:
            assert shared == 0
        else:
            assert shared >= len(b"common/prefix/")


def test_restart_count_starts_over_in_each_data_block():
    items = [(f"k{i:05d}".encode(), b"x" * 100) for i in range(300)]
    table = build(items, block_size=2048)
    for _, offset, size in index_entries(table):
        entries, restarts = parse_block(table[offset : offset + size])
        assert restarts == [entries[i][0] for i in range(0, len(entries), 16)]


@given(st.lists(st.binary(max_size=40), unique=True, max_size=200), st.binary(max_size=20))
def test_table_round_trips_sorted_unique_keys(keys, value):
    items = [(key, value + key) for key in sorted(keys)]
    assert list(TableReader(build(items, block_size=256)).items()) == items


# -- separators ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "limit", "expected"),
    [
        (b"abcd", b"abzz", b"abd"),
        (b"abc", b"abd", b"abc"),
        (b"abc", b"abcdef", b"abc"),
        (b"", b"a", b""),
        (b"a", b"c", b"b"),
        (b"a\xffz", b"b", b"a\xffz"),
        (b"\xff\x01zz", b"\xff\x09", b"\xff\x02"),
        (b"\xff\xff\xfe", b"\xff\xff\xff", b"\xff\xff\xfe"),
        (b"x\x00\x00", b"x\x00\x02", b"x\x00\x01"),
    ],
    ids=[
        "shortens",
        "next-byte-adjacent",
        "prefix",
        "empty-start",
        "single-byte",
        "cannot-increment",
        "ff-prefix",
        "ff-adjacent",
        "nul-bytes",
    ],
)
def test_shortest_separator_follows_leveldb(start, limit, expected):
    assert shortest_separator(start, limit) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"w/.ATTRIBUTES/VARIABLE_VALUE", b"x"),
        (b"x", b"y"),
        (b"\xfe", b"\xff"),
        (b"\xff\xffa", b"\xff\xffb"),
        (b"\xff\xff", b"\xff\xff"),
        (b"", b""),
    ],
    ids=["tf-key", "one-byte", "fe", "ff-prefix", "all-ff", "empty"],
)
def test_short_successor_follows_leveldb(key, expected):
    assert short_successor(key) == expected


@given(st.binary(max_size=12), st.binary(max_size=12))
def test_shortest_separator_lies_between_its_keys(a, b):
    if a == b:
        return
    start, limit = min(a, b), max(a, b)
    separator = shortest_separator(start, limit)
    assert start <= separator < limit
    assert len(separator) <= len(start)


@given(st.binary(max_size=12))
def test_short_successor_is_not_below_its_key(key):
    successor = short_successor(key)
    assert successor >= key
    assert len(successor) <= len(key)


# -- the builder refuses misuse --------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [[b"b", b"a"], [b"a", b"a"], [b"ab", b"a"], [b"a", b""]],
    ids=["descending", "duplicate", "prefix-after-longer", "empty-after-key"],
)
def test_builder_refuses_keys_out_of_order(keys):
    builder = TableBuilder(io.BytesIO())
    builder.add(keys[0], b"")
    with pytest.raises(ValueError, match="strictly increasing"):
        builder.add(keys[1], b"")


def test_builder_refuses_entries_after_finish():
    builder = TableBuilder(io.BytesIO())
    builder.add(b"a", b"")
    builder.finish()
    with pytest.raises(ValueError, match="already finished"):
        builder.add(b"b", b"")


# -- the reader refuses damaged tables -------------------------------------------------


def small_table() -> bytes:
    return build([(b"", b"header"), (b"abc", b"1"), (b"abd", b"2"), (b"b", b"3")])


def test_assemble_helper_makes_tables_the_reader_accepts():
    block = raw_block([(0, b"a", b"1"), (1, b"b", b"2")])
    assert list(TableReader(assemble([(block, b"b")])).items()) == [(b"a", b"1"), (b"ab", b"2")]


def test_reader_rejects_flipped_data_block_byte():
    table = bytearray(small_table())
    table[10] ^= 0x01
    with pytest.raises(TableError, match="block checksum mismatch"):
        TableReader(bytes(table))


def test_reader_without_checksums_returns_damaged_values():
    table = small_table()
    (_, offset, size) = index_entries(table)[0]
    entries, _ = parse_block(table[offset : offset + size])
    value_pos = offset + entries[1][0] + 3 + 3  # varints, key "abc", then the value "1"
    assert table[value_pos : value_pos + 1] == b"1"
    damaged = table[:value_pos] + b"9" + table[value_pos + 1 :]
    with pytest.raises(TableError, match="block checksum mismatch"):
        TableReader(damaged)
    assert dict(TableReader(damaged, verify_checksums=False).items())[b"abc"] == b"9"


def test_reader_rejects_flipped_index_block_byte():
    table = bytearray(small_table())
    _, (offset, _) = footer_handles(bytes(table))
    table[offset + 2] ^= 0x40
    with pytest.raises(TableError, match="block checksum mismatch in index block"):
        TableReader(bytes(table))


def test_reader_rejects_bad_magic():
    table = bytearray(small_table())
    table[-1] ^= 0xFF
    with pytest.raises(TableError, match="bad magic number"):
        TableReader(bytes(table))


@pytest.mark.parametrize("keep", [0, 1, 47, 48, 60, -1, -8, -48], ids=lambda n: f"keep-{n}")
def test_reader_rejects_truncated_table(keep):
    table = small_table()
    with pytest.raises(TableError):
        TableReader(table[:keep])


def test_reader_rejects_table_shorter_than_its_footer():
    with pytest.raises(TableError, match="shorter than a table footer"):
        TableReader(small_table()[-47:])


def test_reader_rejects_footer_handle_pointing_past_the_file():
    table = small_table()
    (meta, _) = footer_handles(table)
    footer = (encode_varint(meta[0]) + encode_varint(meta[1])) + (
        encode_varint(len(table) * 4) + encode_varint(14)
    )
    doctored = table[:-FOOTER_SIZE] + footer.ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    with pytest.raises(TableError, match="runs past the end of the file"):
        TableReader(doctored)


def test_reader_rejects_index_handle_pointing_into_the_footer():
    table = small_table()
    (meta, (index_offset, index_size)) = footer_handles(table)
    footer = encode_varint(meta[0]) + encode_varint(meta[1])
    footer += encode_varint(index_offset + 10) + encode_varint(index_size)
    doctored = table[:-FOOTER_SIZE] + footer.ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    with pytest.raises(TableError, match="runs past the end of the file"):
        TableReader(doctored)


def test_reader_rejects_data_block_handle_pointing_past_the_file():
    block = raw_block([(0, b"a", b"1")])
    table = assemble([(block, b"b")])
    # Rewrite the single index entry's handle to (0, huge), keeping the block's length.
    good_handle = encode_varint(0) + encode_varint(len(block))
    bad_handle = encode_varint(0) + encode_varint(0x7F)
    assert len(good_handle) == len(bad_handle)
    _, (index_offset, index_size) = footer_handles(table)
    index = table[index_offset : index_offset + index_size].replace(good_handle, bad_handle, 1)
    doctored = with_block_crc_fixed(
        table[:index_offset] + index + table[index_offset + index_size :], index_offset, index_size
    )
    with pytest.raises(TableError, match="runs past the end of the file"):
        TableReader(doctored)


def test_reader_rejects_footer_with_bad_varint():
    table = small_table()
    footer = (b"\xff" * 40) + struct.pack("<Q", MAGIC)
    with pytest.raises(TableError, match="bad footer"):
        TableReader(table[:-FOOTER_SIZE] + footer)


def test_reader_rejects_shared_prefix_longer_than_previous_key():
    table = small_table()
    (_, offset, size) = index_entries(table)[0]
    entries, _ = parse_block(table[offset : offset + size])
    # Entry "abd" shares 2 bytes with "abc"; claim 5 (same varint width) and fix the crc,
    # so only the structural check can catch it.
    start, shared, key, _ = entries[2]
    assert (shared, key) == (2, b"abd")
    doctored = table[: offset + start] + b"\x05" + table[offset + start + 1 :]
    doctored = with_block_crc_fixed(doctored, offset, size)
    with pytest.raises(TableError, match="shares 5 bytes with a previous key of 3 bytes"):
        TableReader(doctored)


def test_reader_rejects_shared_prefix_at_a_restart_point():
    block = raw_block([(0, b"a", b""), (1, b"b", b"")], restarts=[0, 4])
    with pytest.raises(TableError, match="shares 1 bytes"):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_keys_not_strictly_increasing():
    table = small_table()
    (_, offset, size) = index_entries(table)[0]
    entries, _ = parse_block(table[offset : offset + size])
    start, _, key, _ = entries[2]
    assert key == b"abd"
    key_pos = offset + start + 3  # shared, non_shared and value_len are one byte each
    assert table[key_pos : key_pos + 1] == b"d"
    doctored = table[:key_pos] + b"b" + table[key_pos + 1 :]  # "abb" after "abc"
    doctored = with_block_crc_fixed(doctored, offset, size)
    with pytest.raises(TableError, match="keys out of order"):
        TableReader(doctored)


def test_reader_rejects_duplicate_keys():
    block = raw_block([(0, b"a", b"1"), (1, b"", b"2")])
    with pytest.raises(TableError, match="keys out of order"):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_keys_out_of_order_across_blocks():
    first = raw_block([(0, b"m", b"")])
    second = raw_block([(0, b"c", b"")])
    with pytest.raises(TableError, match="keys out of order"):
        TableReader(assemble([(first, b"n"), (second, b"z")]))


def test_reader_rejects_key_beyond_its_index_key():
    block = raw_block([(0, b"a", b""), (0, b"q", b"")])
    with pytest.raises(TableError, match="beyond its index key"):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_eleven_byte_varint():
    eleven = b"\x80" * 10 + b"\x00"
    block = eleven + b"\x01\x00a" + struct.pack("<II", 0, 1)
    with pytest.raises(TableError, match="longer than 10 bytes"):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_varint_running_into_the_restart_array():
    block = b"\x00\x01\x80" + struct.pack("<II", 0, 1)
    with pytest.raises(TableError, match="runs past the end"):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_entry_running_past_its_block():
    block = b"\x00\x01\x40a" + struct.pack("<II", 0, 1)  # value of 64 bytes, none there
    with pytest.raises(TableError, match="runs past the block"):
        TableReader(assemble([(block, b"b")]))


@pytest.mark.parametrize(
    ("block", "phrase"),
    [
        (b"\x01\x00", "too short"),
        (struct.pack("<I", 0), "0 restart points"),
        (struct.pack("<II", 0, 1000), "1000 restart points"),
        (b"\x00\x01\x00a" + struct.pack("<II", 99, 1), "restart point outside"),
        (b"\x00\x01\x00a" + struct.pack("<II", 4, 1), "restart point outside"),
    ],
    ids=["tiny", "no-restarts", "too-many-restarts", "restart-past-entries", "no-restart-at-0"],
)
def test_reader_rejects_bad_restart_arrays(block, phrase):
    with pytest.raises(TableError, match=phrase):
        TableReader(assemble([(block, b"b")]))


def test_reader_rejects_bad_block_handle_in_index():
    table = assemble([(raw_block([(0, b"a", b"")]), b"b")])
    _, (index_offset, index_size) = footer_handles(table)
    index = raw_block([(0, b"b", b"\x00\x80")], restarts="all")  # truncated handle varint
    assert len(index) == index_size
    doctored = table[:index_offset] + index + trailer(index) + table[-FOOTER_SIZE:]
    with pytest.raises(TableError, match="bad block handle"):
        TableReader(doctored)


def test_reader_reads_snappy_blocks():
    items = [(b"", b"header"), *((f"k{i:03d}".encode(), b"v" * i) for i in range(40))]
    table = build(items, compression="snappy")
    _, (index_offset, index_size) = footer_handles(table)
    assert table[index_offset + index_size] == 1  # the index block too is Snappy
    assert list(TableReader(table).items()) == items


def test_reader_rejects_snappy_labelled_block_that_is_not_snappy():
    block = raw_block([(0, b"a", b"")])  # its first byte 0 declares an empty block
    with pytest.raises(TableError, match=r"Snappy|decompress|too short"):
        TableReader(assemble([(block, b"b")], block_type=1))


def test_reader_rejects_unknown_compression_type():
    block = raw_block([(0, b"a", b"")])
    with pytest.raises(TableError, match="unknown compression type 7"):
        TableReader(assemble([(block, b"b")], block_type=7))


def test_table_error_is_a_value_error():
    assert issubclass(TableError, ValueError)
