"""Measuring what a piece of code allocates, for the tests' memory bounds.

tracemalloc sees Python objects and NumPy buffers (NumPy registers its allocations with
it), so a tensor allocated from a lying index shows up.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@dataclass
class Peak:
    """The peak of traced memory of a `traced()` block, in bytes (set when it ends)."""

    bytes: int = 0


@contextlib.contextmanager
def traced() -> Iterator[Peak]:
    """Trace allocations inside the block; the yielded `Peak` holds their peak afterwards."""
    peak = Peak()
    tracemalloc.start()
    try:
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def traced_peak(action: Callable[[], object]) -> int:
    """The peak of traced memory (NumPy buffers included) while `action` runs."""
    with traced() as peak:
        action()
    return peak.bytes
