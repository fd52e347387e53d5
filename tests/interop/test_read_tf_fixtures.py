"""trackpoint reads every reference checkpoint TensorFlow 2.21 wrote as TF's own reader did.

`tests/fixtures/tf-2.21/*/expected.json` holds TF's reading of each file (keys, dtypes,
shapes, all values, the decoded object graph, the sha256 of every file); the folders are
described in tests/fixtures/README.md. These tests need no TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_expected
from tests.interop._expected import mismatches
from tests.interop.test_read_own_golden import CHECKPOINTS as GOLDEN_CHECKPOINTS
from trackpoint.format import TableReader, index_file_name, read_checkpoint_state
from trackpoint.reader import latest_checkpoint, list_variables, load_checkpoint

#: Every checkpoint of every fixture folder (prefix relative to the fixtures folder).
CHECKPOINTS = [
    "keras_adam/ckpt-1",
    "manager/ckpt-2",
    "manager/ckpt-3",
    "max_shard_size/ckpt",
    "module_dtypes/ckpt",
    "module_slots/ckpt-1",
    "savedmodel/variables/variables",
    "savev2_dtypes/bundle",
    "sharded_variable/ckpt",
    "tf1_saver/model.ckpt-3",
    "tf1_saver_sharded/model.ckpt-3",
]
#: Folders that resolve to one checkpoint: a `checkpoint` state file, or a SavedModel.
FOLDERS = {
    "keras_adam": "keras_adam/ckpt-1",
    "manager": "manager/ckpt-3",
    "module_slots": "module_slots/ckpt-1",
    "savedmodel": "savedmodel/variables/variables",
    "tf1_saver": "tf1_saver/model.ckpt-3",
    "tf1_saver_sharded": "tf1_saver_sharded/model.ckpt-3",
}
#: Checkpoints holding partitioned tensors, whose slices have hidden keys.
SLICED = [
    "max_shard_size/ckpt",
    "sharded_variable/ckpt",
    "tf1_saver/model.ckpt-3",
    "tf1_saver_sharded/model.ckpt-3",
]
TF1_FOLDERS = ["tf1_saver", "tf1_saver_sharded"]


def _expected_checkpoint(tf_fixtures: Path, prefix: str) -> dict[str, Any]:
    folder = prefix.split("/")[0]
    for checkpoint in load_expected(tf_fixtures / folder)["checkpoints"]:
        if checkpoint["prefix"] == prefix:
            result: dict[str, Any] = checkpoint
            return result
    raise AssertionError(f"{folder}/expected.json does not describe {prefix}")


def test_every_fixture_checkpoint_is_covered(tf_fixtures):
    # Each folder belongs to this module or to test_read_own_golden.py, never to neither.
    covered = sorted(CHECKPOINTS + GOLDEN_CHECKPOINTS)
    folders = sorted(p.name for p in tf_fixtures.iterdir() if p.is_dir())
    described = sorted(
        checkpoint["prefix"]
        for folder in folders
        for checkpoint in load_expected(tf_fixtures / folder)["checkpoints"]
    )
    on_disk = sorted(
        p.relative_to(tf_fixtures).as_posix().removesuffix(".index")
        for p in tf_fixtures.rglob("*.index")
    )
    assert described == covered
    assert on_disk == covered
    assert folders == sorted({p.split("/")[0] for p in covered})
    assert not set(CHECKPOINTS) & set(GOLDEN_CHECKPOINTS)


@pytest.mark.parametrize("prefix", CHECKPOINTS, ids=CHECKPOINTS)
def test_prefix_reads_as_tensorflow_read_it(tf_fixtures, prefix):
    expected = _expected_checkpoint(tf_fixtures, prefix)
    with load_checkpoint(tf_fixtures / prefix) as reader:
        assert mismatches(reader, expected) == []


@pytest.mark.parametrize("folder", sorted(FOLDERS), ids=sorted(FOLDERS))
def test_folder_reads_its_latest_checkpoint_as_tensorflow_read_it(tf_fixtures, folder):
    prefix = FOLDERS[folder]
    expected = _expected_checkpoint(tf_fixtures, prefix)
    with load_checkpoint(tf_fixtures / folder) as reader:
        assert reader.prefix == str(tf_fixtures / prefix)
        assert mismatches(reader, expected) == []


@pytest.mark.parametrize("prefix", SLICED, ids=SLICED)
def test_list_variables_hides_slice_keys(tf_fixtures, prefix):
    raw_keys = [
        key for key, _ in TableReader((tf_fixtures / index_file_name(prefix)).read_bytes()).items()
    ]
    assert any(key.startswith(b"\x00") for key in raw_keys), "the fixture has no slice keys"
    expected = _expected_checkpoint(tf_fixtures, prefix)["tensors"]

    listed = list_variables(tf_fixtures / prefix)

    assert listed == sorted((key, entry["shape"]) for key, entry in expected.items())
    assert not any(key.startswith("\x00") for key, _ in listed)


@pytest.mark.parametrize("folder", TF1_FOLDERS, ids=TF1_FOLDERS)
def test_latest_checkpoint_finds_moved_tf1_checkpoint_beside_state_file(tf_fixtures, folder):
    stale = f"/old-machine/runs/{folder}/model.ckpt-3"
    assert not os.path.exists(stale + ".index")
    state = read_checkpoint_state(tf_fixtures / folder)
    assert state is not None
    assert state.raw_model_checkpoint_path == stale

    latest = latest_checkpoint(tf_fixtures / folder)

    assert latest == str(tf_fixtures / folder / "model.ckpt-3")
    assert state.all_model_checkpoint_paths == (latest,)


def _state_file_fields(path: Path) -> dict[str, list[str]]:
    """The state file's fields, parsed with a regex independent of trackpoint's parser."""
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r"^(\w+): (.+)$", path.read_text("utf-8"), re.MULTILINE):
        fields.setdefault(name, []).append(value)
    return fields


def test_manager_state_file_paths_and_timestamps_read(tf_fixtures):
    folder = tf_fixtures / "manager"
    fields = _state_file_fields(folder / "checkpoint")
    timestamps = tuple(float(t) for t in fields["all_model_checkpoint_timestamps"])
    assert len(timestamps) == 2

    state = read_checkpoint_state(folder)

    assert state is not None
    assert state.raw_model_checkpoint_path == "ckpt-3"
    assert state.model_checkpoint_path == str(folder / "ckpt-3")
    assert state.all_model_checkpoint_paths == (str(folder / "ckpt-2"), str(folder / "ckpt-3"))
    assert state.all_model_checkpoint_timestamps == timestamps
    assert state.last_preserved_timestamp == float(fields["last_preserved_timestamp"][0])
    assert latest_checkpoint(folder) == str(folder / "ckpt-3")


def test_checkpoint_save_state_file_has_no_timestamps(tf_fixtures):
    state = read_checkpoint_state(tf_fixtures / "keras_adam")

    assert state is not None
    assert state.all_model_checkpoint_paths == (str(tf_fixtures / "keras_adam" / "ckpt-1"),)
    assert state.all_model_checkpoint_timestamps == ()
    assert state.last_preserved_timestamp is None


def test_tf1_sharded_saver_tensors_come_from_both_data_files(tf_fixtures):
    with load_checkpoint(tf_fixtures / "tf1_saver_sharded/model.ckpt-3") as reader:
        assert reader.bundle.num_shards == 2
        assert reader.bundle.info("dense/kernel").shard == 0
        assert reader.bundle.info("global_step").shard == 0
        assert reader.bundle.info("name").shard == 1
        assert reader.bundle.info("emb").sliced


def test_max_shard_size_tensors_span_five_shards(tf_fixtures):
    with load_checkpoint(tf_fixtures / "max_shard_size/ckpt") as reader:
        assert reader.bundle.num_shards == 5
        assert reader.bundle.info("mod/a/.ATTRIBUTES/VARIABLE_VALUE").sliced
        assert reader.bundle.info("mod/b/.ATTRIBUTES/VARIABLE_VALUE").sliced
        assert not reader.bundle.info("mod/c/.ATTRIBUTES/VARIABLE_VALUE").sliced


@pytest.mark.parametrize("folder", sorted({p.split("/")[0] for p in CHECKPOINTS}))
def test_fixture_files_are_the_ones_tensorflow_described(tf_fixtures, folder):
    # Every file, state files included: expected.json was made after the last write.
    recorded = load_expected(tf_fixtures / folder)["files"]
    actual = {
        p.relative_to(tf_fixtures / folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (tf_fixtures / folder).rglob("*")
        if p.is_file() and p.name != "expected.json"
    }
    assert actual == recorded
