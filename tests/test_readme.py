"""The README's first example runs as shown (its first screen must stay true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trackpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match is not None, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(match.group(1), str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "runs" / "a" / "ckpt-1.index").is_file()
    keys = [key for key, _ in trackpoint.list_variables(tmp_path / "runs" / "a")]
    assert "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys


def test_readme_names_the_two_setup_commands() -> None:
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:20])
    assert "make demo" in first_screen
    assert "make test" in first_screen
