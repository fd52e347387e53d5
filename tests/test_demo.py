"""`make demo` keeps working: a killed PyTorch run resumes and ends bit-exact, exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import trackpoint

pytest.importorskip("torch")

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_kills_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "killed with SIGKILL (exit code -9)" in out
    # Killed right after its 4th save (step 80); a slow parent may let it save once more.
    resumed = re.search(r"resumed from ckpt-(\d+) at step (\d+)", out)
    assert resumed is not None, out
    number, step = int(resumed[1]), int(resumed[2])
    assert step == 20 * number
    assert 80 <= step < 200
    assert "final weights equal the uninterrupted run's bit for bit" in out
    assert "MISMATCH" not in out
    assert "model/0/weight/.OPTIMIZER_SLOT/optimizer/exp_avg" in out  # trackpoint inspect
    assert "every checksum matches" in out  # trackpoint verify
    assert str(trackpoint.latest_checkpoint(tmp_path / "demo-run")).endswith("ckpt-10")
