"""Keys and extents of sliced (partitioned) tensors (TF format doc §6).

A sliced tensor is stored as one full entry (dtype, full shape, the list of stored slices)
plus one ordinary entry per slice under a hidden binary key made with TF's OrderedCode:
`00`, the escaped name, `01 <rank>`, then (start, length) per dimension as signed
order-preserving numbers, length -1 meaning the whole dimension. A reader checks that the
stored slices tile the full shape (`find_tiling_problem`) before it reads any of them.

Knows bytes, not files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._varint import VarintError

if TYPE_CHECKING:
    from collections.abc import Sequence

#: (start, length) per dimension; length None = the whole dimension.
Extents = tuple[tuple[int, int | None], ...]

#: Up to this many slices, overlaps are found box against box (k x k booleans); beyond,
#: with a mask of the tensor's elements.
_PAIRWISE_SLICES = 1024


@dataclass(frozen=True, slots=True)
class SliceKey:
    """A decoded hidden slice key."""

    name: str
    extents: Extents


def _encode_unsigned(value: int) -> bytes:
    """OrderedCode `WriteNumIncreasing`: a length byte, then the value big-endian."""
    if value < 0:
        raise ValueError(f"unsigned value expected, got {value}")
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _encode_signed(value: int) -> bytes:
    """OrderedCode `WriteSignedNumIncreasing` (TF format doc §6)."""
    for length in range(1, 11):
        bound = 1 << (7 * length - 1)
        if -bound <= value < bound:
            break
    else:
        raise ValueError(f"value out of range for a slice extent: {value}")
    raw = bytearray((value % (1 << (8 * length))).to_bytes(length, "big"))
    # The top `length` bits of the encoding are flipped, which makes them 1s for
    # non-negative values and 0s for negative ones: the length is read from them.
    for bit in range(length):
        raw[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(raw)


def _encode_string(value: bytes) -> bytes:
    # Escape each byte once: a chained replace would re-escape the 00 of an escaped ff.
    escaped = b"\xff\x00".join(part.replace(b"\x00", b"\x00\xff") for part in value.split(b"\xff"))
    return escaped + b"\x00\x01"


def encode_slice_key(name: str, extents: Extents) -> bytes:
    """The hidden bundle key of one slice of tensor `name`.

    Example:
        >>> encode_slice_key("emb", ((0, 3), (0, None))).hex(" ")
        '00 65 6d 62 00 01 01 02 80 83 80 7f'
    """
    parts = [b"\x00", _encode_string(name.encode("utf-8")), _encode_unsigned(len(extents))]
    for start, length in extents:
        parts.append(_encode_signed(start))
        parts.append(_encode_signed(-1 if length is None else length))
    return b"".join(parts)


def _decode_signed(key: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(key):
        raise VarintError("slice key ends inside a number")
    first = key[pos]
    negative = first < 0x80
    # Count the leading bits equal to the sign bit (over at most the first two bytes).
    bits = (first << 8) | (key[pos + 1] if pos + 1 < len(key) else 0)
    if negative:
        bits ^= 0xFFFF
    length = 0
    while length < 16 and bits & (0x8000 >> length):
        length += 1
    if not 1 <= length <= 10 or pos + length > len(key):
        raise VarintError(f"bad signed number at byte {pos} of a slice key")
    raw = bytearray(key[pos : pos + length])
    for bit in range(length):
        raw[bit // 8] ^= 0x80 >> (bit % 8)
    return int.from_bytes(raw, "big", signed=True), pos + length


def _decode_string(key: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    while pos + 1 < len(key):
        byte, following = key[pos], key[pos + 1]
        if byte == 0x00 and following == 0x01:
            return bytes(out), pos + 2
        if byte == 0x00 and following == 0xFF:
            out.append(0x00)
            pos += 2
        elif byte == 0xFF and following == 0x00:
            out.append(0xFF)
            pos += 2
        elif byte in (0x00, 0xFF):
            break
        else:
            out.append(byte)
            pos += 1
    raise ValueError("slice key has a malformed name")


def decode_slice_key(key: bytes) -> SliceKey:
    """Parse a hidden slice key (the inverse of `encode_slice_key`).

    Raises:
        ValueError: the key is not a well-formed slice key.

    Example:
        >>> decode_slice_key(encode_slice_key("emb", ((3, 2), (0, None))))
        SliceKey(name='emb', extents=((3, 2), (0, None)))
    """
    if not key.startswith(b"\x00"):
        raise ValueError("a slice key starts with a 00 byte")
    name_raw, pos = _decode_string(key, 1)
    if pos >= len(key):
        raise ValueError("slice key has no rank")
    n = key[pos]
    if n > 8 or pos + 1 + n > len(key):
        raise ValueError("slice key has a malformed rank")
    rank = int.from_bytes(key[pos + 1 : pos + 1 + n], "big")
    pos += 1 + n
    extents: list[tuple[int, int | None]] = []
    try:
        for _ in range(rank):
            start, pos = _decode_signed(key, pos)
            length, pos = _decode_signed(key, pos)
            extents.append((start, None if length == -1 else length))
    except VarintError as err:
        raise ValueError(str(err)) from err
    if pos != len(key):
        raise ValueError("slice key has trailing bytes")
    try:
        name = name_raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError("slice key name is not UTF-8") from err
    return SliceKey(name, tuple(extents))


def normalize_extents(extents: Sequence[tuple[int, int | None]], shape: Sequence[int]) -> Extents:
    """Resolve `None` lengths against `shape` and check every extent lies inside it.

    Raises:
        ValueError: rank mismatch, negative start/length or an extent past the dimension.
    """
    if len(extents) != len(shape):
        raise ValueError(f"slice has rank {len(extents)} but the tensor has rank {len(shape)}")
    out: list[tuple[int, int | None]] = []
    for (start, length), dim in zip(extents, shape, strict=True):
        full = dim - start if length is None else length
        if start < 0 or full < 0 or start + full > dim:
            raise ValueError(f"slice extent [{start}, +{length}) lies outside a dimension of {dim}")
        out.append((start, full))
    return tuple(out)


def find_tiling_problem(shape: tuple[int, ...], extents: list[Extents]) -> tuple[int | None, bool]:
    """How resolved slices (inside `shape`, no None lengths) tile it.

    Returns:
        (the position in `extents` of the first slice that overlaps an earlier one, or
        None; whether the slices cover every element). Slices tile the shape when the
        first is None and the second True.

    Example:
        >>> find_tiling_problem((6, 2), [((0, 3), (0, 2)), ((3, 3), (0, 2))])
        (None, True)
        >>> find_tiling_problem((6, 2), [((0, 4), (0, 2)), ((3, 3), (0, 2))])  # rows 3 twice
        (1, False)
        >>> find_tiling_problem((6, 2), [((0, 2), (0, 2)), ((3, 3), (0, 2))])  # row 2 missing
        (None, False)
    """
    numel = math.prod(shape)
    boxes = np.array(extents, dtype=np.int64).reshape(len(extents), len(shape), 2)
    starts, ends = boxes[:, :, 0], boxes[:, :, 0] + boxes[:, :, 1]
    overlapping: int | None = None
    if len(extents) <= _PAIRWISE_SLICES:
        # Boxes i and j overlap when they intersect in every dimension (empty boxes
        # never do); a k x k test beats a mask of the whole tensor's elements.
        meets = np.all(
            (starts[:, None, :] < ends[None, :, :]) & (starts[None, :, :] < ends[:, None, :]),
            axis=2,
        )
        later = np.tril(meets, k=-1).any(axis=1)  # j overlaps some earlier i
        if later.any():
            overlapping = int(np.argmax(later))
        covered = int(np.prod(boxes[:, :, 1], axis=1).sum())
        complete = covered == numel  # disjoint boxes inside the shape
    else:
        mask = np.zeros(shape, dtype=bool)
        for at, box in enumerate(extents):
            index = tuple(slice(start, start + (length or 0)) for start, length in box)
            if mask[index].any():
                overlapping = at
                break
            mask[index] = True
        complete = bool(mask.all())
    return overlapping, complete


def format_extents(extents: Extents) -> str:
    """Extents as a Python slice, for messages.

    Example:
        >>> format_extents(((0, 4), (0, None)))
        '[0:4, :]'
    """
    parts = []
    for start, length in extents:
        parts.append(":" if length is None else f"{start}:{start + length}")
    return "[" + ", ".join(parts) + "]"
