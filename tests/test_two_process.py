"""Two processes: A trains and saves, B rebuilds, restores the latest and continues.

The result must equal one uninterrupted run exactly (bit for bit).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trackpoint
from tests._compare import assert_bitwise_equal

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_numpy.py"


def _run(run_dir: Path, steps: int) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(run_dir), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_resumed_training_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    first = _run(tmp_path / "split", 6)
    assert "resumed" not in first
    second = _run(tmp_path / "split", 12)
    assert "resumed from" in second
    assert "at step 6" in second
    _run(tmp_path / "whole", 12)
    split = trackpoint.load_checkpoint(tmp_path / "split")
    whole = trackpoint.load_checkpoint(tmp_path / "whole")
    keys = split.get_variable_to_shape_map()
    assert keys == whole.get_variable_to_shape_map()
    assert "model/w/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE" in keys
    for key in keys:
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        assert_bitwise_equal(split.get_tensor(key), whole.get_tensor(key), key)
    assert split.prefix.endswith("ckpt-12")
    assert sorted(p.name for p in (tmp_path / "split").glob("*.index")) == [
        "ckpt-10.index",
        "ckpt-11.index",
        "ckpt-12.index",
    ]
