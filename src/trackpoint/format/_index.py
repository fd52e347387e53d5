"""A bundle's parsed index, kept as columns: tens of bytes per tensor beyond its key.

A checkpoint of 60,000 small tensors opened as one object per tensor (a dataclass, its
shape tuple, Python ints, a dict slot) costs ~350 bytes per tensor, more than the rest of a
restore adds. `EntryIndex` keeps each visible key once, as the `str` that `TensorInfo.key`
hands out, in a list searched by bisection (the table is sorted by bytes, and UTF-8
preserves that order), and everything else in typed arrays; an `Entry` is made only when
one is asked for. Sliced tensors are rare and their parts are entries too: those rows keep
their `Entry` object whole.

Knows entries, not files or protos: `BundleReader` checks every field before adding a row.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from numpy.typing import NDArray

    from ._dtypes import DType
    from ._slices import Extents


@dataclass(slots=True)
class Entry:
    """One tensor as the index describes it.

    Attributes:
        key: The tensor's name (for a slice part, the name followed by its extents).
        dtype: Its TF dtype.
        shape: Its (full) shape.
        shard: The data shard holding it.
        offset: Its first byte in that shard.
        size: How many bytes it has (a sliced tensor: all of its slices together).
        crc: Its unmasked crc32c.
        slices: (extents, part) per stored slice of a sliced tensor; a part that has no
            entry in the index is the tensor's own entry, whose `problem` says so.
        problem: Why this entry cannot be read, found at open; None when it can be.
    """

    key: str
    dtype: DType
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int
    # An empty tuple until the entry has slices: a list per entry would cost 56 bytes.
    slices: list[tuple[Extents, Entry]] | tuple[()] = ()
    problem: str | None = None

    @property
    def numel(self) -> int:
        """How many elements its shape has."""
        return math.prod(self.shape)


def _shard_typecode(num_shards: int) -> str:
    """The narrowest unsigned array type holding every shard number below `num_shards`."""
    if num_shards <= 1 << 8:
        return "B"
    if num_shards <= 1 << 16:
        return "H"
    return "I"


class EntryIndex(Mapping[str, Entry]):
    """The visible entries of one bundle, by key, in index order.

    Rows are added in the index's order with `append`/`append_whole`, then `finish` makes
    the index ready for lookups. Mapping `key -> Entry` (each `Entry` is made on demand);
    `find` and `entry` look a row up and make its entry separately.

    Args:
        num_shards: How many data shards the bundle has (every row's shard is below it).

    Example:
        >>> from trackpoint.format import as_dtype
        >>> index = EntryIndex(1)
        >>> index.append("a", as_dtype("float32"), (2, 3), 0, 0, 24, 0x1234, None)
        >>> index.finish()
        >>> entry = index["a"]
        >>> entry.dtype.name, entry.shape, entry.size, "b" in index
        ('float32', (2, 3), 24, False)
    """

    __slots__ = (
        "_crcs",
        "_dims",
        "_dtype_codes",
        "_dtype_column",
        "_dtypes",
        "_keys",
        "_offsets",
        "_ordered",
        "_problems",
        "_rows",
        "_shards",
        "_sizes",
        "_starts",
        "_whole",
    )

    def __init__(self, num_shards: int) -> None:
        self._keys: list[str] = []
        # A checkpoint has a handful of dtypes: each row stores a one-byte code into
        # `_dtypes` (widened if a damaged index lists more than 256 distinct numbers).
        self._dtypes: list[DType] = []
        self._dtype_codes: dict[int, int] = {}
        self._dtype_column: array[int] = array("B")
        self._shards: array[int] = array(_shard_typecode(num_shards))
        self._offsets: array[int] = array("q")
        self._sizes: array[int] = array("q")
        self._crcs: array[int] = array("I")
        # Row i's shape is _dims[_starts[i]:_starts[i + 1]].
        self._dims: array[int] = array("q")
        self._starts: array[int] = array("q", [0])
        self._problems: dict[int, str] = {}  # rare: only damaged entries have one
        self._whole: dict[int, Entry] = {}  # rows of sliced tensors, kept as objects
        # Keys decoded from invalid UTF-8 (with backslashreplace) may break the order of
        # the list, or even repeat a key; such an index is looked up through this dict.
        self._rows: dict[str, int] | None = None
        self._ordered = True

    # -- building -----------------------------------------------------------------------

    def append(
        self,
        key: str,
        dtype: DType,
        shape: tuple[int, ...],
        shard: int,
        offset: int,
        size: int,
        crc: int,
        problem: str | None,
    ) -> None:
        """Add the next row (fields already checked: all non-negative, `crc` unmasked)."""
        row = len(self._keys)
        keys = self._keys
        if keys and key <= keys[-1]:
            self._ordered = False
        keys.append(key)
        code = self._dtype_codes.get(dtype.enum)
        if code is None:
            code = self._add_dtype(dtype)
        self._dtype_column.append(code)
        self._shards.append(shard)
        self._offsets.append(offset)
        self._sizes.append(size)
        self._crcs.append(crc)
        self._dims.extend(shape)
        self._starts.append(len(self._dims))
        if problem is not None:
            self._problems[row] = problem

    def append_whole(self, entry: Entry) -> None:
        """Add the next row as `entry` itself, which its owner may still change (slices)."""
        self._whole[len(self._keys)] = entry
        self.append(
            entry.key,
            entry.dtype,
            entry.shape,
            entry.shard,
            entry.offset,
            entry.size,
            entry.crc,
            None,
        )

    def _add_dtype(self, dtype: DType) -> int:
        code = len(self._dtypes)
        self._dtypes.append(dtype)
        self._dtype_codes[dtype.enum] = code
        if code == 1 << 8:
            self._dtype_column = array("I", self._dtype_column)
        return code

    def finish(self) -> None:
        """Make the index ready for lookups once every row is in."""
        # Exact-size copies: appending over-allocates lists by up to 1/8, arrays by 1/16.
        self._keys = self._keys[:]
        self._dtype_column = self._dtype_column[:]
        self._shards = self._shards[:]
        self._offsets = self._offsets[:]
        self._sizes = self._sizes[:]
        self._crcs = self._crcs[:]
        self._dims = self._dims[:]
        self._starts = self._starts[:]
        if not self._ordered:
            # A repeated key keeps its first place and takes its last row, as the dict of
            # entries that an index of entry objects would fill in index order.
            self._rows = {key: row for row, key in enumerate(self._keys)}

    # -- looking up ---------------------------------------------------------------------

    def find(self, key: object) -> int | None:
        """The row of visible key `key`, or None."""
        if not isinstance(key, str):
            return None
        if self._rows is not None:
            return self._rows.get(key)
        keys = self._keys
        row = bisect_left(keys, key)
        if row < len(keys) and keys[row] == key:
            return row
        return None

    def entry(self, row: int) -> Entry:
        """The entry of row `row` (a new object each time, except for sliced tensors)."""
        whole = self._whole.get(row) if self._whole else None
        if whole is not None:
            return whole
        return Entry(
            self._keys[row],  # the index's own str: callers holding it add no copy
            self._dtypes[self._dtype_column[row]],
            self._shape(row),
            self._shards[row],
            self._offsets[row],
            self._sizes[row],
            self._crcs[row],
            (),
            self._problems.get(row) if self._problems else None,
        )

    def summary(self, row: int) -> tuple[str, DType, tuple[int, ...], int, int, bool]:
        """(key, dtype, shape, size, shard, sliced) of row `row`, as `TensorInfo` has them.

        The shard of a sliced tensor is -1. Listing a checkpoint asks this of every key:
        it makes no `Entry` (a tuple costs a tenth of one).
        """
        whole = self._whole.get(row) if self._whole else None
        if whole is not None:
            sliced = bool(whole.slices)
            return (
                whole.key,
                whole.dtype,
                whole.shape,
                whole.size,
                -1 if sliced else whole.shard,
                sliced,
            )
        return (
            self._keys[row],
            self._dtypes[self._dtype_column[row]],
            self._shape(row),
            self._sizes[row],
            self._shards[row],
            False,
        )

    def _shape(self, row: int) -> tuple[int, ...]:
        start = self._starts[row]
        end = self._starts[row + 1]
        if end - start == 1:  # most tensors: no slice of the array to make a tuple of
            return (self._dims[start],)
        return tuple(self._dims[start:end])

    def _visible_rows(self) -> Iterable[int]:
        return range(len(self._keys)) if self._rows is None else self._rows.values()

    def entries(self) -> Iterator[Entry]:
        """Every visible entry, in index order."""
        for row in self._visible_rows():
            yield self.entry(row)

    def summaries(self) -> Iterator[tuple[str, DType, tuple[int, ...], int, int, bool]]:
        """`summary` of every visible row, in index order."""
        for row in self._visible_rows():
            yield self.summary(row)

    def whole_entries(self) -> list[Entry]:
        """The visible entries kept whole (sliced tensors), in index order."""
        if self._rows is None:
            return list(self._whole.values())  # filled in row order
        return [self._whole[row] for row in self._rows.values() if row in self._whole]

    def data_ends(self) -> dict[int, int] | None:
        """For each shard any entry uses, the end of its last entry's bytes.

        Returns:
            shard -> end, slice parts included; None when an entry cannot be read at all.
        """
        visible = None if self._rows is None else set(self._rows.values())
        if any(visible is None or row in visible for row in self._problems):
            return None
        selected: NDArray[np.intp] | slice
        if visible is None and not self._whole:
            selected = slice(None)  # every row: no copy of the columns to pick them
        else:
            picked = [row for row in self._visible_rows() if row not in self._whole]
            selected = np.array(picked, dtype=np.intp)
        shards = np.frombuffer(self._shards, self._shards.typecode)[selected]
        # As unsigned: offset and size are each below 2**63, so their sum cannot wrap.
        stops = np.frombuffer(self._offsets, np.int64)[selected].astype(np.uint64)
        stops += np.frombuffer(self._sizes, np.int64)[selected].astype(np.uint64)
        used, which = np.unique(shards, return_inverse=True)
        last = np.zeros(len(used), np.uint64)
        np.maximum.at(last, which, stops)
        ends: dict[int, int] = dict(zip(used.tolist(), last.tolist(), strict=True))
        for entry in self.whole_entries():
            for _, part in entry.slices:
                if part.problem is not None:
                    return None
                ends[part.shard] = max(ends.get(part.shard, 0), part.offset + part.size)
        return ends

    # -- Mapping ------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Entry:
        row = self.find(key)
        if row is None:
            raise KeyError(key)
        return self.entry(row)

    def __contains__(self, key: object) -> bool:
        return self.find(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys if self._rows is None else self._rows)

    def __len__(self) -> int:
        return len(self._keys if self._rows is None else self._rows)
