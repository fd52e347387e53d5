"""How long an async save blocks the caller, next to a sync save and a plain memcpy.

~1 GiB of float32 in 50 tensors, saved with `Checkpoint.save` (sync and
`enable_async=True`) into a temporary folder; each measurement repeated and the median
printed. Run by hand: `python benchmarks/async_quick.py [--gib 1] [--runs 3]`.
The async "first" save allocates its snapshot buffers (fresh memory is slow on some VMs);
later ones reuse them, which is the steady state of a training loop.
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
    options = trackpoint.CheckpointOptions(enable_async=True)
    try:
        # memcpy of the whole state into buffers already touched (the async floor).
        targets = {k: np.empty_like(a) for k, a in state.items()}
        for k, a in state.items():
            np.copyto(targets[k], a)
        memcpy = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for k, a in state.items():
                np.copyto(targets[k], a)
            memcpy.append(time.perf_counter() - t0)
        del targets

        sync_times = []
        for _ in range(args.runs):
            _clear(folder)
            t0 = time.perf_counter()
            ckpt.save(folder / "ckpt")
            sync_times.append(time.perf_counter() - t0)

        _clear(folder)
        t0 = time.perf_counter()
        ckpt.save(folder / "ckpt", options)
        first_block = time.perf_counter() - t0
        ckpt.sync()
        blocks, totals = [], []
        for _ in range(args.runs):
            _clear(folder)
            t0 = time.perf_counter()
            ckpt.save(folder / "ckpt", options)
            blocks.append(time.perf_counter() - t0)
            ckpt.sync()
            totals.append(time.perf_counter() - t0)
    finally:
        ckpt.sync()
        shutil.rmtree(folder, ignore_errors=True)

    gib = nbytes / (1 << 30)
    med = statistics.median
    print(f"state: {gib:.2f} GiB in {len(state)} float32 tensors; medians of {args.runs} runs")
    print("| what | seconds | GB/s | vs sync save | vs memcpy |")
    print("|---|---|---|---|---|")
    rows = [
        ("memcpy of the state (np.copyto, warm buffers)", med(memcpy)),
        ("sync save", med(sync_times)),
        ("async save: call blocks, first (allocates buffers)", first_block),
        ("async save: call blocks, buffers reused", med(blocks)),
        ("async save: call + background write until sync()", med(totals)),
    ]
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.3f} | {nbytes / seconds / 1e9:.2f} | "
            f"{seconds / med(sync_times):.2f}x | {seconds / med(memcpy):.2f}x |"
        )


if __name__ == "__main__":
    main()
