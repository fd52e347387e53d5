"""How long an async save blocks the caller, next to a sync save and a plain memcpy.

~1 GiB of float32 in 50 tensors, saved with `Checkpoint.save` (sync and
`enable_async=True`, each to the page cache and durably) into a temporary folder; each
measurement repeated and the median printed. Run by hand:
`python benchmarks/async_quick.py [--gib 1] [--runs 3]`.
A first async save allocates the snapshot buffers and is not timed; later ones reuse
them, the steady state of a training loop. The snapshot's copy is timed inside the call
too, next to the machine's memcpy on one thread and on all cores: what the call costs
beyond the copy is the rest of the profile.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import trackpoint


def _state(gib: float, count: int) -> dict[str, np.ndarray]:
    per = int(gib * (1 << 30) / 4 / count)
    rng = np.random.default_rng(0)
    return {f"t{i:02d}": rng.standard_normal(per, dtype=np.float32) for i in range(count)}


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _timed_copy_all() -> tuple[list[float], object]:
    """Wrap the snapshot's copy so each async call's copying time is recorded."""
    from trackpoint.engine import _snapshot

    real = _snapshot._copy_all
    seconds: list[float] = []

    def copy_all(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        t0 = time.perf_counter()
        real(pairs)
        seconds.append(time.perf_counter() - t0)

    _snapshot._copy_all = copy_all
    return seconds, real


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--tensors", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    state = _state(args.gib, args.tensors)
    nbytes = sum(a.nbytes for a in state.values())
    ckpt = trackpoint.Checkpoint(**state)
    folder = Path(tempfile.mkdtemp(prefix="tp-async-"))
    med = statistics.median
    rows: list[tuple[str, float]] = []
    from trackpoint.engine._snapshot import _copy_all

    try:
        # memcpy of the whole state into buffers already touched (the async floor): one
        # thread, and on all cores as the snapshot copies.
        targets = {k: np.empty_like(a) for k, a in state.items()}
        pairs = [(targets[k], a) for k, a in state.items()]
        for dst, src in pairs:
            np.copyto(dst, src)
        memcpy, parallel = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for dst, src in pairs:
                np.copyto(dst, src)
            memcpy.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _copy_all(pairs)
            parallel.append(time.perf_counter() - t0)
        del targets, pairs
        rows.append(("memcpy of the state, one thread (np.copyto, warm buffers)", med(memcpy)))
        rows.append(("memcpy of the state on all cores (the snapshot's copy)", med(parallel)))

        for durable in (False, True):
            times = []
            for _ in range(args.runs):
                _clear(folder)
                t0 = time.perf_counter()
                ckpt.save(folder / "ckpt", trackpoint.CheckpointOptions(durable=durable))
                times.append(time.perf_counter() - t0)
            label = "durable (the default)" if durable else "page cache (durable=False)"
            rows.append((f"sync save, {label}", med(times)))

        copying, real = _timed_copy_all()
        for durable in (False, True):
            options = trackpoint.CheckpointOptions(enable_async=True, durable=durable)
            _clear(folder)
            ckpt.save(folder / "ckpt", options)  # allocates the snapshot buffers
            ckpt.sync()
            copying.clear()
            blocks, totals = [], []
            for _ in range(args.runs):
                _clear(folder)
                t0 = time.perf_counter()
                ckpt.save(folder / "ckpt", options)
                blocks.append(time.perf_counter() - t0)
                ckpt.sync()
                totals.append(time.perf_counter() - t0)
            label = "durable" if durable else "page cache"
            rows.append((f"async save ({label}): call blocks", med(blocks)))
            rows.append((f"  of which the snapshot copy ({label})", med(copying)))
            rows.append((f"async save ({label}): call + write until sync()", med(totals)))
        from trackpoint.engine import _snapshot

        _snapshot._copy_all = real  # type: ignore[assignment]
    finally:
        ckpt.sync()
        shutil.rmtree(folder, ignore_errors=True)

    gib = nbytes / (1 << 30)
    sync = dict(rows)
    page, durable_save = (
        sync["sync save, page cache (durable=False)"],
        sync["sync save, durable (the default)"],
    )
    print(f"state: {gib:.2f} GiB in {len(state)} float32 tensors; medians of {args.runs} runs")
    print("| what | seconds | GB/s | vs page-cache save | vs durable save | vs memcpy |")
    print("|---|---|---|---|---|---|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.3f} | {nbytes / seconds / 1e9:.2f} | "
            f"{seconds / page:.0%} | {seconds / durable_save:.0%} | "
            f"{seconds / med(memcpy):.2f}x |"
        )


if __name__ == "__main__":
    main()
