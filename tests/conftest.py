"""Shared fixtures: the TF 2.21 reference checkpoints and TensorFlow itself (when importable)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

# TensorFlow logs at import; keep test output readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: `../shared/fixtures/tf2.21` beside the checkout (CI lays `shared/` beside its clone too).
SHARED_FIXTURES = Path(
    os.environ.get(
        "TRACKPOINT_SHARED_FIXTURES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf2.21",
    )
)
#: The project's own golden files, made by tests/fixtures/generate.py.
OWN_FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
def shared_fixtures() -> Path:
    """The folder of checkpoints written by TensorFlow 2.21 (skips when absent)."""
    if not SHARED_FIXTURES.is_dir():  # pragma: no cover - shared/ sits beside every checkout
        pytest.skip(f"reference checkpoints not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


def load_expected(folder: Path) -> dict[str, Any]:
    """A fixture folder's expected.json (TF's own reading of the files)."""
    with open(folder / "expected.json", encoding="utf-8") as f:
        result: dict[str, Any] = json.load(f)
    return result
