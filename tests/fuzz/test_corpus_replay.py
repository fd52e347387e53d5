"""Replay every input the fuzzers found (and their seeds): only TrackpointErrors, no hangs.

The corpus in tests/corpus/<target>/ comes from runs of the atheris targets by hand
(`fuzz_bundle.py`, see its docstring), minimised with `-merge=1`. Each input must raise
nothing but a `TrackpointError`, and none may hang (a batch fails after 60 s).
"""

from __future__ import annotations

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
@pytest.mark.timeout(60)  # a hang fails this batch, by name, not the whole run
def test_bundle_corpus_replays_cleanly(batch):
    for path in _inputs("bundle")[batch::8]:
        one_input(path.read_bytes())
