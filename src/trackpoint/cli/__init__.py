"""The `trackpoint` command: `inspect` and `verify` a checkpoint.

`inspect` reads the `.index` file alone (instant for any checkpoint size) and prints a
table of keys, dtypes, shapes and sizes; `--tensor KEY` prints one tensor's values.
`verify` reads every tensor, checks every checksum and exits non-zero naming each bad
tensor and file. `--json` prints machine-readable output instead of tables.

Exit codes: 0 all good, 1 the checkpoint has problems (verify), 2 it could not be opened
or the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from trackpoint.errors import TrackpointError
from trackpoint.reader import OBJECT_GRAPH_KEY, CheckpointReader, load_checkpoint

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
    ok = not problems
    if args.json:
        record = {"prefix": reader.prefix, "ok": ok, "tensors": len(infos), "problems": problems}
        _print_json(out, record)
    elif ok:
        total = _human(sum(sizes.values()))
        out.print(
            f"[green]ok[/green]: {reader.prefix}: {len(infos)} tensors, {total}, "
            "every checksum matches"
        )
    else:
        out.print(f"[red]{len(problems)} problem(s)[/red] in {reader.prefix}:")
        for problem in problems:
            where = f"'{problem['key']}'" if problem["key"] else "(file)"
            out.print(f"  {where} in {problem['file']}: {problem['error']}", markup=False)
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackpoint", description="Inspect and verify TensorFlow-format checkpoints."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="list a checkpoint's tensors (index only)")
    inspect.add_argument("path", help="a prefix, its .index file, or a folder (its latest)")
    inspect.add_argument("--tensor", metavar="KEY", help="print this tensor's values")
    inspect.add_argument("--max-values", type=int, default=1000, help="elements before eliding")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    verify = commands.add_parser("verify", help="read every tensor and check every checksum")
    verify.add_argument("path", help="a prefix, its .index file, or a folder (its latest)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `trackpoint` command line; return its exit code."""
    args = _parser().parse_args(argv)
    out, err = _consoles()
    try:
        with load_checkpoint(args.path) as reader:
            if args.command == "inspect":
                return _inspect(reader, args, out)
            return _verify(reader, args, out, err)
    except TrackpointError as error:
        if getattr(args, "json", False):
            record = {"error": type(error).__name__, "message": str(error), "file": error.file}
            _print_json(out, record)
        err.print(f"[red]{type(error).__name__}[/red]: {error}", highlight=False)
        return 1 if args.command == "verify" else 2
