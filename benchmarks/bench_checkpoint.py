"""Checkpoint speed side by side (issue 5): trackpoint vs TF, torch, safetensors, np.savez.

Run by hand (never a timed test):

    .venv/bin/python benchmarks/bench_checkpoint.py                 # every case, 3 runs
    .venv/bin/python benchmarks/bench_checkpoint.py --quick         # tiny smoke run
    .venv/bin/python benchmarks/bench_checkpoint.py --cases llm-4g --tools trackpoint,machine

Every (tool, case, operation) is measured in a fresh subprocess (this file with
`--worker`), so no tool profits from another's warm allocator, imports or page cache.
Each worker builds the same state deterministically, warms up as issue 5 says (a save
first writes and deletes one checkpoint, so the timed save reuses freed page cache as a
training run's does; a restore first reads its files into the page cache, or evicts
them with posix_fadvise(DONTNEED) for the cold restore), times one operation, and prints
JSON: seconds and peak extra RSS. The parent runs the runs interleaved (run 1 of every
tool, then run 2, ...) so drift on this noisy machine hits every tool alike, and prints
medians as a markdown table with ratios to each anchor and to the machine's own limits
measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

GIB = 1 << 30
MIB = 1 << 20
#: Issue 5 states throughput in GB/s (10⁹ bytes), memory in GiB.
GB = 1e9
RESULT_MARK = "BENCH_RESULT "
#: A slot in the plan's table cell that did not run: why.
NA_NO_FSYNC = "n/a (no fsync option)"

# --------------------------------------------------------------------------------------
# The state: one spec, materialized by each tool in its own tensors.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A state to checkpoint: `kind` llm (~50 large tensors) or small (many small ones)."""

    name: str
    kind: str
    target_bytes: int
    count: int = 0  # small: how many parameter tensors
    adam: bool = False  # add Adam's m and v for every parameter (3x the state)


CASES: dict[str, Case] = {
    "llm-1g": Case("llm-1g", "llm", GIB),
    "llm-4g": Case("llm-4g", "llm", 4 * GIB),
    "small-20k": Case("small-20k", "small", 200 * MIB, count=20_000),
    "small-20k-adam": Case("small-20k-adam", "small", 200 * MIB, count=20_000, adam=True),
}
#: --quick: the same structures at toy sizes (a smoke run, not a measurement).
QUICK_CASES: dict[str, Case] = {
    "llm-1g": Case("llm-1g", "llm", 4 * MIB),
    "llm-4g": Case("llm-4g", "llm", 8 * MIB),
    "small-20k": Case("small-20k", "small", 2 * MIB, count=200),
    "small-20k-adam": Case("small-20k-adam", "small", 2 * MIB, count=200, adam=True),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor of the state: its group path, name, shape and fill value."""

    group: tuple[str, ...]
    name: str
    shape: tuple[int, ...]
    value: float

    @property
    def flat_name(self) -> str:
        # "." separators: valid in every tool's keys (npz turns "/" into zip folders).
        return ".".join((*self.group, self.name))

    @property
    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)


def _llm_params(target_bytes: int) -> list[tuple[str, tuple[int, ...]]]:
    # A decoder: embedding, 8 blocks of 6 tensors, final norm, lm head = 51 tensors;
    # vocab = 8 x hidden keeps the embedding's share LLM-like at every size.
    layers = 8
    params = target_bytes / 4
    hidden = max(8, round(math.sqrt(params / 112) / 8) * 8)
    vocab = 8 * hidden
    out: list[tuple[str, tuple[int, ...]]] = [("embed", (vocab, hidden))]
    for i in range(layers):
        out += [
            (f"layer{i:02d}_ln1", (hidden,)),
            (f"layer{i:02d}_qkv", (hidden, 3 * hidden)),
            (f"layer{i:02d}_o", (hidden, hidden)),
            (f"layer{i:02d}_ln2", (hidden,)),
            (f"layer{i:02d}_up", (hidden, 4 * hidden)),
            (f"layer{i:02d}_down", (4 * hidden, hidden)),
        ]
    out += [("final_ln", (hidden,)), ("lm_head", (vocab, hidden))]
    return out


def _small_params(case: Case) -> list[tuple[str, tuple[int, ...]]]:
    # 4-256 KiB each, mostly small (mean ~11 KiB, as layer norms, biases and small
    # convs are), drawn once from a fixed seed and scaled to the case's total.
    rng = np.random.default_rng(20_000)
    kib = np.array([4, 8, 16, 32, 64, 128, 256])
    weights = np.array([0.6, 0.24, 0.08, 0.04, 0.025, 0.01, 0.005])
    sizes = rng.choice(kib, size=case.count, p=weights / weights.sum()) * 1024
    sizes = np.maximum(256, (sizes * (case.target_bytes / sizes.sum())).astype(np.int64))
    return [(f"t{i:05d}", (int(size) // 4,)) for i, size in enumerate(sizes)]


def state_spec(case: Case, fill: float) -> list[Entry]:
    """The case's tensors, each filled with its own value (`fill` + a per-tensor offset)."""
    params = _llm_params(case.target_bytes) if case.kind == "llm" else _small_params(case)
    groups: list[tuple[str, ...]] = [("model",)]
    if case.adam:
        groups += [("opt", "m"), ("opt", "v")]
    return [
        Entry(group, name, shape, fill + (i % 97) * 0.5 + g * 1000.0)
        for g, group in enumerate(groups)
        for i, (name, shape) in enumerate(params)
    ]


def nested(entries: Sequence[Entry], tensors: Sequence[Any]) -> dict[str, Any]:
    """{"model": {name: t}, "opt": {"m": {...}, "v": {...}}} — the object structure."""
    root: dict[str, Any] = {}
    for entry, tensor in zip(entries, tensors, strict=True):
        node = root
        for part in entry.group:
            node = node.setdefault(part, {})
        node[entry.name] = tensor
    return root


# --------------------------------------------------------------------------------------
# Tools: how each one builds its tensors, saves and restores into existing tensors.
# --------------------------------------------------------------------------------------


class Tool:
    """One checkpointing tool inside a worker: owns the state as its own tensors."""

    #: Saves into a directory (managers) rather than to a prefix/file.
    directory = False

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = entries

    def save(self, path: str, durable: bool) -> None:
        raise NotImplementedError

    def save_async(self, path: str) -> Callable[[], None]:
        """Start a save; return the function that waits for it."""
        raise NotImplementedError

    def restore(self, path: str) -> None:
        raise NotImplementedError

    def first_values(self) -> list[float]:
        """The first element of each tensor (sampled), to check a restore really happened."""
        raise NotImplementedError


def _fsync_files(paths: Sequence[str]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_files(path: str) -> list[str]:
    """Every file of the checkpoint at `path` (a directory, a prefix or one file)."""
    if os.path.isdir(path):
        return sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
    folder, base = os.path.split(path)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base))


def _sample(n: int) -> list[int]:
    # Checking every one of 60,000 tensors would take longer than some restores.
    return sorted({round(i * (n - 1) / 63) for i in range(64)}) if n > 64 else list(range(n))


class NumpyTool(Tool):
    """Tools that hold the state as NumPy arrays."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.arrays = [np.full(e.shape, e.value, dtype=np.float32) for e in entries]

    def first_values(self) -> list[float]:
        return [float(self.arrays[i].flat[0]) for i in _sample(len(self.arrays))]


class TorchTool(Tool):
    """Tools that hold the state as CPU torch tensors."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.torch: Any = importlib.import_module("torch")
        self.tensors = [
            self.torch.full(e.shape, e.value, dtype=self.torch.float32) for e in entries
        ]
        self.by_name = {e.flat_name: t for e, t in zip(entries, self.tensors, strict=True)}

    def first_values(self) -> list[float]:
        return [float(self.tensors[i].view(-1)[0]) for i in _sample(len(self.tensors))]


def trackpoint_has_async() -> bool:
    """Whether this trackpoint's CheckpointOptions takes `enable_async` (issue 5's async save)."""
    import trackpoint

    return "enable_async" in inspect.signature(trackpoint.CheckpointOptions).parameters


class TrackpointTool(NumpyTool):
    """trackpoint.Checkpoint over NumPy arrays: `write(prefix)`, `read(prefix)` in place."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        import trackpoint

        self.tp = trackpoint
        self.ckpt = trackpoint.Checkpoint(**nested(entries, self.arrays))

    def options(self, durable: bool = False, enable_async: bool = False) -> Any:
        kwargs: dict[str, Any] = {"durable": durable}
        if enable_async:
            kwargs["enable_async"] = True
        return self.tp.CheckpointOptions(**kwargs)

    def save(self, path: str, durable: bool) -> None:
        self.ckpt.write(path, self.options(durable=durable))

    def save_async(self, path: str) -> Callable[[], None]:
        self.ckpt.write(path, self.options(enable_async=True))
        sync: Callable[[], None] = self.ckpt.sync
        return sync

    def restore(self, path: str) -> None:
        self.ckpt.read(path).assert_consumed()


class TrackpointManagerTool(TrackpointTool):
    """trackpoint.CheckpointManager(max_to_keep=1): each save deletes the previous one."""

    directory = True

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.managers: dict[str, Any] = {}

    def _manager(self, path: str) -> Any:
        if path not in self.managers:
            self.managers[path] = self.tp.CheckpointManager(self.ckpt, path, max_to_keep=1)
        return self.managers[path]

    def save(self, path: str, durable: bool) -> None:
        self._manager(path).save(options=self.options(durable=durable))

    def save_async(self, path: str) -> Callable[[], None]:
        manager = self._manager(path)
        manager.save(options=self.options(enable_async=True))
        sync: Callable[[], None] = getattr(manager, "sync", self.ckpt.sync)
        return sync

    def restore(self, path: str) -> None:
        self._manager(path).restore_or_initialize()


class TFTool(Tool):
    """tf.train.Checkpoint over tf.Variables (eager), in modules shaped like the state."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self.tf: Any = importlib.import_module("tensorflow")
        tf = self.tf
        # One array at a time, so building does not hold the state twice.
        self.variables = [tf.Variable(np.full(e.shape, e.value, dtype=np.float32)) for e in entries]
        tree = nested(entries, self.variables)
        self.ckpt = tf.train.Checkpoint(**{k: self._module(v) for k, v in tree.items()})

    def _module(self, tree: dict[str, Any]) -> Any:
        module = self.tf.Module()
        for key, value in tree.items():
            setattr(module, key, self._module(value) if isinstance(value, dict) else value)
        return module

    def save(self, path: str, durable: bool) -> None:
        self.ckpt.write(path)
        if durable:  # TF has no such option: fsync its files afterwards
            _fsync_files(checkpoint_files(path))

    def save_async(self, path: str) -> Callable[[], None]:
        options = self.tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)
        self.ckpt.write(path, options=options)
        sync: Callable[[], None] = self.ckpt.sync
        return sync

    def restore(self, path: str) -> None:
        self.ckpt.read(path).assert_consumed()

    def first_values(self) -> list[float]:
        return [float(self.variables[i].numpy().flat[0]) for i in _sample(len(self.variables))]


class TFManagerTool(TFTool):
    """tf.train.CheckpointManager(max_to_keep=1)."""

    directory = True

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.managers: dict[str, Any] = {}

    def _manager(self, path: str) -> Any:
        if path not in self.managers:
            self.managers[path] = self.tf.train.CheckpointManager(self.ckpt, path, max_to_keep=1)
        return self.managers[path]

    def save(self, path: str, durable: bool) -> None:
        prefix = self._manager(path).save()
        if durable:
            _fsync_files(checkpoint_files(prefix))

    def save_async(self, path: str) -> Callable[[], None]:
        options = self.tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)
        self._manager(path).save(options=options)
        sync: Callable[[], None] = self.ckpt.sync
        return sync

    def restore(self, path: str) -> None:
        self._manager(path).restore_or_initialize()


class TorchSaveTool(TorchTool):
    """torch.save(state_dict) / torch.load + copy_ into the live tensors (load_state_dict)."""

    mmap = False

    def save(self, path: str, durable: bool) -> None:
        with open(path, "wb") as f:
            self.torch.save(self.by_name, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    def restore(self, path: str) -> None:
        loaded = self.torch.load(path, weights_only=True, mmap=self.mmap)
        with self.torch.no_grad():
            for name, tensor in self.by_name.items():
                tensor.copy_(loaded[name])


class TorchMmapTool(TorchSaveTool):
    """torch.load(mmap=True) + copy_: the fastest torch restore."""

    mmap = True


class SafetensorsNumpyTool(NumpyTool):
    """safetensors.numpy save_file / load_file + np.copyto into the live arrays."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.st: Any = importlib.import_module("safetensors.numpy")
        self.by_name = {e.flat_name: a for e, a in zip(entries, self.arrays, strict=True)}

    def save(self, path: str, durable: bool) -> None:
        self.st.save_file(self.by_name, path)
        if durable:  # safetensors has no such option
            _fsync_files([path])

    def restore(self, path: str) -> None:
        loaded = self.st.load_file(path)
        for name, array in self.by_name.items():
            np.copyto(array, loaded[name])


class SafetensorsTorchTool(TorchTool):
    """safetensors.torch save_file / load_file + copy_ into the live tensors."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.st: Any = importlib.import_module("safetensors.torch")

    def save(self, path: str, durable: bool) -> None:
        self.st.save_file(self.by_name, path)
        if durable:
            _fsync_files([path])

    def restore(self, path: str) -> None:
        loaded = self.st.load_file(path)
        with self.torch.no_grad():
            for name, tensor in self.by_name.items():
                tensor.copy_(loaded[name])


class NpzTool(NumpyTool):
    """np.savez (uncompressed) / np.load + np.copyto."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        super().__init__(entries)
        self.by_name = {e.flat_name: a for e, a in zip(entries, self.arrays, strict=True)}

    def save(self, path: str, durable: bool) -> None:
        with open(path, "wb") as f:
            savez: Any = np.savez  # its stubs do not type **arrays
            savez(f, **self.by_name)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    def restore(self, path: str) -> None:
        with np.load(path) as loaded:
            for name, array in self.by_name.items():
                np.copyto(array, loaded[name])


class MachineTool(NumpyTool):
    """The machine's own limits on the same arrays: raw writes/reads, memcpy, crc32c."""

    def save(self, path: str, durable: bool) -> None:
        # Straight from the arrays' buffers, one thread: the page-cache write bandwidth.
        with open(path, "wb", buffering=0) as f:
            for array in self.arrays:
                view = array.data.cast("B")
                while view:
                    view = view[f.write(view) :]
            if durable:
                os.fsync(f.fileno())

    def restore(self, path: str) -> None:
        with open(path, "rb", buffering=0) as f:
            for array in self.arrays:
                view = array.data.cast("B")
                while view:
                    got = f.readinto(view)
                    if not got:
                        raise EOFError(path)
                    view = view[got:]


@dataclasses.dataclass(frozen=True)
class ToolInfo:
    """A row of the table: the tool's class, label, needs and the operations it runs."""

    cls: type[Tool]
    label: str
    modules: tuple[str, ...]
    ops: tuple[str, ...]
    #: The checkpoint format its restore reads (prepared once per case); "" = no restore.
    fmt: str = ""


#: Operations: save, durable (save + fsync), async (how long the call blocks), restore
#: (into existing tensors, page cache warm), cold (restore after evicting the files).
#: The machine row adds memcpy and crc32c; its save/durable/restore/cold are raw I/O.
#: Anchors fsync nothing themselves; their "durable" is the save then an fsync per file,
#: measured only for the fastest anchor (safetensors) and TF to keep the run short.
TOOLS: dict[str, ToolInfo] = {
    "trackpoint": ToolInfo(
        TrackpointTool,
        "trackpoint Checkpoint",
        (),
        ("save", "durable", "async", "restore", "cold"),
        "trackpoint",
    ),
    "trackpoint-manager": ToolInfo(
        TrackpointManagerTool, "trackpoint CheckpointManager", (), ("save", "async")
    ),
    "tf": ToolInfo(
        TFTool,
        "TF tf.train.Checkpoint",
        ("tensorflow",),
        ("save", "durable", "async", "restore", "cold"),
        "tf",
    ),
    "tf-manager": ToolInfo(
        TFManagerTool, "TF CheckpointManager", ("tensorflow",), ("save", "async")
    ),
    "torch": ToolInfo(
        TorchSaveTool,
        "torch.save / torch.load + copy_",
        ("torch",),
        ("save", "restore", "cold"),
        "torch",
    ),
    "torch-mmap": ToolInfo(
        TorchMmapTool, "torch.load(mmap=True) + copy_", ("torch",), ("restore", "cold"), "torch"
    ),
    "safetensors-numpy": ToolInfo(
        SafetensorsNumpyTool,
        "safetensors.numpy",
        ("safetensors",),
        ("save", "durable", "restore", "cold"),
        "safetensors",
    ),
    "safetensors-torch": ToolInfo(
        SafetensorsTorchTool,
        "safetensors.torch",
        ("safetensors", "torch"),
        ("save", "restore", "cold"),
        "safetensors",
    ),
    "npz": ToolInfo(NpzTool, "np.savez / np.load", (), ("save", "restore", "cold"), "npz"),
    "machine": ToolInfo(
        MachineTool,
        "machine limit",
        ("crc32c",),
        ("save", "durable", "restore", "cold", "memcpy", "crc32c"),
        "raw",
    ),
}
#: Which tool writes each restore format once per case.
FORMAT_WRITER = {
    "trackpoint": "trackpoint",
    "tf": "tf",
    "torch": "torch",
    "safetensors": "safetensors-numpy",
    "npz": "npz",
    "raw": "machine",
}


# --------------------------------------------------------------------------------------
# The worker: one operation in a fresh process.
# --------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    # Linux ≥ 4.0: writing 5 resets VmHWM to the current RSS, so the peak seen after the
    # timed operation is that operation's own (not the build's or the warm-up's).
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _read_through(paths: Sequence[str]) -> None:
    buffer = bytearray(16 * MIB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def _evict(paths: Sequence[str]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        for p in checkpoint_files(path):
            os.unlink(p)


def _ckpt_path(workdir: str, tool: ToolInfo, name: str) -> str:
    if tool.cls.directory:
        return os.path.join(workdir, name)
    return os.path.join(workdir, f"{name}.ckpt")


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the state, warm up, time one operation; return seconds and peak extra RSS."""
    case = Case(**spec["case"])
    info = TOOLS[spec["tool"]]
    op: str = spec["op"]
    workdir: str = spec["workdir"]
    os.makedirs(workdir, exist_ok=True)
    saved = state_spec(case, fill=1.0)
    restoring = op in ("restore", "cold")
    # A restore starts from other values, so a restore that did nothing is caught.
    entries = state_spec(case, fill=-5000.0) if restoring else saved
    tool = info.cls(entries)
    result: dict[str, Any] = {}

    if op == "prepare":  # write the checkpoint the restore runs read, durably
        tool.save(spec["path"], durable=True)
        return {"seconds": 0.0}

    timed: Callable[[], Any]
    after: Callable[[], None] = lambda: None  # noqa: E731 - a default no-op
    if op in ("save", "durable"):
        durable = op == "durable"
        warm = _ckpt_path(workdir, info, "warm")
        target = warm if info.cls.directory else _ckpt_path(workdir, info, "timed")
        tool.save(warm, durable)
        if not info.cls.directory:  # a manager deletes the previous save itself
            _remove(warm)
        timed = lambda: tool.save(target, durable)  # noqa: E731
    elif op == "async":
        assert isinstance(tool, (TrackpointTool, TFTool))
        warm = _ckpt_path(workdir, info, "warm")
        target = warm if info.cls.directory else _ckpt_path(workdir, info, "timed")
        tool.save_async(warm)()
        if not info.cls.directory:
            _remove(warm)
        waiter: list[Callable[[], None]] = []
        timed = lambda: waiter.append(tool.save_async(target))  # noqa: E731

        def after() -> None:
            start = time.perf_counter()
            waiter[0]()
            result["wait_seconds"] = time.perf_counter() - start

    elif restoring:
        files = checkpoint_files(spec["path"])
        if op == "cold":
            _evict(files)
        else:
            _read_through(files)
        timed = lambda: tool.restore(spec["path"])  # noqa: E731
    elif op == "memcpy":
        assert isinstance(tool, MachineTool)
        dst = [np.full_like(a, -1.0) for a in tool.arrays]  # touched: no fresh pages
        pairs = list(zip(dst, tool.arrays, strict=True))

        def timed() -> None:
            for d, s in pairs:
                np.copyto(d, s)

        timed()  # warm-up
    elif op == "crc32c":
        assert isinstance(tool, MachineTool)
        crc: Any = importlib.import_module("crc32c")
        views = [a.data.cast("B") for a in tool.arrays]

        def timed() -> None:
            for v in views:
                crc.crc32c(v)

        timed()
    else:
        raise ValueError(f"unknown operation {op!r}")

    rss_before = _status_bytes("VmRSS")
    exact_peak = _reset_peak_rss()
    start = time.perf_counter()
    timed()
    result["seconds"] = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    after()
    result["extra_rss"] = max(0, peak - rss_before) if exact_peak else None
    if restoring:
        expect = [saved[i].value for i in _sample(len(saved))]
        got = tool.first_values()
        if got != expect:
            raise AssertionError(f"restore did not restore the values: {got[:4]} != {expect[:4]}")
    return result


# --------------------------------------------------------------------------------------
# The parent: plan, run, collect medians, print the table.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    """The runs of one (tool, case, op)."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    extra_rss: list[int] = dataclasses.field(default_factory=list)
    wait_seconds: list[float] = dataclasses.field(default_factory=list)
    note: str = ""  # why it did not run / failed

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def rss(self) -> int | None:
        return int(statistics.median(self.extra_rss)) if self.extra_rss else None


def missing_module(modules: Sequence[str]) -> str | None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            return f"skipped: {m} is not installed"
    return None


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The machine notes: these OpenBLAS hints slow NumPy-heavy work on this VM.
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its result, or {"error": ...}."""
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_worker_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            out: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return out
    # The last line names the exception; "|" would split a markdown cell.
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return {"error": f"exit {proc.returncode}: {tail[0][:160]}".replace("|", "/")}


def state_bytes(case: Case) -> tuple[int, int]:
    entries = state_spec(case, 0.0)
    return sum(e.nbytes for e in entries), len(entries)


def run_case(
    case: Case,
    tools: dict[str, tuple[str, ...]],
    runs: int,
    root: str,
    timeout: float,
    log: Callable[[str], None],
) -> dict[tuple[str, str], Cell]:
    """Every (tool, op) of the case, runs interleaved; the prepared files removed after."""
    cells: dict[tuple[str, str], Cell] = {}
    casedir = os.path.join(root, case.name)
    os.makedirs(casedir, exist_ok=True)
    has_async = trackpoint_has_async()
    plan: list[tuple[str, str]] = []
    for name, ops in tools.items():
        info = TOOLS[name]
        missing = missing_module(info.modules)
        for op in ops:
            cell = cells[name, op] = Cell()
            if missing:
                cell.note = missing
            elif op == "async" and name.startswith("trackpoint") and not has_async:
                cell.note = "n/a: this trackpoint has no CheckpointOptions(enable_async)"
            else:
                plan.append((name, op))
    prepared: dict[str, str] = {}
    for name, op in plan:
        fmt = TOOLS[name].fmt
        if op in ("restore", "cold") and fmt not in prepared:
            writer = FORMAT_WRITER[fmt]
            path = os.path.join(casedir, f"restore-{fmt}.ckpt")
            log(f"  prepare {fmt} checkpoint")
            out = spawn(
                {
                    "case": dataclasses.asdict(case),
                    "tool": writer,
                    "op": "prepare",
                    "workdir": casedir,
                    "path": path,
                },
                timeout,
            )
            prepared[fmt] = path if "error" not in out else "error: " + out["error"]
    for run in range(runs):
        for name, op in plan:
            cell = cells[name, op]
            path = prepared.get(TOOLS[name].fmt, "")
            if op in ("restore", "cold") and path.startswith("error"):
                cell.note = f"prepare failed ({path})"
                continue
            workdir = os.path.join(casedir, f"w-{name}-{op}")
            spec = {
                "case": dataclasses.asdict(case),
                "tool": name,
                "op": op,
                "workdir": workdir,
                "path": path,
            }
            started = time.perf_counter()
            out = spawn(spec, timeout)
            shutil.rmtree(workdir, ignore_errors=True)
            if "error" in out:
                cell.note = "error: " + out["error"]
                log(f"  run {run + 1} {name} {op}: {cell.note}")
                continue
            cell.seconds.append(out["seconds"])
            if out.get("extra_rss") is not None:
                cell.extra_rss.append(out["extra_rss"])
            if "wait_seconds" in out:
                cell.wait_seconds.append(out["wait_seconds"])
            log(
                f"  run {run + 1} {name:<18} {op:<8} {out['seconds']:8.3f} s"
                f"  (worker {time.perf_counter() - started:5.1f} s)"
            )
    shutil.rmtree(casedir, ignore_errors=True)
    return cells


# -- the report ------------------------------------------------------------------------

OP_COLUMNS = (
    ("save", "save"),
    ("durable", "durable save (fsync)"),
    ("async", "async save: call blocks"),
    ("restore", "restore in place"),
    ("cold", "cold-cache restore"),
)
#: What each anchor ratio compares trackpoint to.
ANCHORS = (
    ("tf", "TF tf.train.Checkpoint"),
    ("tf-manager", "TF CheckpointManager"),
    ("torch", "torch.save / torch.load"),
    ("torch-mmap", "torch.load(mmap=True)"),
    ("safetensors-numpy", "safetensors.numpy"),
    ("safetensors-torch", "safetensors.torch"),
    ("npz", "np.savez"),
)


def _gbps(nbytes: int, seconds: float | None) -> float | None:
    return nbytes / seconds / GB if seconds else None


def _fmt_rate(nbytes: int, cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.median is None:
        return cell.note or "n/a"
    return f"{nbytes / cell.median / GB:.2f} GB/s ({cell.median:.3f} s)"


def _fmt_size(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= 100 * MIB else f"{nbytes / MIB:.1f} MiB"


def _fmt_rss(value: int | None) -> str:
    if value is None:
        return ""
    return f"+{value / GIB:.2f} GiB" if value >= 100 * MIB else f"+{value / MIB:.0f} MiB"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def render_case(case: Case, cells: dict[tuple[str, str], Cell], tools: Sequence[str]) -> str:
    nbytes, count = state_bytes(case)
    lines = [
        f"### {case.name}: {_fmt_size(nbytes)} in {count:,} float32 tensors"
        + (" (parameters + Adam m and v)" if case.adam else ""),
        "",
        "| tool | "
        + " | ".join(title for _, title in OP_COLUMNS)
        + " | +RSS save | +RSS restore |",
        "|---" * (len(OP_COLUMNS) + 3) + "|",
    ]
    for name in tools:
        if name == "machine":
            continue
        row = [TOOLS[name].label]
        for op, _ in OP_COLUMNS:
            cell = cells.get((name, op))
            text = _fmt_rate(nbytes, cell)
            if op == "async" and cell is not None and cell.median is not None and cell.wait_seconds:
                done = statistics.median(cell.wait_seconds)
                text = f"{cell.median:.3f} s (write done {done:.2f} s later)"
            if op == "durable" and cell is not None and name != "trackpoint" and cell.median:
                text += " ᶠ"
            row.append(text or "—")
        save_cell = cells.get((name, "save"))
        restore_cell = cells.get((name, "restore"))
        row.append(_fmt_rss(save_cell.rss) if save_cell else "")
        row.append(_fmt_rss(restore_cell.rss) if restore_cell else "")
        lines.append("| " + " | ".join(row) + " |")
    machine = {op: cells.get(("machine", op)) for op in TOOLS["machine"].ops}
    if "machine" in tools:
        lines += [
            "",
            "Machine limits, same run, one thread, on the same arrays: "
            + "; ".join(
                f"{label} {_fmt_rate(nbytes, machine[op])}"
                for op, label in (
                    ("save", "write to page cache"),
                    ("durable", "write+fsync"),
                    ("restore", "read into existing arrays (cached)"),
                    ("cold", "read after eviction"),
                    ("memcpy", "memcpy"),
                    ("crc32c", "crc32c"),
                )
                if machine[op] is not None
            )
            + ".",
        ]
    lines += ["", ratio_table(nbytes, cells, tools)]
    return "\n".join(lines)


def _median(cells: dict[tuple[str, str], Cell], name: str, op: str) -> float | None:
    cell = cells.get((name, op))
    return cell.median if cell else None


def ratio_table(nbytes: int, cells: dict[tuple[str, str], Cell], tools: Sequence[str]) -> str:
    """trackpoint's throughput ÷ each anchor's (>1 = trackpoint faster), and ÷ the limits."""
    ops = ("save", "durable", "restore", "cold")
    lines = [
        "| trackpoint ÷ | save | durable save | restore in place | cold-cache restore |",
        "|---|---|---|---|---|",
    ]
    ours = {op: _median(cells, "trackpoint", op) for op in ops}
    for name, label in ANCHORS:
        if name not in tools:
            continue
        lines.append(
            f"| {label} | "
            + " | ".join(
                _ratio(_median(cells, name, op), ours[op])  # time ratio = throughput ratio
                for op in ops
            )
            + " |"
        )
    if "machine" in tools:
        limits = {
            "save": "write",
            "durable": "write+fsync",
            "restore": "memcpy",
            "cold": "cold read",
        }
        limit_ops = {"save": "save", "durable": "durable", "restore": "memcpy", "cold": "cold"}
        lines.append(
            "| machine limit | "
            + " | ".join(
                f"{_ratio(_median(cells, 'machine', limit_ops[op]), ours[op])} of {limits[op]}"
                for op in ops
            )
            + " |"
        )
    return "\n".join(lines)


def check_targets(
    case: Case, cells: dict[tuple[str, str], Cell]
) -> list[tuple[str, bool | None, str]]:
    """Issue 5's targets for one case: (target, met (None = not measured), the numbers)."""
    nbytes, _ = state_bytes(case)
    out: list[tuple[str, bool | None, str]] = []

    def m(name: str, op: str) -> float | None:
        return _median(cells, name, op)

    def rate(name: str, op: str) -> float | None:
        return _gbps(nbytes, m(name, op))

    def ratio_check(label: str, ours: float | None, theirs: float | None, need: float) -> None:
        if ours is None or theirs is None:
            out.append((label, None, "not measured"))
        else:
            out.append((label, ours / theirs >= need, f"{ours / theirs:.2f}x (need ≥ {need}x)"))

    save = rate("trackpoint", "save")
    ratio_check("save ≥ 2.5x TF", save, rate("tf", "save"), 2.5)
    st_rates = [
        r for r in (rate("safetensors-numpy", "save"), rate("safetensors-torch", "save")) if r
    ]
    ratio_check(
        "save ≥ 1.0x safetensors (faster of numpy/torch)", save, max(st_rates, default=None), 1.0
    )
    ratio_check("save ≥ 80% raw page-cache write", save, rate("machine", "save"), 0.8)
    ratio_check(
        "durable save ≥ 85% raw write+fsync",
        rate("trackpoint", "durable"),
        rate("machine", "durable"),
        0.85,
    )
    restore = rate("trackpoint", "restore")
    ratio_check("restore ≥ 5x TF", restore, rate("tf", "restore"), 5.0)
    ratio_check("restore ≥ 60% memcpy", restore, rate("machine", "memcpy"), 0.6)
    blocks, memcpy = m("trackpoint", "async"), m("machine", "memcpy")
    # The sync save a user gets by default is durable (fsync, then commit); the one to the
    # page cache (durable=False) is the faster, stricter yardstick. Both are reported.
    for label, sync in (
        ("the default (durable) sync save", m("trackpoint", "durable")),
        ("the page-cache sync save", m("trackpoint", "save")),
    ):
        target = f"async save blocks ≤ 20% of {label}"
        if blocks is None or sync is None:
            out.append((target, None, "not measured"))
        else:
            out.append((target, blocks <= 0.2 * sync, f"{blocks:.3f} s = {blocks / sync:.0%}"))
    if blocks is None or memcpy is None:
        out.append(("async save blocks ≤ 1.5x memcpy", None, "not measured"))
    else:
        out.append(
            (
                "async save blocks ≤ 1.5x memcpy",
                blocks <= 1.5 * memcpy,
                f"{blocks:.3f} s = {blocks / memcpy:.2f}x memcpy",
            )
        )
    if case.kind == "small":
        for op in ("save", "restore"):
            ratio_check(f"small tensors: {op} ≥ 3x TF", rate("trackpoint", op), rate("tf", op), 3.0)
    # "At most 5% of the state (plus a fixed few MiB)": 8 MiB covers what does not grow with
    # the state (a reader thread's stack and malloc arena, two 1 MiB read buffers).
    allowance = 0.05 * nbytes + 8 * MIB
    for op in ("save", "restore"):
        cell = cells.get(("trackpoint", op))
        if cell is None or cell.rss is None:
            out.append((f"{op}: extra memory ≤ 5% + 8 MiB", None, "not measured"))
        else:
            out.append(
                (
                    f"{op}: extra memory ≤ 5% + 8 MiB",
                    cell.rss <= allowance,
                    f"{_fmt_rss(cell.rss)} ({cell.rss / nbytes:.1%} of the state)",
                )
            )
    cell = cells.get(("trackpoint", "async"))
    if cell is not None and cell.rss is not None:
        out.append(
            (
                "async: extra memory ≤ one host copy + 16 MiB",
                cell.rss <= nbytes + 16 * MIB,
                f"{_fmt_rss(cell.rss)} ({cell.rss / nbytes:.0%} of the state)",
            )
        )
    return out


def render_targets(results: Sequence[tuple[Case, dict[tuple[str, str], Cell]]]) -> str:
    lines = ["| case | target | met | measured |", "|---|---|---|---|"]
    for case, cells in results:
        for label, met, numbers in check_targets(case, cells):
            mark = "—" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {case.name} | {label} | {mark} | {numbers} |")
    return "\n".join(lines)


def machine_line() -> str:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem = int(f.readline().split()[1]) * 1024
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu or platform.processor()}), "
        f"{mem / GIB:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, NumPy {np.__version__}"
    )


def versions(tools: Sequence[str]) -> str:
    wanted = {"trackpoint", "tensorflow", "torch", "safetensors", "crc32c"}
    out = []
    for dist in sorted(wanted):
        with contextlib.suppress(Exception):
            out.append(f"{dist} {importlib.metadata.version(dist)}")
    for dist in ("tensorflow-cpu",):
        with contextlib.suppress(Exception):
            out.append(f"{dist} {importlib.metadata.version(dist)}")
    return ", ".join(out)


def parse_tools(text: str) -> dict[str, tuple[str, ...]]:
    """`trackpoint,tf:save+restore` -> {tool: its operations} (all of its own by default)."""
    out: dict[str, tuple[str, ...]] = {}
    for item in filter(None, text.split(",")):
        name, _, ops = item.partition(":")
        if name not in TOOLS:
            raise SystemExit(f"unknown tool {name!r}; choose from {list(TOOLS)}")
        chosen = tuple(ops.split("+")) if ops else TOOLS[name].ops
        wrong = [op for op in chosen if op not in TOOLS[name].ops]
        if wrong:
            raise SystemExit(f"{name} has no operation {wrong}; it has {TOOLS[name].ops}")
        out[name] = chosen
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES)
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="comma-separated, each TOOL or TOOL:OP+OP: " + ", ".join(TOOLS),
    )
    parser.add_argument(
        "--case-tools",
        action="append",
        default=[],
        metavar="CASE=TOOL[:OP+OP],...",
        help="this case runs only these tools/operations (e.g. llm-4g=trackpoint,tf:save)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per cell (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes: a smoke run, not a measurement"
    )
    parser.add_argument(
        "--dir", default=None, help="where checkpoints go (default: a temp dir on disk)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    parser.add_argument("--json", default=None, help="also write the raw runs here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(RESULT_MARK + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    table = QUICK_CASES if args.quick else CASES
    runs = args.runs or (1 if args.quick else 3)
    cases = [table[c] for c in args.cases.split(",") if c]
    tools = parse_tools(args.tools)
    per_case: dict[str, dict[str, tuple[str, ...]]] = {}
    for item in args.case_tools:
        name, _, chosen = item.partition("=")
        per_case[name] = parse_tools(chosen)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    root = args.dir or tempfile.mkdtemp(
        prefix="trackpoint-bench-",
        dir=os.environ.get("TMPDIR", "/var/tmp"),  # noqa: S108 - on disk, not tmpfs
    )
    started = time.perf_counter()
    results: list[tuple[Case, dict[tuple[str, str], Cell]]] = []
    sections = []
    try:
        for case in cases:
            case_tools = per_case.get(case.name, tools)
            plan = ", ".join(t + ":" + "+".join(o) for t, o in case_tools.items())
            log(f"{case.name}: {plan}")
            cells = run_case(case, case_tools, runs, root, args.timeout, log)
            results.append((case, cells))
            sections.append(render_case(case, cells, list(case_tools)))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(
        f"## Checkpoint benchmark ({'QUICK smoke run, toy sizes' if args.quick else 'medians'})\n"
    )
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {machine_line()}")
    print(f"- versions: {versions(list(tools))}")
    print(f"- runs per cell: {runs} (median); wall time {elapsed / 60:.1f} min")
    print(
        "- GB/s = state bytes / median seconds (10⁹ B); ratios are throughput ÷ throughput "
        "(> 1: trackpoint is faster); ᶠ = the tool's save followed by an fsync per file "
        "(it has no durable option); cold = after posix_fadvise(DONTNEED) on every file; "
        "— = not measured in this run."
    )
    print()
    print("\n\n".join(sections))
    print("\n### Issue 5 targets\n")
    print(render_targets(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    case.name: {f"{t}/{o}": dataclasses.asdict(c) for (t, o), c in cells.items()}
                    for case, cells in results
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
