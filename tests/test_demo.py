"""`make demo` keeps working: the demo runs end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "assert_consumed() passed" in result.stdout
    assert "every checksum matches" in result.stdout
    assert (tmp_path / "demo-run" / "checkpoint").is_file()
