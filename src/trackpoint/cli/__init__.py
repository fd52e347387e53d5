"""The `trackpoint` command: `inspect` and `verify` a checkpoint.

`inspect` reads the `.index` file alone (instant for any checkpoint size) and prints a
table of keys, dtypes, shapes and sizes; `--tensor KEY` prints one tensor's values.
`verify` reads every tensor, checks every checksum and exits non-zero naming each bad
tensor and file; `verify DIR --all` does so for every checkpoint the folder holds.
`--json` prints machine-readable output instead of tables.

Exit codes: 0 all good, 1 a checkpoint has problems (verify), 2 nothing could be opened
or the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import CheckpointNotFoundError, TrackpointError
from trackpoint.reader import (
    OBJECT_GRAPH_KEY,
    CheckpointReader,
    checkpoints_in,
    load_checkpoint,
    resolve_prefix,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from trackpoint.format import TensorInfo

__all__ = ["main"]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _consoles() -> tuple[Console, Console]:
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - rich is a core dependency
        sys.stderr.write("the trackpoint command needs rich: pip install 'rich>=13'\n")
        raise SystemExit(2) from None
    return Console(), Console(stderr=True)


def _print_json(out: Console, record: dict[str, Any]) -> None:
    """Print `record` as indented JSON, plainly.

    Rich's highlighter takes minutes on the index of a 100k-variable checkpoint; JSON is
    for programs.
    """
    out.file.write(json.dumps(record, ensure_ascii=False, indent=2) + "\n")


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _info_json(info: TensorInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "dtype": info.dtype.name,
        "shape": list(info.shape),
        "size": info.size,
        "shard": info.shard,
        "sliced": info.sliced,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _tensor_values(array: np.ndarray[Any, Any]) -> Any:
    if array.dtype.kind == "O":
        return _jsonable(array.tolist())
    if array.dtype.kind == "V" or (array.dtype.itemsize < 4 and array.dtype.kind == "f"):
        # ml_dtypes (bfloat16, float8, int4, ...) print through float32/int64.
        wide = np.float64 if "float" in array.dtype.name else np.int64
        return _jsonable(array.astype(wide).tolist())
    return _jsonable(array.tolist())


def _inspect(reader: CheckpointReader, args: argparse.Namespace, out: Console) -> int:
    bundle = reader.bundle
    if args.tensor is not None:
        info = bundle.info(args.tensor)
        array = reader.get_tensor(args.tensor)
        if args.json:
            record = _info_json(info) | {"values": _tensor_values(array)}
            _print_json(out, record)
        else:
            out.print(f"[bold]{info.key}[/bold]  {info.dtype.name} {_shape(info.shape)}")
            with np.printoptions(threshold=args.max_values, edgeitems=3, linewidth=100):
                out.print(str(array), markup=False, highlight=False)
        return 0
    infos = list(bundle.infos())
    total = sum(i.size for i in infos)
    elements = sum(int(np.prod(i.shape, dtype=object)) for i in infos if i.key != OBJECT_GRAPH_KEY)
    kind = "object-based (TF2)" if reader.is_object_based else "name-based (TF1)"
    if args.json:
        record = {
            "prefix": reader.prefix,
            "format": "object" if reader.is_object_based else "name",
            "num_shards": bundle.num_shards,
            "data_files": [bundle.data_path(i) for i in range(bundle.num_shards)],
            "tensors": [_info_json(i) for i in infos],
            "total_bytes": total,
            "total_elements": elements,
        }
        _print_json(out, record)
        return 0
    from rich.table import Table

    table = Table(title=f"{reader.prefix}  ·  {kind}  ·  {bundle.num_shards} data file(s)")
    table.add_column("key", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    table.add_column("shard", justify="right")
    for info in infos:
        shard = "sliced" if info.sliced else str(info.shard)
        table.add_row(info.key, info.dtype.name, _shape(info.shape), _human(info.size), shard)
    table.caption = f"{len(infos)} tensors · {elements:,} elements · {_human(total)}"
    if not out.is_terminal:
        # Piped output has no width to respect: keep every key on one line.
        longest = max((len(i.key) for i in infos), default=0)
        out.width = max(out.width, longest + 50)
    out.print(table)
    return 0


def _verify(reader: CheckpointReader, args: argparse.Namespace, out: Console, err: Console) -> int:
    record = _verify_record(reader, args, err)
    if args.json:
        _print_json(out, record)
    else:
        _print_verified(out, record)
        folder = args.path if os.path.isdir(args.path) else None
        others = 0 if folder is None else len(checkpoints_in(folder)) - 1
        if others > 0:
            out.print(
                f"{others} other checkpoint(s) in '{folder}' not checked; "
                f"`trackpoint verify {folder} --all` checks every one",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return 0 if record["ok"] else 1


def _verify_all(args: argparse.Namespace, out: Console, err: Console) -> int:
    """`verify --all`: every checkpoint of the folder; 1 if any is bad, 2 if there is none."""
    folder = args.path if os.path.isdir(args.path) else os.path.dirname(resolve_prefix(args.path))
    prefixes = checkpoints_in(folder or ".")
    if not prefixes:
        raise CheckpointNotFoundError(
            f"no checkpoint in '{folder}': it holds no '.index' files",
            file=folder,
        )
    records = []
    for prefix in prefixes:
        try:
            with CheckpointReader(prefix) as reader:
                record = _verify_record(reader, args, err)
        except TrackpointError as error:
            problem = {"key": None, "file": error.file, "error": f"{type(error).__name__}: {error}"}
            record = {"prefix": prefix, "ok": False, "tensors": None, "problems": [problem]}
        records.append(record)
        if not args.json:
            _print_verified(out, record)
    ok = all(r["ok"] for r in records)
    if args.json:
        _print_json(out, {"folder": folder, "ok": ok, "checkpoints": records})
    else:
        bad = sum(not r["ok"] for r in records)
        summary = f"{len(records)} checkpoint(s) in '{folder}': " + (
            "all verified" if ok else f"{bad} with problems"
        )
        out.print(summary, markup=False, highlight=False, soft_wrap=True)
    return 0 if ok else 1


def _print_verified(out: Console, record: dict[str, Any]) -> None:
    if record["ok"]:
        out.print(
            f"[green]ok[/green]: {record['prefix']}: {record['tensors']} tensors, "
            f"{_human(record['bytes'])}, every checksum matches",
            highlight=False,
            soft_wrap=True,
        )
        return
    problems = record["problems"]
    out.print(
        f"[red]{len(problems)} problem(s)[/red] in {record['prefix']}:",
        highlight=False,
        soft_wrap=True,
    )
    for problem in problems:
        where = f"'{problem['key']}'" if problem["key"] else "(file)"
        out.print(
            f"  {where} in {problem['file']}: {problem['error']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _verify_record(
    reader: CheckpointReader, args: argparse.Namespace, err: Console
) -> dict[str, Any]:
    """Read every tensor of `reader`'s checkpoint; its JSON record (`ok`, `problems`, ...)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    bundle = reader.bundle
    infos = list(bundle.infos())
    problems: list[dict[str, Any]] = []
    for shard in range(bundle.num_shards):
        path = bundle.data_path(shard)
        if not os.path.isfile(path):
            problems.append({"key": None, "file": path, "error": "data file is missing"})
    sizes = {i.key: i.size for i in infos}
    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        console=err,
        disable=args.json or not sys.stderr.isatty(),
        transient=True,
    )
    with progress:
        task = progress.add_task("verify", total=sum(sizes.values()))
        for key, error in bundle.verify():
            if error is not None:
                file = getattr(error, "file", None)
                problems.append({"key": key, "file": file, "error": str(error)})
            progress.advance(task, sizes[key])
    return {
        "prefix": reader.prefix,
        "ok": not problems,
        "tensors": len(infos),
        "bytes": sum(sizes.values()),
        "problems": problems,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackpoint",
        description="Inspect and verify TensorFlow-format checkpoints.",
        epilog="Exit codes: 0 all good, 1 a checkpoint has problems (verify), 2 nothing "
        "could be opened or the command line was wrong.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="list a checkpoint's tensors (index only)")
    inspect.add_argument("path", help="a prefix, its .index file, or a folder (its latest)")
    inspect.add_argument("--tensor", metavar="KEY", help="print this tensor's values")
    inspect.add_argument("--max-values", type=int, default=1000, help="elements before eliding")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    verify = commands.add_parser(
        "verify",
        help="read every tensor and check every checksum",
        description="Read every tensor and check every checksum. Exit codes: 0 all good, "
        "1 a checkpoint has problems, 2 nothing could be opened or the command line was wrong.",
    )
    verify.add_argument("path", help="a prefix, its .index file, or a folder (its latest)")
    verify.add_argument(
        "--all", action="store_true", help="check every checkpoint the folder holds"
    )
    verify.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `trackpoint` command line; return its exit code."""
    args = _parser().parse_args(argv)
    out, err = _consoles()
    try:
        if args.command == "verify" and args.all:
            return _verify_all(args, out, err)
        with load_checkpoint(args.path) as reader:
            if args.command == "inspect":
                return _inspect(reader, args, out)
            return _verify(reader, args, out, err)
    except TrackpointError as error:
        if getattr(args, "json", False):
            record = {"error": type(error).__name__, "message": str(error), "file": error.file}
            _print_json(out, record)
        err.print(f"[red]{type(error).__name__}[/red]: {error}", highlight=False)
        return 2  # nothing could be opened (a problem found inside one is 1)
