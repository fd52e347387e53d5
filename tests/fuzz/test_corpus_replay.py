"""Replay every input the fuzzers found (and their seeds): only TrackpointErrors, no hangs.

The corpus in tests/corpus/<target>/ comes from runs of the atheris targets by hand
(`fuzz_bundle.py`, see its docstring), minimised with `-merge=1`. Each input must raise
nothing but a `TrackpointError`, and none may hang (each has a 10 s guard).
"""

from __future__ import annotations

import faulthandler
from pathlib import Path

import pytest

from .fuzz_bundle import one_input

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _inputs(target: str) -> list[Path]:
    folder = CORPUS / target
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_the_bundle_corpus_is_there():
    # The replay below must not pass vacuously because the corpus went missing.
    assert len(_inputs("bundle")) >= 50


@pytest.mark.parametrize("batch", range(8))
def test_bundle_corpus_replays_cleanly(batch):
    inputs = _inputs("bundle")[batch::8]
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        for path in inputs:
            one_input(path.read_bytes())
    finally:
        faulthandler.cancel_dump_traceback_later()
