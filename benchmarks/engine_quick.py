"""Quick hand-run check of the engine: save/restore GB/s before (BundleWriter loop) and after.

Run: .venv/bin/python benchmarks/engine_quick.py [--dir DIR] [--runs 3]

Two states: ~1 GiB in 50 float32 tensors, and 20,000 small float32 tensors (~200 MiB).
"Before" is the one-thread path the checkpoint used until the engine: `BundleWriter.add` in
a loop to save, `BundleReader.read_into` per tensor to restore. "After" is
`engine.write_bundle` (size-balanced shards, parallel writers) and `engine.read_into_many`
(parallel, batched). Restores go into existing arrays; checksums are always verified.
The previous checkpoint is deleted before each save (page-cache reuse, as in training).
Numbers are medians; this machine is noisy, so compare only within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

import numpy as np

from trackpoint.engine import read_into_many, write_bundle
from trackpoint.format import BundleReader, BundleWriter

if TYPE_CHECKING:
    from collections.abc import Callable

State = list[tuple[str, np.ndarray]]


def llm_like(total_bytes: int = 1 << 30, count: int = 50) -> State:
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.2, 1.8, count)
    sizes = (weights / weights.sum() * total_bytes / 4).astype(int)
    return [(f"layer_{i:03d}/kernel", rng.random(n, dtype=np.float32)) for i, n in enumerate(sizes)]


def small_tensors(count: int = 20_000) -> State:
    rng = np.random.default_rng(1)
    sizes = rng.integers(256, 5120, count)  # 1-20 KiB of float32, ~200 MiB in all
    return [(f"t/{i:05d}/w", rng.random(int(n), dtype=np.float32)) for i, n in enumerate(sizes)]


def save_before(prefix: str, state: State) -> None:
    with BundleWriter(prefix) as writer:
        for key, value in state:
            writer.add(key, value)


def save_after(prefix: str, state: State) -> None:
    write_bundle(prefix, state)


def restore_before(prefix: str, outs: State) -> None:
    reader = BundleReader(prefix)
    for key, out in outs:
        reader.read_into(key, out)
    reader.close()


def restore_after(prefix: str, outs: State) -> None:
    reader = BundleReader(prefix)
    read_into_many(reader, outs)
    reader.close()


def clear(folder: str) -> None:
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))


def timed(fn: Callable[[], None], runs: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    root: str,
    state: State,
    save: Callable[[str, State], None],
    restore: Callable[[str, State], None],
    runs: int,
) -> tuple[float, float]:
    """Median save and restore seconds of one path on one state."""
    folder = os.path.join(root, "ckpt")
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, "ckpt")
    outs = [(k, np.zeros_like(v)) for k, v in state]
    t_save = timed(lambda: save(prefix, state), runs, lambda: clear(folder))
    t_restore = timed(lambda: restore(prefix, outs), runs)
    assert all(np.array_equal(o, v) for (_, o), (_, v) in zip(outs, state, strict=True))
    clear(folder)
    return t_save, t_restore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="engine_quick_", dir=args.dir)
    print(f"writing under {root}; {os.cpu_count()} cores; medians of {args.runs} runs")
    print("| state | path | save s | save GB/s | restore s | restore GB/s |")
    print("|---|---|---|---|---|---|")
    try:
        for name, state in [("1 GiB / 50 tensors", llm_like()), ("20,000 small", small_tensors())]:
            total = sum(v.nbytes for _, v in state)
            for label, save, restore in [
                ("before (BundleWriter loop)", save_before, restore_before),
                ("after (engine)", save_after, restore_after),
            ]:
                t_save, t_restore = measure(root, state, save, restore, args.runs)
                print(
                    f"| {name} ({total / 2**20:.0f} MiB) | {label} | {t_save:.3f} | "
                    f"{total / t_save / 1e9:.2f} | {t_restore:.3f} | "
                    f"{total / t_restore / 1e9:.2f} |"
                )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
