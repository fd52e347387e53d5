"""What a restore says at the call: a forgotten optimizer, a rename, and how to silence it.

A `PartialRestoreWarning` is raised *during* `restore`/`read`/`load_weights`, attributed to
the caller's line, for what the restore can already tell for sure; `expect_partial=True`
silences it. Nothing is warned later, at garbage collection.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest

import trackpoint
from trackpoint.optimizers import Adam

from .conftest import Dense, Net


def _trained(tmp_path: Path, optimizer: bool = True) -> str:
    net, opt = Net(seed=1), Adam(0.01)
    opt.apply_gradients([(np.ones_like(v.numpy()), v) for v in net.variables])
    ckpt = trackpoint.Checkpoint(model=net, optimizer=opt) if optimizer else None
    ckpt = ckpt or trackpoint.Checkpoint(model=net)
    return ckpt.save(tmp_path / "ckpt")


def _only(record: pytest.WarningsRecorder) -> warnings.WarningMessage:
    found = [w for w in record if issubclass(w.category, trackpoint.PartialRestoreWarning)]
    assert len(found) == 1, [str(w.message) for w in found]
    return found[0]


def test_optimizer_missing_from_the_checkpoint_warns_at_the_restore_call(tmp_path: Path) -> None:
    path = _trained(tmp_path, optimizer=False)
    ckpt = trackpoint.Checkpoint(model=Net(), optimizer=Adam())
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        status = ckpt.restore(path)
    warning = _only(record)
    assert warning.filename == __file__
    assert warning.lineno == line
    message = str(warning.message)
    assert "optimizer" in message
    assert "saved without" in message
    assert "expect_partial=True" in message
    assert "err." not in message  # a warning has no `err` to look at
    status.assert_nontrivial_match()


def test_optimizer_the_program_lacks_warns_at_the_restore_call(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        trackpoint.Checkpoint(model=Net()).restore(path)
    warning = _only(record)
    assert warning.filename == __file__
    assert (
        "the checkpoint holds optimizer state under 'optimizer' but the program's Checkpoint has "
        "no 'optimizer': pass Checkpoint(model=model, optimizer=optimizer)"
    ) in str(warning.message)


def test_read_and_load_weights_warn_at_their_call_too(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    with pytest.warns(trackpoint.PartialRestoreWarning, match="optimizer") as record:
        trackpoint.Checkpoint(model=Net()).read(path)
    assert _only(record).filename == __file__
    weights = trackpoint.save_weights(Net(), tmp_path / "weights")
    extra = Net()
    extra.head = Dense(2, 1)
    with pytest.warns(trackpoint.PartialRestoreWarning, match="head") as record:
        trackpoint.load_weights(extra, weights)
    warning = _only(record)
    assert warning.filename == __file__
    assert "load_weights(..., expect_partial=True)" in str(warning.message)


@pytest.mark.parametrize("verb", ["restore", "read"])
def test_expect_partial_keyword_silences_the_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder, verb: str
) -> None:
    path = _trained(tmp_path)
    ckpt = trackpoint.Checkpoint(model=Net(), extra=Dense(2, 2))
    status = getattr(ckpt, verb)(path, expect_partial=True)
    del status
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, trackpoint.PartialRestoreWarning)]


def test_load_weights_expect_partial_keyword_silences_the_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    weights = trackpoint.save_weights(Net(), tmp_path / "weights")
    extra = Net()
    extra.head = Dense(2, 1)
    trackpoint.load_weights(extra, weights, expect_partial=True)
    assert not [w for w in recwarn if issubclass(w.category, trackpoint.PartialRestoreWarning)]


def test_nothing_is_warned_when_the_status_goes(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    path = _trained(tmp_path)
    with pytest.warns(trackpoint.PartialRestoreWarning):
        status = trackpoint.Checkpoint(model=Net()).restore(path)
    recwarn.clear()
    del status
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, trackpoint.PartialRestoreWarning)]


def test_values_waiting_for_objects_created_later_do_not_warn(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(model=Net(seed=1)).save(tmp_path / "ckpt")
    late = trackpoint.Module()
    # Under filterwarnings=error a warning here fails the test: the layers may still come.
    status = trackpoint.Checkpoint(model=late).restore(path)
    late.dense_1 = Dense(4, 10, seed=9)
    late.dense_2 = Dense(10, 2, seed=9)
    status.assert_consumed()


def test_rename_to_an_unrelated_name_is_paired_by_structure(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(model=Net(seed=1)).save(tmp_path / "ckpt")
    renamed = Net(first="encoder")
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        status = trackpoint.Checkpoint(model=renamed).restore(path)
    message = str(_only(record).message)
    assert "model.encoder" in message
    assert "model.dense_1" in message
    assert "same variables and shapes" in message
    with pytest.raises(trackpoint.MismatchError) as info:
        status.assert_existing_objects_matched()
    assert "model.encoder" in str(info.value)
    assert "model.dense_1" in str(info.value)
    assert "same variables and shapes" in str(info.value)


def test_rename_pairs_by_structure_before_name_similarity(tmp_path: Path) -> None:
    saved = trackpoint.Module()
    saved.layer1 = Dense(4, 8)
    saved.layer2 = Dense(8, 3)
    path = trackpoint.Checkpoint(model=saved).save(tmp_path / "ckpt")
    live = trackpoint.Module()
    live.first = Dense(4, 8)
    live.layer_1 = Dense(8, 3)  # nearer layer1 by name, is layer2 by structure
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        trackpoint.Checkpoint(model=live).restore(path)
    message = str(_only(record).message)
    assert "model.layer_1 in the program and model.layer2 in the checkpoint" in message
    assert "model.first in the program and model.layer1 in the checkpoint" in message
