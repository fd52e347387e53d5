"""Reading checkpoints by key, as `tf.train.load_checkpoint` and `tf.train.list_variables` do.

Accepts what users have at hand: a prefix (`runs/a/ckpt-3`), the `.index` or a `.data-…`
file of it, a folder with a `checkpoint` state file (its latest checkpoint), a SavedModel
folder or its `variables/` folder. When nothing is there, the error lists what the folder
holds instead.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from . import storage
from .errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    UnsupportedLocationError,
)
from .format import DATA_MARK as _DATA_MARK
from .format import DATA_SUFFIX as _DATA_SUFFIX_PATTERN
from .format import INDEX_SUFFIX as _INDEX_SUFFIX
from .format import (
    STAGING_MARK,
    STATE_FILENAME,
    TEMP_MARK,
    BundleReader,
    DType,
    find_staged,
    finish_interrupted_overwrite,
    is_complete,
    is_outside,
    read_checkpoint_state,
)
from .format import index_file_name as _index_file_name
from .format import latest_checkpoint as _latest_in_folder

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ._typing import PathLike

__all__ = [
    "CheckpointReader",
    "broken_checkpoint_error",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "whole_checkpoint_problem",
]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_DATA_SUFFIX = re.compile(_DATA_SUFFIX_PATTERN + "$")
_NUMBER = re.compile(r"(\d+)")


# A scheme of two letters or more: `C:\\runs` and `c:/runs` are Windows drives, not URLs.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")


def local_path(path: PathLike, *, action: str = "using") -> str:
    """`path` as a local file-system path, refusing a URL other than a local `file://` one.

    Object storage is not built yet (docs/storage.md): without this check a URL would be
    taken as a relative path and a save would write a local folder named `s3:`.

    Args:
        path: What the user passed as a checkpoint prefix or folder.
        action: What is being done with it, for the message (`saving to`, `reading`).

    Returns:
        The path, with a `file://` URL turned into the local path it names.

    Raises:
        UnsupportedLocationError: `path` is a URL (`s3://`, `gs://`, a remote `file://`).

    Example:
        >>> local_path("file:///tmp/run/ckpt")
        '/tmp/run/ckpt'
        >>> local_path("s3://bucket/ckpt")
        Traceback (most recent call last):
        ...
        trackpoint.errors.UnsupportedLocationError: using 's3://bucket/ckpt': object storage ...
    """
    p = os.fspath(path)
    match = _URL.match(p)
    if match is None:
        return p
    scheme = match.group(1).lower()
    if scheme == "file":
        parts = urllib.parse.urlsplit(p)
        if parts.netloc in ("", "localhost"):
            return urllib.parse.unquote(parts.path)
    raise UnsupportedLocationError(
        f"{action} '{p}': object storage ('{scheme}://') is not supported yet, and trackpoint "
        f"does not take a URL for a local folder named '{scheme}:'; use a local path (a "
        "mounted bucket's local path works), and copy the checkpoint to the bucket after",
        url=p,
        scheme=scheme,
    )


def latest_checkpoint(folder: PathLike, *, filename: str = STATE_FILENAME) -> str | None:
    """The prefix of the latest checkpoint in `folder`, or None when it has none.

    As `tf.train.latest_checkpoint`, but "no checkpoint" and "cannot read the checkpoints"
    never look alike: see `trackpoint.format.latest_checkpoint` for the rules. A URL is
    refused, never answered with None (which would start training afresh).

    Raises:
        UnsupportedLocationError: `folder` is a URL (`s3://`, `gs://`).
        CorruptCheckpointError: the state file exists but cannot be read.
        CheckpointNotFoundError: the state file names a checkpoint that is gone and the
            folder has no other complete one.
    """
    local = local_path(folder, action="looking for checkpoints in")
    return _latest_in_folder(local, filename=filename)


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in _NUMBER.split(name)]


def checkpoints_in(folder: PathLike) -> list[str]:
    """The prefixes of all checkpoints (files ending in `.index`) in `folder`, in natural order.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in (10, 9):
        ...     _ = (d / f"ckpt-{n}.index").write_bytes(b"")
        >>> [os.path.basename(p) for p in checkpoints_in(d)]
        ['ckpt-9', 'ckpt-10']
    """
    folder = os.fspath(folder)
    names = _listdir(folder)
    # A staged copy or a temp file of a save is part of a checkpoint, not one of its own.
    prefixes = [
        n[: -len(_INDEX_SUFFIX)]
        for n in names
        if n.endswith(_INDEX_SUFFIX)
        and len(n) > len(_INDEX_SUFFIX)
        and STAGING_MARK not in n
        and TEMP_MARK not in n
    ]
    return [os.path.join(folder, p) for p in sorted(prefixes, key=_natural_key)]


def _holds(folder: str) -> str:
    found = [os.path.basename(p) for p in checkpoints_in(folder)]
    if not found:
        return (
            "the folder holds no checkpoint"
            if os.path.isdir(folder)
            else (f"the folder '{folder}' does not exist")
        )
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    return f"the folder holds {shown}"


def _strip_file_name(path: str) -> str:
    """The prefix of `path` when it names a checkpoint's `.index` or data file, else `path`.

    A file name whose file is gone counts when its prefix has a staged copy (the file is
    there again once the interrupted overwrite is finished).
    """
    if path.endswith(_INDEX_SUFFIX):
        prefix = path[: -len(_INDEX_SUFFIX)]
    elif _DATA_SUFFIX.search(path):
        prefix = _DATA_SUFFIX.sub("", path)
    else:
        return path
    return prefix if _is_file(path) or find_staged(prefix) else path


def _is_file(path: str) -> bool:
    found = storage.current().stat(path)
    return found is not None and found.is_file


def resolve_prefix(path: PathLike) -> str:
    """Turn what a user passed into the prefix of one checkpoint, repaired to be read.

    Raises:
        CheckpointNotFoundError: nothing readable is there; the message lists what is.
        CorruptCheckpointError: the folder's state file cannot be read.
    """
    p = local_path(path, action="reading")
    if os.path.isdir(p):
        return _resolve_folder(p)
    p = _strip_file_name(p)
    finish_interrupted_overwrite(p)
    if storage.current().exists(_index_file_name(p)):
        return p
    folder = os.path.dirname(p) or "."
    name = os.path.basename(p)
    data = [n for n in _listdir(folder) if n.startswith(name + _DATA_MARK)]
    if data:
        why = (
            f"'{_index_file_name(name)}' is missing although its data files exist "
            f"({data[0]}, ...): the save did not finish, or the index was moved away from them"
        )
    else:
        why = f"'{_index_file_name(name)}' is missing"
    found = tuple(checkpoints_in(folder))
    suggestion = f"; pass a prefix such as '{found[-1]}'" if found else ""
    raise CheckpointNotFoundError(
        f"no checkpoint at '{p}': {why} ({_holds(folder)}){suggestion}",
        file=_index_file_name(p),
        candidates=found,
    )


def _listdir(folder: str) -> list[str]:
    try:
        return storage.current().list(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _resolve_folder(folder: str) -> str:
    state = read_checkpoint_state(folder)
    found = tuple(checkpoints_in(folder))
    if state is not None:
        # Exactly the recorded checkpoint (finishing an interrupted overwrite of it): an
        # explicit read does not fall back to another one, as `latest_checkpoint` does.
        named = state.model_checkpoint_path
        finish_interrupted_overwrite(named)
        if storage.current().exists(_index_file_name(named)):
            return named
        raw = state.raw_model_checkpoint_path
        why = (
            f"which is outside the folder, and the folder has no '{os.path.basename(named)}' "
            "(only a folder's own checkpoints are read)"
            if is_outside(folder, raw)
            else "but its .index file is missing"
        )
        raise CheckpointNotFoundError(
            f"the state file in '{folder}' names '{raw}' as the latest checkpoint, {why} "
            f"({_holds(folder)}); pass one of those prefixes, or restore the missing files",
            file=os.path.join(folder, "checkpoint"),
            candidates=found,
        )
    for saved_model_variables in (
        os.path.join(folder, "variables", "variables"),
        os.path.join(folder, "variables"),
    ):
        if _is_file(_index_file_name(saved_model_variables)):
            return saved_model_variables
    if found:
        raise CheckpointNotFoundError(
            f"'{folder}' has no 'checkpoint' state file naming its latest checkpoint, and "
            f"trackpoint does not guess ({_holds(folder)}); pass a prefix such as '{found[-1]}'",
            file=os.path.join(folder, "checkpoint"),
            candidates=found,
        )
    raise CheckpointNotFoundError(
        f"no checkpoint in '{folder}': it has no 'checkpoint' state file and no '.index' files",
        file=os.path.join(folder, "checkpoint"),
    )


class CheckpointReader:
    """Reads tensors of one checkpoint by key, like TF's `CheckpointReader`.

    Made by `load_checkpoint`. Use it as a context manager, or call `close()`, to release
    the data files early.

    Attributes:
        prefix: The checkpoint's prefix.
    """

    def __init__(self, prefix: str, *, mmap: bool = False, verify_checksums: bool = True) -> None:
        self.prefix = prefix
        self._bundle = BundleReader(prefix, mmap=mmap, verify_checksums=verify_checksums)

    @property
    def bundle(self) -> BundleReader:
        """The underlying bundle reader (tensor infos, shard paths, verification)."""
        return self._bundle

    def get_tensor(self, key: str) -> NDArray[Any]:
        """The value of `key` as a NumPy array (strings: an object array of `bytes`).

        Raises:
            KeyNotFoundError: no such key; the message suggests close ones.
            IncompleteCheckpointError: its data file is missing.
            CorruptCheckpointError: its bytes fail their checksum or lie outside the file.
            UnsupportedCheckpointError: its dtype cannot be decoded (variant, resource).
        """
        return self._bundle.get_tensor(key)

    def read_into(self, key: str, out: NDArray[Any]) -> None:
        """Read `key` into the caller's writeable, C-contiguous array of its shape and dtype."""
        self._bundle.read_into(key, out)

    def has_tensor(self, key: str) -> bool:
        """Whether the checkpoint has a (visible) tensor named `key`."""
        return key in self._bundle

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """Every visible key → its shape, as TF's reader returns it."""
        return {info.key: list(info.shape) for info in self._bundle.infos()}

    def get_variable_to_dtype_map(self) -> dict[str, DType]:
        """Every visible key → its dtype (a `DType` that compares equal to TF's name)."""
        return {info.key: info.dtype for info in self._bundle.infos()}

    @property
    def is_object_based(self) -> bool:
        """True for TF2 object-based checkpoints, False for TF1 name-based ones."""
        return OBJECT_GRAPH_KEY in self._bundle

    def close(self) -> None:
        """Close the data files."""
        self._bundle.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<trackpoint.CheckpointReader {self.prefix!r}>"


def load_checkpoint(
    path: PathLike, *, mmap: bool = False, verify_checksums: bool = True, verify: bool = False
) -> CheckpointReader:
    """Open a checkpoint for reading by key (`tf.train.load_checkpoint`).

    Args:
        path: A prefix, its `.index`/`.data-…` file, a folder (its latest checkpoint), or a
            SavedModel folder.
        mmap: Hand out read-only zero-copy views of memory-mapped data files (local files).
        verify_checksums: Check each tensor's crc32c as it is read.
        verify: Read every tensor now and check it (as `trackpoint verify` does), so that
            a damaged checkpoint fails here, naming every bad tensor, not halfway through
            a restore.

    Raises:
        CheckpointNotFoundError: no checkpoint there; the message lists what the folder holds.
        CorruptCheckpointError: the index is damaged; with `verify`, a tensor is (the
            message names each bad tensor and its file; `.key`/`.file` are the first).
        IncompleteCheckpointError: with `verify`, a data file is missing.

    Example:
        >>> import tempfile, numpy as np
        >>> from trackpoint.format import BundleWriter
        >>> prefix = tempfile.mkdtemp() + "/ckpt"
        >>> with BundleWriter(prefix) as writer:
        ...     writer.add("w", np.ones(2, np.float32))
        >>> load_checkpoint(prefix).get_tensor("w")
        array([1., 1.], dtype=float32)
    """
    reader = CheckpointReader(resolve_prefix(path), mmap=mmap, verify_checksums=verify_checksums)
    if verify:
        try:
            _verify_all(reader.bundle)
        except BaseException:
            reader.close()
            raise
    return reader


def _verify_all(bundle: BundleReader) -> None:
    bad = [(key, err) for key, err in bundle.verify() if err is not None]
    if not bad:
        return
    first = bad[0][1]
    listed = "; ".join(f"'{key}': {err}" for key, err in bad[:20])
    more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
    # A missing data file is named as such (IncompleteCheckpointError) when it is the
    # only problem; anything else, or several, is damage.
    missing = len(bad) == 1 and isinstance(first, IncompleteCheckpointError)
    error_type = IncompleteCheckpointError if missing else CorruptCheckpointError
    raise error_type(
        f"{len(bad)} tensor(s) of '{bundle.prefix}' failed verification: {listed}{more}",
        file=getattr(first, "file", None),
        key=bad[0][0],
    ) from first


def whole_checkpoint_problem(
    bundle: BundleReader, *, full: bool = False
) -> IncompleteCheckpointError | CorruptCheckpointError | None:
    """Why the checkpoint `bundle` reads cannot be restored whole, or None when it can.

    The problem names the file first: a missing data file, or one shorter than the index
    says. Reads no data unless `full` (or a file is short, to tell which).

    Args:
        bundle: The open checkpoint.
        full: Also read every tensor and check its checksum (as `trackpoint verify`).

    Returns:
        The first problem found (`.file` is the bad file), or None.
    """
    base = os.path.basename(bundle.prefix)
    if not bundle.data_files_complete():
        for shard in range(bundle.num_shards):
            path = bundle.data_path(shard)
            if not _is_file(path):
                return IncompleteCheckpointError(
                    f"'{os.path.basename(path)}' is missing from "
                    f"'{os.path.dirname(path) or '.'}'; all files that start with '{base}.' "
                    "must stay together",
                    file=path,
                )
        full = True  # a data file is short: reading tells which one
    if full:
        for key, error in bundle.verify():
            if isinstance(error, (IncompleteCheckpointError, CorruptCheckpointError)):
                file = error.file or bundle.prefix
                return type(error)(
                    f"'{os.path.basename(file)}' is damaged: {error}", file=file, key=key
                )
    return None


def broken_checkpoint_error(
    problem: IncompleteCheckpointError | CorruptCheckpointError,
    prefix: str,
    *,
    partway: bool = False,
) -> IncompleteCheckpointError | CorruptCheckpointError:
    """`problem` retold for a restore of `prefix`: the file, then the whole checkpoints beside.

    Names the complete checkpoints in the same folder that come before `prefix` (newest
    first; a cheap check: their files are all there), and how to restore one.

    Args:
        problem: What is wrong, found before the restore (`whole_checkpoint_problem`) or
            while it read values (a tensor failing its checksum).
        prefix: The checkpoint being restored.
        partway: The restore had begun assigning values when `problem` stopped it: the
            message says that the program now holds a mix, and what puts it right.
    """
    file = problem.file or prefix
    told = str(problem)
    if not told.startswith(f"'{os.path.basename(file)}'"):
        # Found while reading a tensor: name the file first, as the check before does.
        told = f"'{os.path.basename(file)}' is damaged: {told}"
    folder = os.path.dirname(prefix) or "."
    name = os.path.basename(prefix)
    others = [p for p in checkpoints_in(folder) if os.path.basename(p) != name]
    before = [p for p in others if _natural_key(os.path.basename(p)) < _natural_key(name)]
    earlier: list[str] = []
    for candidate in reversed(before):
        if is_complete(candidate):
            earlier.append(candidate)
            if len(earlier) == 3:
                break
    if not earlier:
        fix = (
            "restore the missing files"
            if isinstance(problem, IncompleteCheckpointError)
            else "copy the damaged file again from where it came"
        )
        advice = f"no earlier checkpoint in the folder is complete; {fix}"
    else:
        names = ", ".join(os.path.basename(p) for p in earlier)
        verb = "is" if len(earlier) == 1 else "are"
        advice = (
            f"{names} {verb} complete: restore '{os.path.basename(earlier[0])}' by passing "
            f"'{earlier[0]}' instead (CheckpointManager.restore_or_initialize(fall_back=True) "
            "restores the newest checkpoint that verifies)"
        )
    if partway:
        advice = (
            "the restore stopped partway: values read before the damaged one may already "
            "hold this checkpoint's values and the others still hold the program's own, so "
            "the program's state is mixed, and restoring a complete checkpoint puts every "
            f"value back consistently; {advice}"
        )
    return type(problem)(
        f"{told}, so '{prefix}' cannot be restored; {advice}",
        file=problem.file,
        key=problem.key,
    )


def list_variables(path: PathLike) -> list[tuple[str, list[int]]]:
    """Sorted (key, shape) of every visible tensor (`tf.train.list_variables`).

    Hidden per-slice keys of sliced variables are not listed, as in TF.
    """
    with load_checkpoint(path) as reader:
        return sorted(reader.get_variable_to_shape_map().items())
