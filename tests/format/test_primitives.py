"""Varints, crc32c with TF's mask, and the OrderedCode slice keys (TF format doc §2, §3, §6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackpoint.format._crc32c import crc32c, mask, unmask
from trackpoint.format._slices import (
    _decode_signed,
    _decode_string,
    _encode_signed,
    _encode_string,
    decode_slice_key,
    encode_slice_key,
    normalize_extents,
)
from trackpoint.format._varint import VarintError, decode_varint, encode_varint

# -- varints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2**32 - 1, "ffffffff0f"),
        (2**63, "80808080808080808001"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
    ids=["0", "1", "127", "128", "300", "2^14-1", "2^14", "u32max", "2^63", "u64max"],
)
def test_varint_encodes_known_values_and_decodes_them_back(value, encoded):
    assert encode_varint(value).hex() == encoded
    raw = bytes.fromhex(encoded)
    assert decode_varint(raw, 0) == (value, len(raw))


def test_varint_decodes_at_an_offset_and_stops_at_its_last_byte():
    buf = b"\xaa" + encode_varint(300) + b"\x7f"
    assert decode_varint(buf, 1) == (300, 3)
    assert decode_varint(buf, 3) == (127, 4)


def test_varint_decodes_from_a_memoryview():
    assert decode_varint(memoryview(b"\xac\x02"), 0) == (300, 2)


@pytest.mark.parametrize("value", [-1, 2**64, 2**70], ids=["negative", "2^64", "2^70"])
def test_varint_refuses_to_encode_values_outside_64_bits(value):
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(value)


def test_varint_refuses_more_than_ten_bytes():
    eleven = b"\x80" * 10 + b"\x01"
    with pytest.raises(VarintError, match="longer than 10 bytes"):
        decode_varint(eleven, 0)


def test_varint_refuses_a_ten_byte_value_above_64_bits():
    # The tenth byte may carry only one bit (bit 63); 0x02 there is bit 64.
    too_big = b"\xff" * 9 + b"\x02"
    with pytest.raises(VarintError, match="does not fit in 64 bits"):
        decode_varint(too_big, 0)


@pytest.mark.parametrize(
    "raw", [b"", b"\x80", b"\xff\xff\xff"], ids=["empty", "one-continuation", "three"]
)
def test_varint_refuses_a_value_truncated_by_the_buffer(raw):
    with pytest.raises(VarintError, match="runs past the end"):
        decode_varint(raw, 0)


def test_varint_never_reads_past_the_given_end():
    # The byte after `end` would finish the varint; the decoder must not look at it.
    with pytest.raises(VarintError, match="runs past the end"):
        decode_varint(b"\x80\x01", 0, 1)


def test_varint_error_is_a_value_error():
    assert issubclass(VarintError, ValueError)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trips_every_64_bit_value(value):
    raw = encode_varint(value)
    assert 1 <= len(raw) <= 10
    assert decode_varint(raw + b"\xff", 0) == (value, len(raw))


# -- crc32c and mask --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (b"\x00" * 32, 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
    ],
    ids=["empty", "check-string", "zeros32", "ones32", "ascending32"],
)
def test_crc32c_matches_known_vectors(data, crc):
    # Vectors from RFC 3720 (iSCSI) B.4 and the standard CRC-32C check value.
    assert crc32c(data) == crc


def test_crc32c_continues_from_a_previous_value():
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def test_crc32c_accepts_memoryviews_and_bytearrays():
    assert crc32c(memoryview(b"123456789")) == 0xE3069283
    assert crc32c(bytearray(b"123456789")) == 0xE3069283


def test_mask_of_zero_is_tf_delta():
    assert mask(0) == 0xA282EAD8
    assert unmask(0xA282EAD8) == 0


def test_mask_matches_the_worked_example_of_the_format_doc():
    # §3.4: tensor "x" = float32 [1, 2] has stored crc32c 0x35e53c59.
    data = bytes.fromhex("0000803f00000040")
    assert mask(crc32c(data)) == 0x35E53C59


def test_mask_rotates_and_adds_the_delta():
    crc = 0x12345678
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert mask(crc) == (rotated + 0xA282EAD8) & 0xFFFFFFFF
    assert mask(crc) != crc


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_unmask_inverts_mask(crc):
    masked = mask(crc)
    assert 0 <= masked <= 0xFFFFFFFF
    assert unmask(masked) == crc


# -- OrderedCode signed numbers -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "80"),
        (2, "82"),
        (63, "bf"),
        (-1, "7f"),
        (-64, "40"),
        (64, "c040"),
        (0x424242, "f0424242"),
        (-0x800, "3800"),
        (2**62 - 1, "ffbf" + "ff" * 7),
        (2**62, "ffc040" + "00" * 7),
        (-(2**63), "00" + "3f" + "80" + "00" * 7),
        (2**63 - 1, "ffc0" + "7f" + "ff" * 7),
    ],
    ids=[
        *["0", "2", "63", "-1", "-64", "64", "0x424242", "-0x800"],
        *["2^62-1", "2^62", "-2^63", "2^63-1"],
    ],
)
def test_signed_number_encoding_matches_ordered_code(value, encoded):
    raw = bytes.fromhex(encoded)
    assert _encode_signed(value) == raw
    assert _decode_signed(raw, 0) == (value, len(raw))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_signed_numbers_round_trip(value):
    raw = _encode_signed(value)
    assert _decode_signed(raw + b"\x80", 0) == (value, len(raw))


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_signed_number_encoding_preserves_order(a, b):
    ea, eb = _encode_signed(a), _encode_signed(b)
    assert (ea < eb) == (a < b)


def test_signed_number_encoding_refuses_values_beyond_ten_bytes():
    with pytest.raises(ValueError, match="out of range"):
        _encode_signed(2**69)


# -- slice keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extents", "encoded"),
    [
        ("emb", ((0, 3), (0, 2)), "00 65 6d 62 00 01 01 02 80 83 80 82"),
        ("emb", ((3, 2), (0, 2)), "00 65 6d 62 00 01 01 02 83 82 80 82"),
        ("emb", ((0, 3), (0, None)), "00 65 6d 62 00 01 01 02 80 83 80 7f"),
        ("s", (), "00 73 00 01 00"),
        ("w", ((64, 1),), "00 77 00 01 01 01 c0 40 81"),
    ],
    ids=["emb-rows-0-3", "emb-rows-3-5", "whole-dim", "scalar", "two-byte-start"],
)
def test_slice_key_encoding_matches_tf(name, extents, encoded):
    raw = bytes.fromhex(encoded.replace(" ", ""))
    assert encode_slice_key(name, extents) == raw
    decoded = decode_slice_key(raw)
    assert decoded.name == name
    assert decoded.extents == extents


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("a\x00b", "61 00 ff 62"),
        ("\x00", "00 ff"),
        ("é", "c3 a9"),
    ],
    ids=["nul-inside", "only-nul", "non-ascii"],
)
def test_slice_key_escapes_special_name_bytes(name, escaped):
    raw = encode_slice_key(name, ((0, 1),))
    expected = "00" + escaped + "00 01" + "01 01" + "80 81"
    assert raw == bytes.fromhex(expected.replace(" ", ""))
    assert decode_slice_key(raw).name == name


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        (b"a\xffb", "61 ff 00 62 00 01"),
        (b"\xff\x00", "ff 00 00 ff 00 01"),
        (b"\x00\xff", "00 ff ff 00 00 01"),
        (b"", "00 01"),
    ],
    ids=["ff-inside", "ff-then-nul", "nul-then-ff", "empty"],
)
def test_ordered_code_strings_escape_ff_and_nul_bytes(name, escaped):
    # A str name never holds 0xff once UTF-8 encoded, but TF's OrderedCode escapes raw bytes.
    raw = bytes.fromhex(escaped.replace(" ", ""))
    assert _encode_string(name) == raw
    assert _decode_string(raw + b"\x80", 0) == (name, len(raw))


def test_slice_key_decoder_rejects_a_name_that_is_not_utf8():
    raw = bytes.fromhex("00 61 ff 00 62 00 01 01 01 80 81".replace(" ", ""))
    with pytest.raises(ValueError, match="not UTF-8"):
        decode_slice_key(raw)


def test_slice_keys_of_names_with_nul_and_ff_sort_like_tf():
    # OrderedCode keeps the bytewise order of names: "a" < "a\x00" < "a\x01".
    keys = [encode_slice_key(n, ((0, 1),)) for n in ("a", "a\x00", "a\x01", "b")]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"emb",
        b"\x00emb",
        b"\x00emb\x00\x01",
        b"\x00emb\x00\x01\x01",
        b"\x00emb\x00\x01\x01\x02\x80\x83\x80",
        b"\x00emb\x00\x01\x01\x01\x80\x83\x80",
        b"\x00emb\x00\x01\x09" + b"\x01" * 9,
        b"\x00em\x00\x02b\x00\x01\x00",
        b"\x00emb\x00\x01\x01\x01\xff\xff\xff\x80",
    ],
    ids=[
        "empty",
        "no-leading-nul",
        "unterminated-name",
        "no-rank",
        "rank-bytes-missing",
        "extent-missing",
        "trailing-bytes",
        "rank-too-long",
        "bad-escape",
        "number-too-long",
    ],
)
def test_slice_key_decoder_rejects_malformed_keys(raw):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        decode_slice_key(raw)


_extent = st.tuples(
    st.integers(min_value=0, max_value=2**62),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
)


@given(st.text(min_size=1, max_size=20), st.lists(_extent, max_size=8).map(tuple))
def test_slice_keys_round_trip(name, extents):
    raw = encode_slice_key(name, extents)
    assert raw.startswith(b"\x00")
    decoded = decode_slice_key(raw)
    assert decoded.name == name
    assert decoded.extents == extents


def test_normalize_extents_resolves_whole_dimensions():
    assert normalize_extents([(3, 2), (0, None)], [5, 4]) == ((3, 2), (0, 4))
    assert normalize_extents([(2, None)], [5]) == ((2, 3),)


@pytest.mark.parametrize(
    ("extents", "shape", "phrase"),
    [
        ([(0, 1)], [2, 2], "rank"),
        ([(3, 3)], [5], "outside"),
        ([(-1, 1)], [5], "outside"),
        ([(6, None)], [5], "outside"),
    ],
    ids=["rank-mismatch", "past-end", "negative-start", "start-past-end"],
)
def test_normalize_extents_rejects_slices_outside_the_shape(extents, shape, phrase):
    with pytest.raises(ValueError, match=phrase):
        normalize_extents(extents, shape)
