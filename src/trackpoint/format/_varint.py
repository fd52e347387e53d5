"""Unsigned LEB128 varints, as protobuf and LevelDB write them.

Decoding is bounded: at most 10 bytes (a 64-bit value), and a varint that runs past the
end of its buffer is reported, never read beyond. Overlong forms (a last byte of 0 after a
continuation, as `91 00` for 17) are refused: no writer makes them, so one is damage, such
as a flipped bit in a table footer that would otherwise go unnoticed.
"""

from __future__ import annotations

_MAX_VARINT_BYTES = 10


class VarintError(ValueError):
    """A varint is truncated or longer than 10 bytes (callers turn it into a file error)."""


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer below 2**64.

    Example:
        >>> encode_varint(300).hex()
        'ac02'
    """
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode the varint at `buf[pos]`; return (value, position after it).

    Raises:
        VarintError: the varint runs past `end` (default: the buffer's end) or past 10 bytes,
            or is overlong.

    Example:
        >>> decode_varint(bytes.fromhex("ac02ff"), 0)
        (300, 2)
    """
    limit = len(buf) if end is None else end
    result = 0
    shift = 0
    for i in range(pos, min(limit, pos + _MAX_VARINT_BYTES)):
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise VarintError(f"varint at byte {pos} does not fit in 64 bits")
            if byte == 0 and i > pos:
                raise VarintError(f"varint at byte {pos} is overlong (ends in a zero byte)")
            return result, i + 1
        shift += 7
    if limit - pos >= _MAX_VARINT_BYTES:
        raise VarintError(f"varint at byte {pos} is longer than {_MAX_VARINT_BYTES} bytes")
    raise VarintError(f"varint at byte {pos} runs past the end of its block")
