"""The LevelDB table format that TensorFlow uses for a bundle's `.index` file.

`TableBuilder` lays a table out byte for byte as TensorFlow's `table::TableBuilder` does
(TF format doc §3.3): uncompressed blocks (Snappy on request), restart interval 16 in data
blocks and 1 in the index block, a 256 KiB target block size, LevelDB's shortest
separators as index keys, an empty metaindex block and a 48-byte footer ending in the
magic number.

`TableReader` reads a whole table that is already in memory and checks it structurally
before handing out a single entry: magic, every block's masked crc32c, block handles inside
the file, a Snappy block's declared size before it is decompressed, restart arrays inside
their block, varints bounded, shared prefixes no longer than the previous key and keys
strictly increasing. Anything else is a `TableError` that
the bundle layer turns into a `CorruptCheckpointError` naming the file. `iter_table` makes
the same checks while streaming the entries, one block in memory at a time.

Knows bytes, not tensors or files.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, BinaryIO, Literal

import cramjam

from ._crc32c import crc32c, mask, unmask
from ._varint import VarintError, decode_varint, encode_varint

if TYPE_CHECKING:
    from collections.abc import Iterator

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
# TF's table options for bundles (tensor_bundle.cc leaves the table defaults; TF's table
# default block size is 256 KiB where LevelDB's is 4 KiB).
DEFAULT_BLOCK_SIZE = 262_144
DATA_RESTART_INTERVAL = 16
INDEX_RESTART_INTERVAL = 1
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1
# A Snappy element expands at most 64 bytes from 3 (a copy with a 2-byte offset), so a
# block declaring more than that per compressed byte is lying; TF writes 256 KiB blocks,
# so even an honest declaration beyond 1 GiB is not an index block.
_SNAPPY_MAX_EXPANSION = (64, 3)
_MAX_BLOCK_BYTES = 1 << 30
# Snappy's preamble is a uint32 varint: at most 5 bytes.
_SNAPPY_PREAMBLE_BYTES = 5

_U32 = struct.Struct("<I")


class TableError(ValueError):
    """A table's bytes are malformed; the message says where and how."""


class _BlockBuilder:
    """Builds one block: prefix-compressed entries, then the restart array."""

    __slots__ = ("_buf", "_counter", "_interval", "_last_key", "_restarts")

    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._counter < self._interval:
            limit = min(len(self._last_key), len(key))
            while shared < limit and self._last_key[shared] == key[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buf))
            self._counter = 0
        buf = self._buf
        buf += encode_varint(shared)
        buf += encode_varint(len(key) - shared)
        buf += encode_varint(len(value))
        buf += key[shared:]
        buf += value
        self._last_key = key
        self._counter += 1

    def size_estimate(self) -> int:
        return len(self._buf) + 4 * len(self._restarts) + 4

    def empty(self) -> bool:
        return not self._buf

    def finish(self) -> bytes:
        out = self._buf
        for restart in self._restarts:
            out += _U32.pack(restart)
        out += _U32.pack(len(self._restarts))
        return bytes(out)


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's bytewise `FindShortestSeparator`: a short key in [start, limit).

    Example:
        >>> shortest_separator(b"abcd", b"abzz")
        b'abd'
        >>> shortest_separator(b"abc", b"abd")
        b'abc'
    """
    n = min(len(start), len(limit))
    diff = 0
    while diff < n and start[diff] == limit[diff]:
        diff += 1
    if diff >= n:
        return start  # one is a prefix of the other
    byte = start[diff]
    if byte < 0xFF and byte + 1 < limit[diff]:
        return start[:diff] + bytes([byte + 1])
    return start


def short_successor(key: bytes) -> bytes:
    """LevelDB's bytewise `FindShortSuccessor`: a short key >= `key`.

    Example:
        >>> short_successor(b"w/.ATTRIBUTES")
        b'x'
    """
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class TableBuilder:
    """Writes a sorted table to a binary stream in TensorFlow's exact layout.

    Keys must be added in strictly increasing bytewise order.

    Args:
        out: Where the table goes.
        block_size: The size at which a data block is closed.
        compression: "snappy" compresses every block (TensorFlow reads such tables; TF
            format doc §3.3). LevelDB keeps a block uncompressed when Snappy saves less
            than 1/8 of it; here every block is compressed, so that tests can count on
            it. Bundles are written uncompressed, as TensorFlow writes them since 1.2.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> builder = TableBuilder(out)
        >>> builder.add(b"a", b"1")
        >>> builder.finish()
        >>> dict(TableReader(out.getvalue()).items())
        {b'a': b'1'}
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        compression: Literal["none", "snappy"] = "none",
    ) -> None:
        self._out = out
        self._offset = 0
        self._block_size = block_size
        self._snappy = compression == "snappy"
        self._data = _BlockBuilder(DATA_RESTART_INTERVAL)
        self._index = _BlockBuilder(INDEX_RESTART_INTERVAL)
        self._last_key: bytes | None = None
        self._pending_handle: bytes | None = None
        self._finished = False

    def add(self, key: bytes, value: bytes) -> None:
        """Append one entry; `key` must sort after the previous key."""
        if self._finished:
            raise ValueError("table already finished")
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"keys must be strictly increasing: {key!r} after {self._last_key!r}")
        if self._pending_handle is not None:
            # The previous block's index key is chosen only now, when its successor is known.
            assert self._last_key is not None  # noqa: S101 - set together with the handle
            self._index.add(shortest_separator(self._last_key, key), self._pending_handle)
            self._pending_handle = None
        self._data.add(key, value)
        self._last_key = key
        if self._data.size_estimate() >= self._block_size:
            self._flush()

    def _flush(self) -> None:
        if self._data.empty():
            return
        self._pending_handle = self._write_block(self._data.finish())
        self._data = _BlockBuilder(DATA_RESTART_INTERVAL)

    def _write_block(self, contents: bytes) -> bytes:
        trailer_type = bytes([NO_COMPRESSION])
        if self._snappy:
            contents = bytes(cramjam.snappy.compress_raw(contents))
            trailer_type = bytes([SNAPPY_COMPRESSION])
        crc = mask(crc32c(trailer_type, crc32c(contents)))
        self._out.write(contents)
        self._out.write(trailer_type + _U32.pack(crc))
        handle = encode_varint(self._offset) + encode_varint(len(contents))
        self._offset += len(contents) + BLOCK_TRAILER_SIZE
        return handle

    def finish(self) -> None:
        """Write the last data block, the metaindex and index blocks and the footer."""
        self._flush()
        self._finished = True
        metaindex_handle = self._write_block(_BlockBuilder(DATA_RESTART_INTERVAL).finish())
        if self._pending_handle is not None:
            assert self._last_key is not None  # noqa: S101 - set together with the handle
            self._index.add(short_successor(self._last_key), self._pending_handle)
            self._pending_handle = None
        index_handle = self._write_block(self._index.finish())
        footer = (metaindex_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0")
        self._out.write(footer + struct.pack("<Q", MAGIC))
        self._offset += FOOTER_SIZE

    @property
    def file_size(self) -> int:
        """Bytes written so far (the whole table once `finish` returned)."""
        return self._offset


def _decode_handle(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = decode_varint(buf, pos, end)
    size, pos = decode_varint(buf, pos, end)
    return offset, size, pos


def _snappy_decompress(contents: bytes, what: str) -> bytes:
    """Decompress a Snappy block after checking the size it declares (no bomb allocates)."""
    try:
        declared, start = decode_varint(contents, 0, min(len(contents), _SNAPPY_PREAMBLE_BYTES))
    except VarintError as err:
        raise TableError(f"{what} is Snappy-compressed with a bad length preamble: {err}") from err
    numerator, denominator = _SNAPPY_MAX_EXPANSION
    limit = min((len(contents) - start) * numerator // denominator, _MAX_BLOCK_BYTES)
    if declared > limit:
        raise TableError(
            f"{what} is Snappy-compressed and declares {declared} bytes uncompressed, more "
            f"than its {len(contents)} compressed bytes can hold (at most {limit})"
        )
    out = bytearray(declared)
    try:
        written = cramjam.snappy.decompress_raw_into(contents, out)
    except cramjam.DecompressionError as err:
        raise TableError(f"{what} does not decompress ({err})") from err
    if written != declared:
        raise TableError(f"{what} decompressed to {written} bytes but declares {declared} bytes")
    return bytes(out)


class TableReader:
    """Parses and checks a whole table held in memory.

    Args:
        data: The table's bytes (the whole `.index` file).
        verify_checksums: Check each block's masked crc32c (on by default).

    Raises:
        TableError: the bytes are not a well-formed table.
    """

    def __init__(self, data: bytes, *, verify_checksums: bool = True) -> None:
        self._entries = list(iter_table(data, verify_checksums=verify_checksums))

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) entries in key order."""
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def iter_table(data: bytes, *, verify_checksums: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """Yield a table's (key, value) entries in key order, checking each block as it comes.

    The same checks as `TableReader` makes, in the same order, but holding one block at a
    time instead of every entry at once: a bundle reader keeps what it needs of each entry
    and lets the rest go. A `TableError` can therefore come after entries were yielded;
    whoever acts on the entries must run the iteration to its end before trusting them.

    Args:
        data: The table's bytes (the whole `.index` file).
        verify_checksums: Check each block's masked crc32c (on by default).

    Raises:
        TableError: the bytes are not a well-formed table (raised from the iteration).

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> builder = TableBuilder(out)
        >>> builder.add(b"a", b"1")
        >>> builder.add(b"b", b"2")
        >>> builder.finish()
        >>> list(iter_table(out.getvalue()))
        [(b'a', b'1'), (b'b', b'2')]
    """
    if len(data) < FOOTER_SIZE:
        raise TableError(
            f"file is {len(data)} bytes, shorter than a table footer ({FOOTER_SIZE} bytes)"
        )
    footer = memoryview(data)[len(data) - FOOTER_SIZE :]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != MAGIC:
        raise TableError(f"bad magic number 0x{magic:016x} (expected 0x{MAGIC:016x})")
    try:
        _, _, pos = _decode_handle(footer, 0, FOOTER_SIZE - 8)  # metaindex: unused
        index_offset, index_size, _ = _decode_handle(footer, pos, FOOTER_SIZE - 8)
    except VarintError as err:
        raise TableError(f"bad footer: {err}") from err
    index = _read_block(data, index_offset, index_size, "index block", verify_checksums)
    previous_key: bytes | None = None
    for index_key, handle in _iter_block(index, "index block"):
        try:
            offset, size, end = _decode_handle(handle, 0, len(handle))
        except VarintError as err:
            raise TableError(f"bad block handle in the index block: {err}") from err
        if end != len(handle):
            raise TableError("bad block handle in the index block: trailing bytes")
        what = f"data block at byte {offset}"
        block = _read_block(data, offset, size, what, verify_checksums)
        for key, value in _iter_block(block, what):
            if previous_key is not None and key <= previous_key:
                raise TableError(f"keys out of order in {what}: {key!r} after {previous_key!r}")
            if key > index_key:
                raise TableError(f"key {key!r} in {what} is beyond its index key")
            yield key, value
            previous_key = key


def _read_block(data: bytes, offset: int, size: int, what: str, verify: bool) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise TableError(
            f"{what} (offset {offset}, size {size}) runs past the end of the file "
            f"({len(data)} bytes)"
        )
    contents = data[offset : offset + size]
    block_type = data[offset + size]
    if verify:
        (stored,) = _U32.unpack_from(data, offset + size + 1)
        actual = crc32c(bytes([block_type]), crc32c(contents))
        if unmask(stored) != actual:
            raise TableError(
                f"block checksum mismatch in {what} (stored 0x{unmask(stored):08x}, "
                f"computed 0x{actual:08x})"
            )
    if block_type == SNAPPY_COMPRESSION:
        return _snappy_decompress(contents, what)
    if block_type != NO_COMPRESSION:
        # TF's table format knows only types 0 and 1 (LevelDB later added zstd as 2,
        # RocksDB uses 7); TF itself refuses the rest as a bad block type.
        raise TableError(f"{what} has unknown compression type {block_type}")
    return contents


def _iter_block(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    size = len(block)
    if size < 4:
        raise TableError(f"{what} is {size} bytes, too short for its restart count")
    (num_restarts,) = _U32.unpack_from(block, size - 4)
    restarts_start = size - 4 - 4 * num_restarts
    if num_restarts == 0 or restarts_start < 0:
        raise TableError(f"{what} declares {num_restarts} restart points; it cannot hold them")
    restarts = {_U32.unpack_from(block, restarts_start + 4 * i)[0] for i in range(num_restarts)}
    if max(restarts) > restarts_start or 0 not in restarts:
        raise TableError(f"{what} has a restart point outside its entries")
    pos = 0
    key = b""
    try:
        while pos < restarts_start:
            entry_start = pos
            # Each of the three lengths is almost always one byte: read those inline and
            # leave the rest (and every error) to decode_varint, which is 4x slower.
            shared = block[pos]
            if shared < 0x80:
                pos += 1
            else:
                shared, pos = decode_varint(block, pos, restarts_start)
            if pos < restarts_start and block[pos] < 0x80:
                non_shared = block[pos]
                pos += 1
            else:
                non_shared, pos = decode_varint(block, pos, restarts_start)
            if pos < restarts_start and block[pos] < 0x80:
                value_len = block[pos]
                pos += 1
            else:
                value_len, pos = decode_varint(block, pos, restarts_start)
            if shared > len(key) or (shared and entry_start in restarts):
                raise TableError(
                    f"bad entry at byte {entry_start} of {what}: shares {shared} bytes "
                    f"with a previous key of {len(key)} bytes"
                )
            value_start = pos + non_shared
            value_end = value_start + value_len
            if value_end > restarts_start:
                raise TableError(f"entry at byte {entry_start} of {what} runs past the block")
            key = key[:shared] + block[pos:value_start]
            yield key, block[value_start:value_end]
            pos = value_end
    except VarintError as err:
        raise TableError(f"bad entry in {what}: {err}") from err
