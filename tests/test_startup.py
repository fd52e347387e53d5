"""Startup: `import trackpoint` and a float32 `inspect` do not load ml_dtypes (issue 12, point 8).

ml_dtypes costs most of a second to import; it is loaded only when a checkpoint (or a
value) holds a dtype that needs it (bfloat16, float8, int4, ...). Each check runs in a
fresh interpreter, importing this worktree's trackpoint (asserted through `__file__`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

import trackpoint
from trackpoint.format import BundleWriter

SRC = str(Path(trackpoint.__file__).resolve().parent.parent)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SRC, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, env=env
    )


def _write(prefix: Path, value: np.ndarray) -> None:
    with BundleWriter(prefix) as writer:
        writer.add("w", value)
        writer.add("step", np.int64(7))


_INSPECT = """
import json, sys
import trackpoint
from trackpoint.cli import main
code = main(["inspect", sys.argv[1]])
print(json.dumps({"file": trackpoint.__file__, "code": code,
                  "ml_dtypes": "ml_dtypes" in sys.modules}), file=sys.stderr)
"""


def _last_json(stderr: str) -> dict[str, object]:
    record: dict[str, object] = json.loads(stderr.strip().splitlines()[-1])
    return record


def test_import_trackpoint_does_not_import_ml_dtypes() -> None:
    result = _python("-X", "importtime", "-c", "import trackpoint, trackpoint.cli")
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "trackpoint" in imported
    assert not [name for name in imported if name.startswith("ml_dtypes")]


def test_inspect_of_a_float32_checkpoint_does_not_import_ml_dtypes(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt-1", np.arange(6, dtype=np.float32))
    result = _python("-c", _INSPECT, str(tmp_path / "ckpt-1"))
    assert result.returncode == 0, result.stderr
    record = _last_json(result.stderr)
    assert record["file"] == str(Path(SRC) / "trackpoint" / "__init__.py")
    assert record["code"] == 0
    assert record["ml_dtypes"] is False
    assert "float32" in result.stdout


def test_a_bfloat16_checkpoint_still_reads_in_a_fresh_process(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt-1", np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16))
    code = (
        "import sys, trackpoint\n"
        "assert 'ml_dtypes' not in sys.modules\n"
        "w = trackpoint.load_checkpoint(sys.argv[1]).get_tensor('w')\n"
        "print(w.dtype, w.astype('float32').tolist())\n"
    )
    result = _python("-c", code, str(tmp_path / "ckpt-1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=1) == ["bfloat16", "[1.5, -2.0, 3.25]\n"]
    inspect = _python("-c", _INSPECT, str(tmp_path / "ckpt-1"))
    assert inspect.returncode == 0, inspect.stderr
    assert "bfloat16" in inspect.stdout
    assert _last_json(inspect.stderr)["ml_dtypes"] is True  # loaded because it was needed


def test_a_bfloat16_value_saves_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "import sys, ml_dtypes, numpy as np, trackpoint\n"
        "v = trackpoint.Variable(np.array([0.5, 4.0], ml_dtypes.bfloat16))\n"
        "trackpoint.Checkpoint(v=v).write(sys.argv[1])\n"
    )
    result = _python("-c", code, str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    reader = trackpoint.load_checkpoint(tmp_path / "w")
    value = reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")
    reader.close()
    assert value.dtype == np.dtype(ml_dtypes.bfloat16)
    assert value.astype(np.float32).tolist() == [0.5, 4.0]
