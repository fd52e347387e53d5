"""trackpoint reads the project's own golden checkpoints as TensorFlow read them.

The files under tests/fixtures/tf-2.21/ were written by TensorFlow with
tests/fixtures/generate.py, which also recorded TF's reading in each `expected.json` and
the sha256 of every file there in MANIFEST.json. This module reads the golden bundles;
test_read_tf_fixtures.py the reference set beside them. These tests need no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import load_expected
from tests.interop._expected import mismatches
from trackpoint.format import TableReader, read_checkpoint_state
from trackpoint.format.protos import tensor_bundle_pb2
from trackpoint.reader import list_variables, load_checkpoint

#: Every golden checkpoint (prefix relative to tests/fixtures/tf-2.21).
CHECKPOINTS = ["savev2_every_dtype/bundle", "savev2_slices/bundle", "tf2_three_shards/ckpt"]
QUANTIZED: dict[str, type[np.integer[Any]]] = {
    "qint8": np.int8,
    "quint8": np.uint8,
    "qint16": np.int16,
    "quint16": np.uint16,
    "qint32": np.int32,
}


def _manifest(golden: Path) -> dict[str, Any]:
    with open(golden / "MANIFEST.json", encoding="utf-8") as f:
        result: dict[str, Any] = json.load(f)
    return result


def _expected(golden: Path, prefix: str) -> dict[str, Any]:
    (checkpoint,) = load_expected(golden / prefix.split("/")[0])["checkpoints"]
    assert checkpoint["prefix"] == prefix
    result: dict[str, Any] = checkpoint
    return result


def test_fixture_files_were_written_by_tensorflow_2_21_and_not_edited(tf_fixtures):
    # The manifest covers both sets; which folder is read by which module is checked by
    # test_read_tf_fixtures.py::test_every_fixture_checkpoint_is_covered.
    manifest = _manifest(tf_fixtures)
    on_disk = sorted(
        p.relative_to(tf_fixtures).as_posix()
        for p in tf_fixtures.rglob("*")
        if p.is_file() and p.name != "MANIFEST.json"
    )

    assert manifest["tensorflow"].startswith("2.21.")
    assert manifest["generator"] == "tests/fixtures/generate.py"
    assert sorted(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tf_fixtures / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("prefix", CHECKPOINTS, ids=CHECKPOINTS)
def test_golden_checkpoint_reads_as_tensorflow_read_it(tf_fixtures, prefix):
    expected = _expected(tf_fixtures, prefix)

    with load_checkpoint(tf_fixtures / prefix) as reader:
        assert mismatches(reader, expected) == []


def test_quantized_dtypes_keep_their_names_and_read_as_integers(tf_fixtures):
    with load_checkpoint(tf_fixtures / "savev2_every_dtype/bundle") as reader:
        dtypes = reader.get_variable_to_dtype_map()
        for name, integer in QUANTIZED.items():
            value = reader.get_tensor(name)
            assert dtypes[name] == name
            assert str(dtypes[name]) == name
            assert value.dtype == integer
            info = np.iinfo(integer)
            assert value.min() == info.min
            assert value.max() == info.max


def test_every_tf_dtype_number_but_resource_and_variant_is_in_the_golden_bundle(tf_fixtures):
    with load_checkpoint(tf_fixtures / "savev2_every_dtype/bundle") as reader:
        enums = {dtype.enum for dtype in reader.get_variable_to_dtype_map().values()}

    assert enums == set(range(1, 34)) - {20, 21}


def test_savev2_slice_specs_are_reassembled_and_hidden(tf_fixtures):
    with load_checkpoint(tf_fixtures / "savev2_slices/bundle") as reader:
        assert reader.bundle.info("grid").sliced
        np.testing.assert_array_equal(
            reader.get_tensor("grid"), np.arange(24, dtype=np.int32).reshape(4, 6)
        )

    assert [key for key, _ in list_variables(tf_fixtures / "savev2_slices/bundle")] == [
        "emb",
        "grid",
        "half",
        "plain",
    ]


def test_three_shard_tf2_save_spreads_its_tensors_over_three_data_files(tf_fixtures):
    prefix = tf_fixtures / "tf2_three_shards/ckpt"
    table = TableReader((tf_fixtures / "tf2_three_shards/ckpt.index").read_bytes())
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
    assert read_checkpoint_state(tf_fixtures / "tf2_three_shards") is None
