"""trackpoint reads the project's own golden checkpoints as TensorFlow read them.

The files under tests/fixtures/tf-2.21/ were written by TensorFlow with
tests/fixtures/generate.py, which also recorded TF's reading in each `expected.json`.
These tests need no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import OWN_FIXTURES, load_expected
from tests.interop._expected import mismatches
from trackpoint.format import TableReader, read_checkpoint_state
from trackpoint.format.protos import tensor_bundle_pb2
from trackpoint.reader import list_variables, load_checkpoint

GOLDEN = OWN_FIXTURES / "tf-2.21"
#: Every golden checkpoint (prefix relative to GOLDEN).
CHECKPOINTS = ["savev2_every_dtype/bundle", "savev2_slices/bundle", "tf2_three_shards/ckpt"]
QUANTIZED: dict[str, type[np.integer[Any]]] = {
    "qint8": np.int8,
    "quint8": np.uint8,
    "qint16": np.int16,
    "quint16": np.uint16,
    "qint32": np.int32,
}


def _manifest() -> dict[str, Any]:
    with open(GOLDEN / "MANIFEST.json", encoding="utf-8") as f:
        result: dict[str, Any] = json.load(f)
    return result


def _expected(prefix: str) -> dict[str, Any]:
    (checkpoint,) = load_expected(GOLDEN / prefix.split("/")[0])["checkpoints"]
    assert checkpoint["prefix"] == prefix
    result: dict[str, Any] = checkpoint
    return result


def test_golden_files_were_written_by_tensorflow_2_21_and_not_edited():
    manifest = _manifest()
    on_disk = sorted(
        p.relative_to(GOLDEN).as_posix()
        for p in GOLDEN.rglob("*")
        if p.is_file() and p.name != "MANIFEST.json"
    )

    assert manifest["tensorflow"].startswith("2.21.")
    assert manifest["generator"] == "tests/fixtures/generate.py"
    assert sorted(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, name
    assert sorted({name.split("/")[0] for name in on_disk}) == sorted(
        {p.split("/")[0] for p in CHECKPOINTS}
    )


@pytest.mark.parametrize("prefix", CHECKPOINTS, ids=CHECKPOINTS)
def test_golden_checkpoint_reads_as_tensorflow_read_it(prefix):
    expected = _expected(prefix)

    with load_checkpoint(GOLDEN / prefix) as reader:
        assert mismatches(reader, expected) == []


def test_quantized_dtypes_keep_their_names_and_read_as_integers():
    with load_checkpoint(GOLDEN / "savev2_every_dtype/bundle") as reader:
        dtypes = reader.get_variable_to_dtype_map()
        for name, integer in QUANTIZED.items():
            value = reader.get_tensor(name)
            assert dtypes[name] == name
            assert str(dtypes[name]) == name
            assert value.dtype == integer
            info = np.iinfo(integer)
            assert value.min() == info.min
            assert value.max() == info.max


def test_every_tf_dtype_number_but_resource_and_variant_is_in_the_golden_bundle():
    with load_checkpoint(GOLDEN / "savev2_every_dtype/bundle") as reader:
        enums = {dtype.enum for dtype in reader.get_variable_to_dtype_map().values()}

    assert enums == set(range(1, 34)) - {20, 21}


def test_savev2_slice_specs_are_reassembled_and_hidden():
    with load_checkpoint(GOLDEN / "savev2_slices/bundle") as reader:
        assert reader.bundle.info("grid").sliced
        np.testing.assert_array_equal(
            reader.get_tensor("grid"), np.arange(24, dtype=np.int32).reshape(4, 6)
        )

    assert [key for key, _ in list_variables(GOLDEN / "savev2_slices/bundle")] == [
        "emb",
        "grid",
        "half",
        "plain",
    ]


def test_three_shard_tf2_save_spreads_its_tensors_over_three_data_files():
    prefix = GOLDEN / "tf2_three_shards/ckpt"
    table = TableReader((GOLDEN / "tf2_three_shards/ckpt.index").read_bytes())
    used = set()
    for key, value in table.items():
        if key:
            entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            if entry.size:
                used.add(entry.shard_id)

    with load_checkpoint(prefix) as reader:
        assert reader.bundle.num_shards == 3
        assert reader.is_object_based
    assert used == {0, 1, 2}
    assert read_checkpoint_state(GOLDEN / "tf2_three_shards") is None
