"""benchmarks/bench_checkpoint.py still runs: a --quick smoke run prints a full table.

No timing is asserted (benchmarks are run by hand); this only checks that every tool's
row is there with numbers, or with the reason it was skipped.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_checkpoint.py"

#: Row label -> the modules that tool needs (as the script's TOOLS table says).
ROWS = {
    "trackpoint Checkpoint": (),
    "trackpoint CheckpointManager": (),
    "TF tf.train.Checkpoint": ("tensorflow",),
    "TF CheckpointManager": ("tensorflow",),
    "torch.save / torch.load + copy_": ("torch",),
    "torch.load(mmap=True) + copy_": ("torch",),
    "safetensors.numpy": ("safetensors",),
    "safetensors.torch": ("safetensors", "torch"),
    "np.savez / np.load": (),
}
RATE = re.compile(r"\d+\.\d\d GB/s \(\d+\.\d{3} s\)")


@pytest.mark.slow
def test_quick_run_prints_a_table_with_every_tool(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--runs",
            "1",
            "--cases",
            "llm-1g",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "### llm-1g:" in out
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("| "):  # the first table's row wins (the ratio table reuses labels)
            rows.setdefault(line.split(" | ")[0].removeprefix("| "), line)
    header = "| tool | save | durable save (fsync) | async save: call blocks |"
    assert any(line.startswith(header) for line in out.splitlines()), out
    for label, modules in ROWS.items():
        assert label in rows, f"no row for {label}:\n{out}"
        row = rows[label]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            assert f"skipped: {missing[0]} is not installed" in row, row
        else:
            assert RATE.search(row), row  # measured, not an error
            assert "error" not in row, row
    assert "Machine limits, same run" in out
    assert "memcpy" in out
    assert "crc32c" in out
    assert "| trackpoint ÷ | save | durable save | restore in place | cold-cache restore |" in out
    assert "### Issue 5 targets" in out
    assert re.search(r"\| llm-1g \| save ≥ 2\.5x TF \| (yes|\*\*no\*\*|—) \|", out), out
