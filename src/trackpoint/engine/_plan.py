"""Save plans: which value goes into which data shard, and at which offset.

A plan is pure arithmetic on sizes; it reads no data and opens no file. Values are
spread over the shards largest first, each into the shard with the fewest bytes so far;
small values travel in runs of neighbours (in the caller's order), so that each run is
one large write and stays together in one file. Inside a shard, values keep the caller's
order, so a one-shard plan is exactly the layout `BundleWriter` (and TF's SaveV2) writes.
"""

from __future__ import annotations

import heapq
import os
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import InvalidValueError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "BATCH_BYTES",
    "SMALL_VALUE_BYTES",
    "SavePlan",
    "WriteItem",
    "default_num_shards",
    "default_threads",
    "plan_save",
]

#: Values below this size are batched: copied into a shared buffer and written together.
SMALL_VALUE_BYTES = 1 << 20
#: How many bytes of small neighbours make one run (one write, one planning unit). Each
#: thread holds one such buffer; 1 MiB already makes the syscalls per byte negligible.
BATCH_BYTES = 1 << 20
#: Below this much data a second shard (and a second thread) does not pay for itself.
_BYTES_PER_EXTRA_SHARD = 64 << 20
_MAX_THREADS = 8


@dataclass(frozen=True, slots=True)
class WriteItem:
    """One value's place in the checkpoint.

    Attributes:
        index: Its position in the list of values given to `plan_save`.
        size: Its size in bytes.
        shard: The data shard it goes into.
        offset: Where its bytes start in that shard.
    """

    index: int
    size: int
    shard: int
    offset: int


@dataclass(frozen=True, slots=True, eq=False)
class SavePlan:
    """Where every value goes, in arrays of a few bytes per value.

    A save of many small tensors holds its plan from start to end, so the plan is
    columns rather than an object per value (`shards` makes those, for inspection).

    Attributes:
        num_shards: How many data files.
        order: Every value's index, shard by shard, each shard in file order.
        bounds: Shard `s` holds the values `order[bounds[s]:bounds[s + 1]]`.
        sizes: Each value's size in bytes, by value index.
        shard_of: Each value's shard, by value index.
        offsets: Where each value starts in its shard, by value index.
        shard_sizes: Each shard's total size in bytes.
    """

    num_shards: int
    order: NDArray[np.int64]
    bounds: tuple[int, ...]
    sizes: NDArray[np.int64]
    shard_of: NDArray[np.int32]
    offsets: NDArray[np.int64]
    shard_sizes: tuple[int, ...]

    @property
    def shards(self) -> tuple[tuple[WriteItem, ...], ...]:
        """Each shard's items, in file order (an object per value: for tests and tools)."""
        return tuple(
            tuple(
                WriteItem(index, int(self.sizes[index]), shard, int(self.offsets[index]))
                for index in self.order[self.bounds[shard] : self.bounds[shard + 1]].tolist()
            )
            for shard in range(self.num_shards)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SavePlan):
            return NotImplemented
        return (
            self.num_shards == other.num_shards
            and self.bounds == other.bounds
            and self.shard_sizes == other.shard_sizes
            and np.array_equal(self.order, other.order)
            and np.array_equal(self.sizes, other.sizes)
            and np.array_equal(self.shard_of, other.shard_of)
            and np.array_equal(self.offsets, other.offsets)
        )


def default_threads() -> int:
    """How many writer/reader threads to use: the cores this process may run on, up to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform (macOS)
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_THREADS))


def default_num_shards(total_bytes: int, threads: int) -> int:
    """How many data shards suit `total_bytes` of values written by `threads` threads.

    One shard (TF's layout for one device) until there is enough data for parallel
    writers to pay; then one per thread, because writes into one file serialize on the
    file's lock in the kernel (ext4's inode lock), while writes into different files
    do not.

    Example:
        >>> default_num_shards(10 << 20, threads=2), default_num_shards(1 << 30, threads=2)
        (1, 2)
    """
    wanted = 1 + total_bytes // _BYTES_PER_EXTRA_SHARD
    return max(1, min(threads, wanted))


def plan_save(
    sizes: Sequence[int] | NDArray[np.integer[Any]], num_shards: int, *, last: int | None = None
) -> SavePlan:
    """Assign values of the given byte sizes to `num_shards` shards, size-balanced.

    Deterministic: the same sizes give the same plan.

    Args:
        sizes: Each value's size in bytes, in the caller's order.
        num_shards: How many data shards to fill.
        last: The index of a value that must go last into the last shard (TF writes the
            object graph there, format doc §5.1).

    Returns:
        The plan.

    Raises:
        InvalidValueError: `num_shards` is below 1 or `last` is out of range.

    Example:
        >>> MiB = 1 << 20
        >>> plan = plan_save([1 * MiB, 3 * MiB, 2 * MiB, 10], 2)
        >>> [[item.index for item in shard] for shard in plan.shards]
        [[1, 3], [0, 2]]
    """
    if num_shards < 1:
        raise InvalidValueError(f"num_shards must be at least 1, not {num_shards}")
    sizes_array = np.ascontiguousarray(sizes, dtype=np.int64)
    count = len(sizes_array)
    if last is not None and not 0 <= last < count:
        raise InvalidValueError(f"last={last} is not the index of a value")
    units, unit_count = _planning_units(sizes_array, last)
    placed = units >= 0  # every value but `last`
    # Which shard each unit goes into.
    if num_shards == 1:
        unit_shards = np.zeros(unit_count, dtype=np.int64)
    else:
        unit_bytes = np.zeros(unit_count, dtype=np.int64)
        np.add.at(unit_bytes, units[placed], sizes_array[placed])
        # Largest first into the emptiest shard (ties: the lower shard, the earlier unit).
        unit_shards = np.empty(unit_count, dtype=np.int64)
        heap = [(0, shard) for shard in range(num_shards)]
        for unit in np.lexsort((np.arange(unit_count), -unit_bytes)).tolist():
            filled, shard = heapq.heappop(heap)
            unit_shards[unit] = shard
            heapq.heappush(heap, (filled + int(unit_bytes[unit]), shard))
    shard_of = np.full(count, num_shards - 1, dtype=np.int32)  # `last`: the last shard
    shard_of[placed] = unit_shards[units[placed]]
    # Inside a file the caller's order, which is the units' order too (a unit is a run of
    # neighbours); the last value sorts after everything, at the end of the last shard.
    sort_key = shard_of.copy()
    if last is not None:
        sort_key[last] = num_shards
    order = np.argsort(sort_key, kind="stable")
    del sort_key
    bounds = np.searchsorted(shard_of[order], np.arange(num_shards + 1))
    # Offsets: the bytes before each value in the file order, less those of earlier shards.
    in_order = sizes_array[order]
    before = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(in_order, out=before[1:])
    shard_starts = before[bounds]
    offsets = np.empty(count, dtype=np.int64)
    offsets[order] = before[:-1] - np.repeat(shard_starts[:-1], np.diff(bounds))
    return SavePlan(
        num_shards,
        order,
        tuple(bounds.tolist()),
        sizes_array,
        shard_of,
        offsets,
        tuple(np.diff(shard_starts).tolist()),
    )


def _planning_units(sizes: NDArray[np.int64], last: int | None) -> tuple[NDArray[np.int32], int]:
    """Each value's planning unit (-1 for `last`), and how many units there are.

    A unit is a large value alone, or a run of small neighbours up to `BATCH_BYTES`
    (the run holds neighbours only: the caller's order stays intact). Units are numbered
    in the order of their first value.
    """
    units = array("i")
    count = 0
    run: int | None = None  # the open run of small values, if any
    run_bytes = 0
    for index, size in enumerate(sizes.data):  # plain ints, one at a time
        if index == last:
            units.append(-1)
            continue
        if size >= SMALL_VALUE_BYTES:
            run = None
            units.append(count)
            count += 1
            continue
        if run is None:
            run, run_bytes = count, 0
            count += 1
        units.append(run)
        run_bytes += size
        if run_bytes >= BATCH_BYTES:
            run = None
    return np.frombuffer(units, dtype=np.int32), count
