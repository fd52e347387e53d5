"""Measure the crc32c candidates on this machine (run by hand: `make bench`).

For each package: single-thread GB/s on bytes, on a memoryview and on an ndarray, and
two-thread GB/s (which shows whether the GIL is released for that input type).
"""

from __future__ import annotations

import importlib
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

SIZE = 256 << 20
REPEAT = 5


def _candidates() -> dict[str, Callable[[Any], int]]:
    found: dict[str, Callable[[Any], int]] = {}
    try:
        crc32c = importlib.import_module("crc32c")
        found["crc32c"] = crc32c.crc32c
    except ImportError:
        pass
    try:
        google_crc32c = importlib.import_module("google_crc32c")
        found["google-crc32c"] = google_crc32c.value
    except ImportError:
        pass
    return found


def _gbps(fn: Callable[[Any], int], data: Any, threads: int) -> float | None:
    chunks = [data[i * (SIZE // threads) : (i + 1) * (SIZE // threads)] for i in range(threads)]
    times = []
    for _ in range(REPEAT):
        workers = [threading.Thread(target=fn, args=(chunk,)) for chunk in chunks]
        start = time.perf_counter()
        try:
            if threads == 1:
                fn(chunks[0])
            else:
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
        except TypeError:
            return None
        times.append(time.perf_counter() - start)
    return SIZE / statistics.median(times) / 1e9


def main() -> None:
    array = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8)
    inputs: dict[str, Any] = {
        "bytes": array.tobytes(),
        "memoryview": array.data,
        "ndarray": array,
    }
    print("| package | input | 1 thread GB/s | 2 threads GB/s |\n|---|---|---|---|")
    for name, fn in _candidates().items():
        for kind, data in inputs.items():
            try:
                fn(data[:16])
            except TypeError:
                print(f"| {name} | {kind} | refused | refused |")
                continue
            one = _gbps(fn, data, 1)
            two = _gbps(fn, data, 2)
            print(f"| {name} | {kind} | {one:.1f} | {two:.1f} |")


if __name__ == "__main__":
    main()
