"""`trackpoint inspect` and `trackpoint verify`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import trackpoint
from trackpoint.cli import main
from trackpoint.format import BundleWriter, write_checkpoint_state


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    prefix = folder / "ckpt-3"
    with BundleWriter(prefix, num_shards=2) as writer:
        writer.add("model/kernel", np.arange(12, dtype=np.float32).reshape(3, 4), shard=0)
        writer.add("model/emb", np.ones((4, 2), ml_dtypes.bfloat16), shard=1)
        writer.add("step", np.int64(3), shard=1)
        writer.add("vocab", np.array(["héllo", b"\xff"], dtype=object), shard=1)
    write_checkpoint_state(folder, prefix)
    return folder


# The code under test, not whatever copy the interpreter would find on its own.
SRC = str(Path(trackpoint.__file__).resolve().parent.parent)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trackpoint.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin", "PYTHONPATH": SRC},
    )


def test_inspect_prints_a_table_of_keys_dtypes_shapes(run: Path) -> None:
    result = _cli("inspect", str(run))
    assert result.returncode == 0, result.stderr
    for text in ("model/kernel", "float32", "[3, 4]", "bfloat16", "step", "4 tensors"):
        assert text in result.stdout


def test_inspect_json_is_machine_readable(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(run / "ckpt-3"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["num_shards"] == 2
    assert record["format"] == "name"
    by_key = {t["key"]: t for t in record["tensors"]}
    assert by_key["model/kernel"] == {
        "key": "model/kernel",
        "dtype": "float32",
        "shape": [3, 4],
        "size": 48,
        "shard": 0,
        "sliced": False,
    }
    assert record["total_bytes"] == sum(t["size"] for t in record["tensors"])


def test_inspect_tensor_prints_values(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(run), "--tensor", "model/kernel", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["values"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert main(["inspect", str(run), "--tensor", "vocab", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"] == ["héllo", {"hex": "ff"}]
    assert main(["inspect", str(run), "--tensor", "model/emb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"] == [[1.0, 1.0]] * 4


def test_verify_passes_a_whole_checkpoint(run: Path) -> None:
    result = _cli("verify", str(run))
    assert result.returncode == 0, result.stderr
    assert "every checksum matches" in result.stdout


def test_verify_names_each_bad_tensor_and_file(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run / "ckpt-3.data-00001-of-00002"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # the first tensor written into shard 1: model/emb
    data.write_bytes(bytes(raw))
    assert main(["verify", str(run), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is False
    assert [p["key"] for p in record["problems"]] == ["model/emb"]
    assert record["problems"][0]["file"] == str(data)
    assert "failed its checksum" in record["problems"][0]["error"]


def test_verify_reports_a_missing_data_file(run: Path) -> None:
    (run / "ckpt-3.data-00000-of-00002").unlink()
    result = _cli("verify", str(run))
    assert result.returncode == 1
    assert "ckpt-3.data-00000-of-00002" in result.stdout
    assert "model/kernel" in result.stdout


def test_missing_checkpoint_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = _cli("inspect", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "CheckpointNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


# -- exit codes and `verify --all` (issue 12, point 6) --------------------------------------
# Documented (module docstring, --help, docs/format-layer.md): 0 all good, 1 a checkpoint
# has problems, 2 nothing could be opened or the command line was wrong.


def _folder_of_three(folder: Path) -> Path:
    for n in (1, 2, 3):
        with BundleWriter(folder / f"ckpt-{n}") as writer:
            writer.add("w", np.full(8, float(n), np.float32))
    write_checkpoint_state(folder, folder / "ckpt-3", [folder / f"ckpt-{n}" for n in (1, 2, 3)])
    return folder


def _flip_first_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_verify_of_nothing_exits_2(tmp_path: Path) -> None:
    result = _cli("verify", str(tmp_path / "nothing"))
    assert result.returncode == 2, result.stderr
    assert "CheckpointNotFoundError" in result.stderr


def test_a_wrong_command_line_exits_2(tmp_path: Path) -> None:
    assert _cli("verify").returncode == 2
    assert _cli("verify", str(tmp_path), "--no-such-flag").returncode == 2


def test_verify_all_reports_each_checkpoint_and_exits_1_for_a_bad_older_one(
    tmp_path: Path,
) -> None:
    folder = _folder_of_three(tmp_path)
    _flip_first_byte(folder / "ckpt-1.data-00000-of-00001")
    plain = _cli("verify", str(folder))
    assert plain.returncode == 0, plain.stderr  # the latest alone is fine ...
    assert "--all" in plain.stdout  # ... and it says the others were not checked
    result = _cli("verify", str(folder), "--all")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any("ckpt-1" in line and "failed its checksum" in line for line in lines)
    assert any(line.startswith("ok") and "ckpt-2:" in line for line in lines)
    assert any(line.startswith("ok") and "ckpt-3:" in line for line in lines)
    assert not any(line.startswith("ok") and "ckpt-1:" in line for line in lines)


def test_verify_all_json_lists_every_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder_of_three(tmp_path)
    (folder / "ckpt-2.data-00000-of-00001").unlink()
    (folder / "ckpt-1.index").write_bytes(b"not an index")
    assert main(["verify", str(folder), "--all", "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is False
    by_name = {Path(c["prefix"]).name: c for c in record["checkpoints"]}
    assert sorted(by_name) == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert by_name["ckpt-3"]["ok"] is True
    assert by_name["ckpt-2"]["ok"] is False
    assert by_name["ckpt-2"]["problems"][0]["file"] == str(folder / "ckpt-2.data-00000-of-00001")
    assert by_name["ckpt-1"]["ok"] is False
    assert "CorruptCheckpointError" in by_name["ckpt-1"]["problems"][0]["error"]


def test_verify_all_of_a_whole_folder_exits_0(tmp_path: Path) -> None:
    result = _cli("verify", str(_folder_of_three(tmp_path)), "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("every checksum matches") == 3


def test_verify_all_of_a_folder_without_checkpoints_exits_2(tmp_path: Path) -> None:
    result = _cli("verify", str(tmp_path), "--all")
    assert result.returncode == 2
    assert "no checkpoint" in result.stderr
