"""Shared fixtures: the TF 2.21 reference checkpoints and TensorFlow itself (when importable)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

pytest_plugins = ["tests._hygiene"]  # every test leaves the process as it found it

# TensorFlow logs at import; keep test output readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Checkpoints TensorFlow 2.21 wrote, each folder with TF's reading of it (expected.json);
#: committed, made by tests/fixtures/generate.py (tests/fixtures/README.md lists them).
TF_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tf-2.21"


@pytest.fixture(scope="session")
def tf() -> ModuleType:
    """TensorFlow, or a skip with the reason when it cannot be imported."""
    try:
        import tensorflow
    except ImportError as err:  # pragma: no cover - CI installs tensorflow-cpu
        pytest.skip(f"TensorFlow cannot be imported ({err}); install tensorflow-cpu")
    module: ModuleType = tensorflow
    return module


@pytest.fixture(scope="session")
def tf_fixtures() -> Path:
    """tests/fixtures/tf-2.21: part of the repository, so missing is a failure, never a skip."""
    if not (TF_FIXTURES / "MANIFEST.json").is_file():
        pytest.fail(
            f"reference checkpoints missing: {TF_FIXTURES / 'MANIFEST.json'} does not exist; "
            "they are committed with the tests (restore them with git), or regenerate them "
            "with `.venv/bin/python tests/fixtures/generate.py`",
            pytrace=False,
        )
    return TF_FIXTURES


def load_expected(folder: Path) -> dict[str, Any]:
    """A fixture folder's expected.json (TF's own reading of the files)."""
    with open(folder / "expected.json", encoding="utf-8") as f:
        result: dict[str, Any] = json.load(f)
    return result
