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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trackpoint.errors import InvalidValueError

if TYPE_CHECKING:
    from collections.abc import Sequence

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


@dataclass(frozen=True, slots=True)
class SavePlan:
    """Where every value goes.

    Attributes:
        num_shards: How many data files.
        shards: Each shard's items, in file order.
        shard_sizes: Each shard's total size in bytes.
    """

    num_shards: int
    shards: tuple[tuple[WriteItem, ...], ...]
    shard_sizes: tuple[int, ...]


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


def plan_save(sizes: Sequence[int], num_shards: int, *, last: int | None = None) -> SavePlan:
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
    if last is not None and not 0 <= last < len(sizes):
        raise InvalidValueError(f"last={last} is not the index of a value")
    # Planning units: a large value alone, or a run of small neighbours.
    units: list[list[int]] = []
    run: list[int] = []
    run_bytes = 0
    for index, size in enumerate(sizes):
        if index == last:
            continue
        if size >= SMALL_VALUE_BYTES:
            if run:  # a run holds neighbours only: the caller's order stays intact
                units.append(run)
                run, run_bytes = [], 0
            units.append([index])
            continue
        run.append(index)
        run_bytes += size
        if run_bytes >= BATCH_BYTES:
            units.append(run)
            run, run_bytes = [], 0
    if run:
        units.append(run)
    members: list[list[list[int]]] = [[] for _ in range(num_shards)]
    if num_shards == 1:
        members[0] = units
    else:
        unit_bytes = [sum(sizes[i] for i in unit) for unit in units]
        # Largest first into the emptiest shard (ties: the lower shard, the earlier unit).
        heap = [(0, shard) for shard in range(num_shards)]
        for u in sorted(range(len(units)), key=lambda u: (-unit_bytes[u], u)):
            filled, shard = heapq.heappop(heap)
            members[shard].append(units[u])
            heapq.heappush(heap, (filled + unit_bytes[u], shard))
        for shard_units in members:
            shard_units.sort(key=lambda unit: unit[0])  # the caller's order inside a file
    if last is not None:
        members[-1].append([last])
    shards: list[tuple[WriteItem, ...]] = []
    shard_sizes: list[int] = []
    for shard, shard_units in enumerate(members):
        offset = 0
        placed = []
        for unit in shard_units:
            for index in unit:
                placed.append(WriteItem(index, int(sizes[index]), shard, offset))
                offset += int(sizes[index])
        shards.append(tuple(placed))
        shard_sizes.append(offset)
    return SavePlan(num_shards, tuple(shards), tuple(shard_sizes))
