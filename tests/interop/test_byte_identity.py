"""trackpoint's BundleWriter writes the very bytes `tf.raw_ops.SaveV2` writes.

For the same named tensors in the same order (one shard), `.index` and
`.data-00000-of-00001` must be byte-identical: every dtype, strings up to 70 KB, non-ASCII
keys, scalars, zero-size tensors, a 6 000-key index spanning several data blocks, and keys
sharing long prefixes. The format doc's worked example (§3.4) is checked without TF.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.interop._values import (
    DTYPE_SAMPLES,
    QUANTIZED_SAMPLES,
    SHAPE_SAMPLES,
    Sample,
    strings,
)
from trackpoint.format import BundleWriter

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

# The format doc §3.4, byte for byte: SaveV2(["x", "s"], [float32 [1, 2], string ["hi", ""]]).
WORKED_EXAMPLE_DATA = bytes.fromhex(
    "0000803f 00000040"  # x = 1.0f, 2.0f
    "02 00"  # string lengths
    "78270b34"  # mask(crc32c of u32 2, u32 0)
    "6869"  # "hi"
)
WORKED_EXAMPLE_INDEX = bytes.fromhex(
    "00 00 06 08011a020801"  # entry "": header num_shards 1, version {producer 1}
    "00 01 11 73 0807 12041202 0802 2008 2808 35 9e9e48ed"  # entry "s"
    "00 01 0f 78 0801 12041202 0802 2808 35 593ce535"  # entry "x" (offset 0 omitted)
    "00000000 01000000"  # restarts [0], count 1: the data block is 57 bytes
    "00 dd33d4b5"  # trailer: uncompressed, masked crc
    "00000000 01000000 00 c0f2a1b0"  # metaindex block (empty) + trailer
    "00 01 02 79 00 39 00000000 01000000 00 704c70b5"  # index: "y" -> (0, 57) + trailer
    "3e 08 4b 0e" + "00" * 36 + "57fb808b247547db"  # footer: (62, 8), (75, 14), pad, magic
)


def test_worked_example_of_the_format_doc_is_written_exactly(tmp_path):
    assert len(WORKED_EXAMPLE_INDEX) == 142
    prefix = tmp_path / "t"

    with BundleWriter(prefix) as writer:
        writer.add("x", np.array([1.0, 2.0], np.float32))
        writer.add("s", strings("hi", ""))

    assert (tmp_path / "t.data-00000-of-00001").read_bytes() == WORKED_EXAMPLE_DATA
    assert (tmp_path / "t.index").read_bytes() == WORKED_EXAMPLE_INDEX


def _write_both(tf: ModuleType, folder: Path, samples: list[Sample]) -> list[tuple[bytes, ...]]:
    """Write `samples` with SaveV2 and with BundleWriter; return both (index, data) bytes."""
    theirs, ours = folder / "tf" / "bundle", folder / "ours" / "bundle"
    tf.raw_ops.SaveV2(
        prefix=str(theirs),
        tensor_names=[s.key for s in samples],
        shape_and_slices=[""] * len(samples),
        tensors=[tf.constant(s.value, dtype=s.dtype) for s in samples],
    )
    with BundleWriter(ours) as writer:
        for s in samples:
            writer.add(s.key, s.value, dtype=s.dtype)
    return [
        tuple(
            (prefix.parent / (prefix.name + suffix)).read_bytes()
            for suffix in (".index", ".data-00000-of-00001")
        )
        for prefix in (theirs, ours)
    ]


def _assert_identical(tf: ModuleType, folder: Path, samples: list[Sample]) -> bytes:
    (tf_index, tf_data), (our_index, our_data) = _write_both(tf, folder, samples)
    assert our_data == tf_data
    assert our_index == tf_index
    return our_index


def _data_block_count(index: bytes) -> int:
    """How many data blocks an index has: its index block has one entry (restart) per block."""
    footer = index[-48:]
    pos, values = 0, list[int]()
    while len(values) < 4:  # metaindex offset, size, index offset, size (varints)
        value = shift = 0
        while True:
            byte = footer[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(value)
    index_offset, index_size = values[2], values[3]
    block = index[index_offset : index_offset + index_size]
    (num_restarts,) = struct.unpack("<I", block[-4:])
    return int(num_restarts)


ALL_SAMPLES = DTYPE_SAMPLES + QUANTIZED_SAMPLES + SHAPE_SAMPLES


@pytest.mark.tf
def test_bundle_of_every_dtype_and_shape_is_identical_to_savev2(tf, tmp_path):
    _assert_identical(tf, tmp_path, ALL_SAMPLES)


@pytest.mark.tf
@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=[s.key for s in ALL_SAMPLES])
def test_single_tensor_bundle_is_identical_to_savev2(tf, tmp_path, sample):
    _assert_identical(tf, tmp_path, [sample])


@pytest.mark.tf
def test_long_strings_and_non_ascii_keys_are_identical_to_savev2(tf, tmp_path):
    samples = [
        Sample("変数/重み", strings(b"a" * 70_000, "é" * 35_000, b"")),
        Sample("clé", strings("x" * 70_000, shape=())),
        Sample("ñ/ü/ß", np.arange(5, dtype=np.int32)),
        Sample("Zebra", strings(bytes(range(256)) * 300, b"\x00" * 129, "日本語" * 20)),
        Sample("_under", np.float64(2.5) * np.ones((2, 3))),
        Sample("apple", strings(*(("y" * n) for n in (0, 1, 127, 128, 16_383, 16_384)))),
    ]
    _assert_identical(tf, tmp_path, samples)


@pytest.mark.tf
def test_six_thousand_key_index_spanning_data_blocks_is_identical_to_savev2(tf, tmp_path):
    keys = [
        f"model/encoder/layer_{i // 100:03d}/self_attn/block_{i % 100:02d}"
        "/kernel/.ATTRIBUTES/VARIABLE"
        for i in range(6000)
    ]
    assert {len(k) for k in keys} == {70}
    # Passed in a shuffled order: data follows the argument order, the index is sorted.
    order = np.random.default_rng(0).permutation(len(keys))
    samples = [Sample(keys[i], np.array(i, np.float32)) for i in order]

    index = _assert_identical(tf, tmp_path, samples)

    assert len(index) > 262_144
    assert _data_block_count(index) >= 2


@pytest.mark.tf
def test_keys_sharing_long_prefixes_are_identical_to_savev2(tf, tmp_path):
    stem = "shared/" * 40
    names = [
        stem,
        stem + "a",
        stem + "a/b",
        stem + "ab",
        stem + "b" * 200,
        stem + "b" * 200 + "c",
        "p" * 500,
        "p" * 499 + "q",
        "p" * 499,
        "a",
        "ab",
        "abc",
    ]
    samples = [Sample(name, np.full(i + 1, i, np.int16)) for i, name in enumerate(names)]
    _assert_identical(tf, tmp_path, samples)


@pytest.mark.tf
def test_many_keys_with_long_prefixes_across_blocks_are_identical_to_savev2(tf, tmp_path):
    # Long shared prefixes in blocks of 16-entry restarts, and block boundaries whose
    # separators (format doc §3.3) cannot be shortened.
    stem = "deep/" * 120
    samples = [Sample(f"{stem}{i:05d}", np.array([i % 100], np.int8)) for i in range(5000)]

    index = _assert_identical(tf, tmp_path, samples)

    assert _data_block_count(index) >= 2
