"""CRC-32C (Castagnoli) and TensorFlow's masking of stored checksums.

The `crc32c` package computes in C with hardware instructions, releases the GIL and takes
any buffer (bytes, memoryview, a contiguous ndarray) without copying it; see
`benchmarks/crc32c_candidates.py` for why it was chosen over `google-crc32c`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import crc32c as _crc32c_impl

if TYPE_CHECKING:
    from typing_extensions import Buffer

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def crc32c(data: Buffer, value: int = 0) -> int:
    """Return the CRC-32C of `data`, continuing from the unmasked checksum `value`.

    Example:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
        >>> crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
        True
    """
    return int(_crc32c_impl.crc32c(data, value))


def mask(crc: int) -> int:
    """Mask a checksum the way LevelDB and TensorFlow store it (TF format doc §2).

    Example:
        >>> hex(mask(0))
        '0xa282ead8'
    """
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Undo `mask`.

    Example:
        >>> unmask(mask(0x12345678)) == 0x12345678
        True
    """
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32
