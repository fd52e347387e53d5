"""The public surface: `__all__` is complete and sorted, reprs show `trackpoint.X`."""

from __future__ import annotations

import subprocess
import sys

import trackpoint


def test_all_lists_every_public_name_sorted() -> None:
    public = sorted(
        name for name in vars(trackpoint) if not name.startswith("_") and name[0].isupper()
    )
    assert trackpoint.__all__ == sorted(trackpoint.__all__)
    assert set(public) <= set(trackpoint.__all__)
    for name in trackpoint.__all__:
        assert hasattr(trackpoint, name), name


def test_exports_report_the_public_module() -> None:
    assert trackpoint.load_checkpoint.__module__ == "trackpoint"
    assert trackpoint.CorruptCheckpointError.__module__ == "trackpoint"


def test_every_error_is_a_trackpoint_error() -> None:
    for name in trackpoint.__all__:
        obj = getattr(trackpoint, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, trackpoint.TrackpointError), name


def test_import_loads_no_framework() -> None:
    code = (
        "import sys, trackpoint, trackpoint.format, trackpoint.reader\n"
        "heavy = {'torch', 'jax', 'keras', 'tensorflow', 'flax', 'rich'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
