"""The reading API: what `load_checkpoint` accepts, what it says when nothing is there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import trackpoint
from trackpoint.format import BundleWriter, write_checkpoint_state


def _write(prefix: Path, **tensors: object) -> str:
    with BundleWriter(prefix) as writer:
        for key, value in tensors.items():
            writer.add(key, np.asarray(value))
    return str(prefix)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _write(run / "ckpt-1", w=np.zeros(3, np.float32))
    _write(run / "ckpt-2", w=np.ones(3, np.float32), step=np.int64(2))
    write_checkpoint_state(run, run / "ckpt-2", [run / "ckpt-1", run / "ckpt-2"])
    return run


def test_load_checkpoint_accepts_prefix_index_data_file_and_folder(folder: Path) -> None:
    prefix = str(folder / "ckpt-2")
    for given in (prefix, prefix + ".index", prefix + ".data-00000-of-00001", str(folder)):
        with trackpoint.load_checkpoint(given) as reader:
            assert reader.prefix == prefix
            assert reader.get_tensor("step") == 2


def test_folder_without_state_file_lists_prefixes_and_does_not_guess(folder: Path) -> None:
    os.unlink(folder / "checkpoint")
    with pytest.raises(trackpoint.CheckpointNotFoundError, match="does not guess") as info:
        trackpoint.load_checkpoint(folder)
    assert "ckpt-1, ckpt-2" in str(info.value)
    assert info.value.candidates == (str(folder / "ckpt-1"), str(folder / "ckpt-2"))
    assert "pass a prefix such as" in str(info.value)


def test_missing_prefix_names_the_index_and_what_the_folder_holds(folder: Path) -> None:
    with pytest.raises(trackpoint.CheckpointNotFoundError) as info:
        trackpoint.load_checkpoint(folder / "ckpt-7")
    message = str(info.value)
    assert "'ckpt-7.index' is missing" in message
    assert "the folder holds ckpt-1, ckpt-2" in message
    assert info.value.file == str(folder / "ckpt-7.index")
    assert isinstance(info.value, FileNotFoundError)


def test_missing_index_with_data_files_present_says_so(folder: Path) -> None:
    os.unlink(folder / "ckpt-2.index")
    with pytest.raises(trackpoint.CheckpointNotFoundError, match="data files exist"):
        trackpoint.load_checkpoint(folder / "ckpt-2")


def test_state_file_naming_a_missing_checkpoint_lists_the_others(folder: Path) -> None:
    os.unlink(folder / "ckpt-2.index")
    with pytest.raises(trackpoint.CheckpointNotFoundError, match="ckpt-2") as info:
        trackpoint.load_checkpoint(folder)
    assert "ckpt-1" in str(info.value)
    # The restart path never reads "no checkpoint" here: it falls back, and says so.
    with pytest.warns(trackpoint.TrackpointWarning, match=r"'ckpt-2'\) is missing; using 'ckpt-1'"):
        assert trackpoint.latest_checkpoint(folder) == str(folder / "ckpt-1")


def test_moved_folder_still_resolves_through_absolute_state_paths(
    folder: Path, tmp_path: Path
) -> None:
    # A TF1-style state file with absolute paths, then the folder is moved.
    write_checkpoint_state(tmp_path / "elsewhere", folder / "ckpt-2")
    shutil.copy(tmp_path / "elsewhere" / "checkpoint", folder / "checkpoint")
    assert str(folder / "ckpt-2") in (folder / "checkpoint").read_text()
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert trackpoint.latest_checkpoint(moved) == str(moved / "ckpt-2")
    assert trackpoint.load_checkpoint(moved).get_tensor("step") == 2


def test_saved_model_folder_and_its_variables_folder_are_accepted(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    _write(saved / "variables" / "variables", w=np.arange(2, dtype=np.int32))
    (saved / "saved_model.pb").write_bytes(b"")
    for given in (saved, saved / "variables"):
        assert trackpoint.list_variables(given) == [("w", [2])]


def test_list_variables_is_sorted_with_shapes(folder: Path) -> None:
    assert trackpoint.list_variables(folder) == [("step", []), ("w", [3])]


def test_maps_and_has_tensor_mirror_tf(folder: Path) -> None:
    reader = trackpoint.load_checkpoint(folder)
    assert reader.get_variable_to_shape_map() == {"step": [], "w": [3]}
    dtypes = reader.get_variable_to_dtype_map()
    assert dtypes == {"step": "int64", "w": "float32"}
    assert isinstance(dtypes["w"], trackpoint.DType)
    assert reader.has_tensor("w")
    assert not reader.has_tensor("v")
    assert not reader.is_object_based


def test_unknown_key_suggests_close_matches(folder: Path) -> None:
    reader = trackpoint.load_checkpoint(folder)
    with pytest.raises(trackpoint.KeyNotFoundError, match="did you mean 'step'") as info:
        reader.get_tensor("stepp")
    assert info.value.key == "stepp"
    assert isinstance(info.value, KeyError)


def test_read_into_fills_the_callers_buffer(folder: Path) -> None:
    out = np.full(3, 7.0, np.float32)
    address = out.ctypes.data
    trackpoint.load_checkpoint(folder).read_into("w", out)
    np.testing.assert_array_equal(out, np.ones(3, np.float32))
    assert out.ctypes.data == address


def test_mmap_views_are_read_only_and_equal(folder: Path) -> None:
    with trackpoint.load_checkpoint(folder, mmap=True) as reader:
        view = reader.get_tensor("w")
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, np.ones(3, np.float32))


def test_latest_checkpoint_is_none_for_an_empty_folder(tmp_path: Path) -> None:
    assert trackpoint.latest_checkpoint(tmp_path) is None


def test_load_checkpoint_verify_names_every_bad_tensor(tmp_path: Path) -> None:
    from trackpoint.format import BundleWriter

    prefix = str(tmp_path / "ckpt")
    with BundleWriter(prefix) as writer:
        for name in ("a", "b", "c"):
            writer.add(name, np.full(1000, 1.0, np.float32))
    data = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 1  # inside 'a'
    raw[8010] ^= 1  # inside 'c'
    data.write_bytes(bytes(raw))
    trackpoint.load_checkpoint(prefix).close()  # opening alone reads no data
    with pytest.raises(trackpoint.CorruptCheckpointError, match="2 tensor") as info:
        trackpoint.load_checkpoint(prefix, verify=True)
    assert "'a'" in str(info.value)
    assert "'c'" in str(info.value)
    assert "'b'" not in str(info.value).split("failed verification")[1]
    assert info.value.key == "a"
    assert info.value.file == str(data)
    with trackpoint.load_checkpoint(prefix, verify=False) as reader:
        np.testing.assert_array_equal(reader.get_tensor("b"), np.full(1000, 1.0, np.float32))
