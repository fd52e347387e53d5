"""`Checkpoint` and `CheckpointOptions`: `tf.train.Checkpoint` for every framework.

`save(prefix)` writes `prefix-N` (N from `save_counter`) and updates the folder's
`checkpoint` state file; `write(prefix)` writes exactly `prefix` and touches no state file;
`restore(path)` / `read(path)` match the saved object graph to the live objects by
structure and return a status object (TF format doc §1.2, §7).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from google.protobuf.message import DecodeError

from ._stack import user_frame
from .engine import AsyncSaver, write_bundle
from .errors import (
    CorruptCheckpointError,
    IncompleteCheckpointError,
    InvalidValueError,
    TrackpointError,
    TrackpointWarning,
)
from .format import BundleReader, read_checkpoint_state, write_checkpoint_state
from .graph import (
    OBJECT_GRAPH_KEY,
    InitializationOnlyStatus,
    LoadStatus,
    Module,
    NameBasedLoadStatus,
    Restorer,
    SavedGraph,
    Trackable,
    Variable,
    parse_nodes,
    restore_by_name,
    save_graph,
    to_trackable,
)
from .reader import (
    broken_checkpoint_error,
    local_path,
    resolve_prefix,
    whole_checkpoint_problem,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from numpy.typing import NDArray

    from ._typing import PathLike
    from .graph import Value

#: The user-level call a restore came from (messages name it and its keyword).
_Call = Literal["restore", "read", "load_weights"]

__all__ = ["Checkpoint", "CheckpointOptions", "load_weights", "save_weights"]

SAVE_COUNTER = "save_counter"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointOptions:
    """How a checkpoint is written.

    Attributes:
        num_shards: How many data files to split the values into (size-balanced). None
            chooses by size: one file for small states (TF's layout), one per writer
            thread once there is enough data for parallel writes to pay.
        threads: How many threads write and checksum the data files (None: the cores
            available, up to 8).
        durable: fsync every file and the folder before `save`/`write` returns (or, for an
            async save, before it is recorded as the latest), so the checkpoint survives
            a power loss, not only a process crash. On by default; turn it off only for
            checkpoints you could lose (it costs one flush of the data to disk).
        enable_async: Return as soon as every value is copied into host buffers (reused
            from save to save); a background thread writes and commits the checkpoint.
            At most one save is in flight: the next `save`, or `sync()`, waits for it and
            raises its failure as `AsyncSaveError`. "Latest" (and, for a manager,
            deletions) move only once the write is complete.
    """

    num_shards: int | None = None
    threads: int | None = None
    durable: bool = True
    enable_async: bool = False


class _RootProxy(Trackable):
    """`Checkpoint(root=obj, **kw)`: `obj` is node 0, with the other children beside its own."""

    def __init__(self, checkpoint: Checkpoint, root: object) -> None:
        self._checkpoint = checkpoint
        self._root = to_trackable(root, path="(root)")

    def trackable_children(self) -> Mapping[str, object]:
        return {**self._root.trackable_children(), **self._checkpoint.trackable_children()}

    def trackable_values(self) -> Mapping[str, Value]:
        return self._root.trackable_values()

    def lookup_child(self, name: str) -> object | None:
        if name == "root":
            return self
        found = self._checkpoint.lookup_child(name)
        return found if found is not None else self._root.lookup_child(name)

    def defer_child(self, name: str, callback: Callable[[object], None]) -> bool:
        return self._checkpoint.defer_child(name, callback) or self._root.defer_child(
            name, callback
        )

    def replace_child(self, name: str, new: object) -> bool:
        # A restored immutable value (a JAX array attribute of a Flax model) goes to the
        # object that holds it: the Checkpoint's own child, else the root's.
        if self._checkpoint.lookup_child(name) is not None:
            return self._checkpoint.replace_child(name, new)
        return self._root.replace_child(name, new)


class Checkpoint(Module):
    """Groups trackable objects and saves/restores them in TensorFlow's format.

    Args:
        root: Optional object that becomes the checkpoint's root (node 0), as in TF.
        **children: Objects to track, by name: trackables, NumPy arrays, or
            dicts/lists/tuples holding them. Attached in sorted name order (TF's order).

    Example:
        >>> import tempfile, numpy as np, trackpoint
        >>> w = trackpoint.Variable(np.ones(3, np.float32))
        >>> ckpt = trackpoint.Checkpoint(w=w)
        >>> path = ckpt.save(tempfile.mkdtemp() + "/ckpt")
        >>> path.endswith("ckpt-1")
        True
        >>> w.assign(np.zeros(3))
        >>> _ = ckpt.restore(path).assert_consumed()
        >>> w.numpy()
        array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, root: object = None, **children: object) -> None:
        self._root_object = root
        self._save_counter: Variable | None = None
        self._async_saver: AsyncSaver | None = None  # made by the first async save
        for name in sorted(children):
            if name == SAVE_COUNTER:
                raise InvalidValueError("'save_counter' is the Checkpoint's own counter's name")
            # An object nobody knows would be skipped silently by attribute tracking; as
            # tf.train.Checkpoint does, refuse it here (NotTrackableError names its type).
            to_trackable(children[name], path=name)
            setattr(self, name, children[name])

    # -- the counter ----------------------------------------------------------------------

    @property
    def save_counter(self) -> Variable:
        """An int64 variable counting `save` calls; created on first use, like TF's."""
        if self._save_counter is None:
            counter = Variable(np.int64(0), name=SAVE_COUNTER)
            self._save_counter = counter
            # Tracked after the user's children, as TF adds it; a restore waiting for it
            # (deferred) fires now.
            self._tp_children[SAVE_COUNTER] = counter
            for callback in self._tp_deferred.pop(SAVE_COUNTER, ()):
                callback(counter)
        return self._save_counter

    def _graph_root(self) -> Trackable:
        return self if self._root_object is None else _RootProxy(self, self._root_object)

    # -- saving ------------------------------------------------------------------------------

    def write(self, file_prefix: PathLike, options: CheckpointOptions | None = None) -> str:
        """Write exactly `file_prefix` (no counter bump, no state file); return it.

        With `options.enable_async` it returns once the values are snapshotted; the
        write goes on in the background (`sync()` waits for it).
        """
        options = options or CheckpointOptions()
        prefix = local_path(file_prefix, action="saving to")
        self.sync()  # at most one save in flight; a failed one is reported first
        if options.enable_async:
            self._write_async(prefix, options)
            return prefix
        keys: list[str] = []
        arrays: list[NDArray[Any]] = []

        def read(key: str, value: Value) -> None:
            # Read as the walk meets it: nothing per value outlives the walk but its key
            # and its host array (a save of many small tensors holds these to its end).
            keys.append(key)
            arrays.append(value.read())

        _write_items(
            prefix,
            zip(keys, arrays, strict=True),  # filled by the walk just below
            # No local holds the graph's bytes: once the bundle has encoded them, that
            # copy is the only one kept while the data is written.
            save_graph(self._graph_root(), read),
            options,
        )
        return prefix

    def _write_async(
        self,
        prefix: str,
        options: CheckpointOptions,
        *,
        commit: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        previous: str | None = None,
    ) -> None:
        """Snapshot every value into reusable host buffers, then write in the background.

        Args:
            prefix: The prefix to write.
            options: How to write it.
            commit: Run in the background once the bundle is complete (the state file).
            on_failure: Run in the background when the write or the commit failed.
            previous: The latest checkpoint meanwhile (named by the error if this fails).
        """
        saver = self._async_saver
        if saver is None:
            saver = self._async_saver = AsyncSaver()
        saved: list[tuple[str, Value]] = []
        graph_bytes = save_graph(self._graph_root(), lambda key, value: saved.append((key, value)))
        # One value read at a time: a GPU tensor's host copy is dropped once snapshotted.
        snapshot = saver.snapshot((key, value.read()) for key, value in saved)
        saved.clear()  # the values' wrappers: not needed while the write runs
        saver.submit(
            prefix,
            # Looked up when the thread runs, so the write path stays the one sync saves use.
            lambda: _write_items(prefix, snapshot, graph_bytes, options),
            commit=commit,
            on_failure=on_failure,
            previous=previous,
        )

    def sync(self, *, wait: bool = True) -> None:
        """Wait for the background save in flight (`enable_async`), if there is one.

        Args:
            wait: False: do not wait for a save still running; only raise the failure of
                one that has finished (a manager's save skipped by its interval does so).

        Raises:
            AsyncSaveError: A background save failed; the checkpoint before it is intact
                and still the latest. Raised once; the next save starts afresh.
        """
        if self._async_saver is None:
            return
        if wait:
            self._async_saver.sync()
        else:
            self._async_saver.check()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.sync()
        elif self._async_saver is not None:
            # Wait, but let the exception in flight propagate; a background failure stays
            # pending for the next save or sync.
            self._async_saver.wait()

    def save(self, file_prefix: PathLike, options: CheckpointOptions | None = None) -> str:
        """Write `file_prefix-N` (N = the bumped `save_counter`) and update the state file.

        Returns:
            The prefix written.
        """
        file_prefix = local_path(file_prefix, action="saving to")
        folder = os.path.dirname(file_prefix)
        asynchronous = options is not None and options.enable_async

        def commit(path: str, durable: bool) -> None:
            write_checkpoint_state(folder, path, [path], durable=durable)

        return self.save_numbered(
            file_prefix,
            options,
            commit=commit,
            previous=_recorded_latest(folder) if asynchronous else None,
        )

    def save_numbered(
        self,
        file_prefix: PathLike,
        options: CheckpointOptions | None = None,
        *,
        commit: Callable[[str, bool], None],
        checkpoint_number: int | None = None,
        previous: str | None = None,
    ) -> str:
        """Write `file_prefix-N`, bump `save_counter`, then record it with `commit`.

        The one numbered save: `save` records the checkpoint in the folder's state file,
        `CheckpointManager.save` records it and deletes old ones. In order:

        1. waits for the save in flight (raising its failure);
        2. bumps `save_counter` (saved with the values) and picks N: `checkpoint_number`,
           else the bumped counter;
        3. writes the bundle (with `options.enable_async`: snapshots the values and
           returns; steps 3-4 go on in the background);
        4. calls `commit(path, durable)` once the bundle is complete.

        A write or commit that fails gives the number back (`save_counter` is as before)
        and leaves the previous latest checkpoint as it was.

        Args:
            file_prefix: The prefix before `-N`.
            options: How to write it.
            commit: Records the complete checkpoint `path`; `durable` is `options.durable`.
            checkpoint_number: N, when not the counter's (the manager's `checkpoint_number`).
            previous: The latest checkpoint meanwhile, named by an async save's error.

        Returns:
            The prefix written, `file_prefix-N`.

        Raises:
            AsyncSaveError: The previous (async) save failed.
        """
        file_prefix = local_path(file_prefix, action="saving to")  # before anything moves
        self.sync()  # the previous save completes (or reports its failure) first
        options = options or CheckpointOptions()
        counter = self.save_counter
        count = int(np.asarray(counter.numpy()))
        counter.assign(count + 1)
        number = count + 1 if checkpoint_number is None else int(np.asarray(checkpoint_number))
        path = f"{os.fspath(file_prefix)}-{number}"
        durable = options.durable
        try:
            if options.enable_async:
                self._write_async(
                    path,
                    options,
                    # Recorded only after the bundle is complete.
                    commit=lambda: commit(path, durable),
                    on_failure=lambda: _undo_count(counter, count),
                    previous=previous,
                )
                return path
            self.write(path, options)
            commit(path, durable)
        except BaseException:
            counter.assign(count)  # a failed save does not use up a number
            raise
        return path

    # -- restoring ---------------------------------------------------------------------------

    def read(
        self, save_path: PathLike | None, *, expect_partial: bool = False
    ) -> LoadStatus | NameBasedLoadStatus | Any:
        """Restore values from `save_path` (prefix, folder or SavedModel) without the counter.

        Args:
            save_path: A checkpoint prefix, a folder (its latest checkpoint) or a
                SavedModel; None restores nothing (`InitializationOnlyStatus`).
            expect_partial: The restore is meant to be partial: do not warn about objects
                of the program the checkpoint has nothing for, or parts of the checkpoint
                nothing in the program takes.

        Returns:
            A status: `assert_consumed()`, `assert_existing_objects_matched()`,
            `assert_nontrivial_match()`, `expect_partial()`.

        Warns:
            PartialRestoreWarning: At this call (pointing at the caller's line), when the
                restore can already tell it is partial — an optimizer forgotten on one side,
                a renamed layer — unless `expect_partial`. Values waiting for objects the
                program may still create are not warned about; `assert_consumed()` names
                them.
        """
        return self._read(save_path, expect_partial=expect_partial, call="read")

    def _read(
        self,
        save_path: PathLike | None,
        *,
        expect_partial: bool,
        call: _Call,
        watch_trees: bool = True,
    ) -> LoadStatus | NameBasedLoadStatus | Any:
        if save_path is None:
            return InitializationOnlyStatus()
        prefix = resolve_prefix(save_path)
        reader = BundleReader(prefix)
        # Checked before anything is restored: a checkpoint missing a file fails here,
        # naming the file and the whole checkpoints beside it, never halfway through.
        problem = whole_checkpoint_problem(reader)
        if problem is not None:
            reader.close()
            raise broken_checkpoint_error(problem, prefix)
        root = self._graph_root()
        held = _HeldTrees(self) if watch_trees else None
        assigning = False
        try:
            if OBJECT_GRAPH_KEY not in reader:
                assigning = True
                return restore_by_name(reader, root, prefix)
            raw = bytes(reader.get_tensor(OBJECT_GRAPH_KEY).reshape(-1)[0])
            restorer = self._restorer(reader, raw, prefix, root)
            del raw  # read: no need to hold the bytes through the restore as well
            assigning = True
            restorer.run()
        except (CorruptCheckpointError, IncompleteCheckpointError) as err:
            # Damage the size check above cannot see (a flipped byte) is found only while
            # reading values, perhaps after some were assigned: told as the missing-file
            # case is, with the mixed state it leaves.
            if err.file is None or err.file == reader.index_path:
                raise
            reader.close()
            raise broken_checkpoint_error(err, prefix, partway=assigning) from err
        if held is not None:
            held.warn_if_stale()
        status = LoadStatus(restorer, root, prefix, call)
        if expect_partial:
            status.expect_partial()
        else:
            status.warn_partial()
        return status

    @staticmethod
    def _restorer(reader: BundleReader, raw: bytes, prefix: str, root: Trackable) -> Restorer:
        """The restorer of `reader`'s checkpoint, whose serialized object graph is `raw`."""

        def own_key(key: str) -> str:
            # The index's equal string: the restore then holds each key once.
            info = reader.find_info(key)
            return key if info is None else info.key

        try:
            saved = SavedGraph(parse_nodes(raw), own_key)
        except DecodeError as err:
            raise CorruptCheckpointError(
                f"the object graph of '{prefix}' does not parse ({err}); the checkpoint is "
                "damaged — its values can still be read by key with load_checkpoint",
                file=reader.index_path,
                key=OBJECT_GRAPH_KEY,
            ) from err
        if not len(saved):
            raise CorruptCheckpointError(
                f"the object graph of '{prefix}' has no nodes", file=reader.index_path
            )
        return Restorer(reader, saved, root)

    def restore(
        self, save_path: PathLike | None, *, expect_partial: bool = False
    ) -> LoadStatus | NameBasedLoadStatus | Any:
        """Like `read`, and restore `save_counter` too, so the next `save` continues the count.

        Args:
            save_path: A checkpoint prefix, a folder (its latest checkpoint) or a
                SavedModel; None restores nothing (`InitializationOnlyStatus`).
            expect_partial: The restore is meant to be partial: no `PartialRestoreWarning`.

        Returns:
            A status, as `read`'s.

        Warns:
            PartialRestoreWarning: As `read`, at this call.
        """
        return self._restore(save_path, expect_partial=expect_partial)

    def _restore(
        self, save_path: PathLike | None, *, expect_partial: bool, watch_trees: bool = True
    ) -> LoadStatus | NameBasedLoadStatus | Any:
        status = self._read(
            save_path, expect_partial=expect_partial, call="restore", watch_trees=watch_trees
        )
        if save_path is not None:
            _ = self.save_counter  # created now: receives its deferred value, as in TF
        return status

    def restore_trees(self, save_path: PathLike | None, *names: str, partial: bool = False) -> Any:
        """Restore as `restore` does, check it, and hand back the named children.

        The way to restore JAX trees: arrays and pytree nodes are immutable, so a restore
        builds new ones and the Checkpoint's attributes hold them; the trees the program
        passed in keep their old values. Taking the result rebinds the program's names in
        the same statement (cf. Orbax's `restore(step, args=StandardRestore(target))`).

        Args:
            save_path: As for `restore`; None (nothing saved yet) restores nothing and
                hands back the trees as they are.
            *names: The Checkpoint's attributes to hand back (`"state"`, `"params"`).
            partial: Accept values of the checkpoint that nothing here takes; every value
                of the program must still be restored. Off: `assert_consumed()`.

        Returns:
            The restored attribute for one name; a tuple of them, in order, for several.

        Raises:
            MismatchError: The checkpoint and the program do not match (see
                `LoadStatus.assert_consumed` / `assert_existing_objects_matched`).
            AttributeError: A name is not an attribute of this Checkpoint.

        Example:
            >>> import tempfile, numpy as np, trackpoint
            >>> ckpt = trackpoint.Checkpoint(state=(np.ones(2, np.float32),))
            >>> path = ckpt.save(tempfile.mkdtemp() + "/ckpt")
            >>> state = (np.zeros(2, np.float32),)
            >>> state = trackpoint.Checkpoint(state=state).restore_trees(path, "state")
            >>> state
            (array([1., 1.], dtype=float32),)

            With JAX: `params, opt_state = ckpt.restore_trees(path, "params", "opt_state")`.
        """
        if not names:
            raise TypeError("restore_trees() needs the names of the trees to hand back")
        for name in names:
            if name not in self.trackable_children():
                raise AttributeError(
                    f"the Checkpoint has no attribute {name!r} to restore (it has "
                    f"{', '.join(sorted(self.trackable_children()))})"
                )
        if save_path is not None:
            # Checked below, raising: a warning first would say it twice. No stale-tree
            # warning either: the caller rebinds its names to the result.
            status = self._restore(save_path, expect_partial=True, watch_trees=False)
            try:
                if partial:
                    status.assert_existing_objects_matched()
                else:
                    status.assert_consumed()
            finally:
                status.expect_partial()  # checked here: no second report when collected
        trees = tuple(getattr(self, name) for name in names)
        return trees[0] if len(trees) == 1 else trees


class _HeldTrees:
    """What a restore may replace, to tell the caller when it still holds the old object.

    A restore builds new JAX arrays and pytree nodes (they are immutable) and puts them
    into the Checkpoint's attributes and into mutable dicts and lists below them. A
    variable of the calling code that still names an object so replaced keeps the values
    from before the restore, silently: `warn_if_stale` names both, at the caller's line.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._checkpoint = checkpoint
        # (how the message names the place, how to read it now, what it held before)
        self._places: list[tuple[str, Callable[[], object], object]] = []
        for name, child in checkpoint.trackable_children().items():
            if name != SAVE_COUNTER:
                self._watch(f".{name}", functools.partial(getattr, checkpoint, name), child)

    def _watch(self, where: str, current: Callable[[], object], obj: object) -> None:
        self._places.append((where, current, obj))
        if isinstance(obj, dict):
            entries: Iterable[tuple[Any, object]] = list(obj.items())
        elif isinstance(obj, list):
            entries = list(enumerate(obj))
        else:
            return  # an immutable object is replaced as a whole (or not at all)
        for key, value in entries:
            self._watch(f"{where}[{key!r}]", functools.partial(_item, obj, key), value)

    def warn_if_stale(self) -> None:
        """Warn once when the caller's variables name objects the restore replaced."""
        replaced = {
            id(old): where
            for where, current, old in self._places
            if current() is not old and not isinstance(old, _SCALARS)
        }
        if not replaced:
            return
        stacklevel, frame = user_frame()
        # A module's code has one namespace for both; a function's locals come first.
        namespaces = [frame.f_locals]
        if frame.f_globals is not frame.f_locals:
            namespaces.append(frame.f_globals)
        stale: dict[str, str] = {}  # variable → the place that now holds its restored value
        ckpt_name = "ckpt"
        for namespace in namespaces:
            for variable, value in namespace.items():
                if value is self._checkpoint and ckpt_name == "ckpt":
                    ckpt_name = variable
                elif id(value) in replaced and not variable.startswith("__"):
                    stale.setdefault(variable, replaced[id(value)])
        del frame, namespaces
        if not stale:
            return
        places = ", ".join(ckpt_name + where for where in dict.fromkeys(stale.values()))
        variables = ", ".join(f"{variable!r}" for variable in stale)
        rebind = "; ".join(f"{variable} = {ckpt_name}{where}" for variable, where in stale.items())
        attributes = [where[1:] for where in stale.values() if where[1:].isidentifier()]
        warnings.warn(
            f"the restore made new objects for {places} (JAX arrays and pytrees are "
            f"immutable: restoring builds new ones), but your variable {variables} still "
            "holds the one passed in, with the values from before the restore; continue "
            f"from the Checkpoint's ({rebind})"
            + (
                f", or restore with {', '.join(attributes)} = "
                f"{ckpt_name}.restore_trees(path, {', '.join(map(repr, attributes))})"
                if len(attributes) == len(stale)
                else ""
            ),
            TrackpointWarning,
            stacklevel=stacklevel,
        )


_SCALARS = (str, bytes, bool, int, float, complex, np.generic, type(None))


def _item(container: Any, key: Any) -> object:
    try:
        return container[key]
    except (KeyError, IndexError):
        return None


def save_weights(
    model: object, file_prefix: PathLike, options: CheckpointOptions | None = None
) -> str:
    """Write `model`'s values to exactly `file_prefix`, the model itself as the root.

    As Keras' `save_weights` does (`tf.train.Checkpoint(root=model).write`): the keys are
    the model's own paths (`fc/weight/.ATTRIBUTES/VARIABLE_VALUE`), with no `model/` in
    front and no `save_counter`. Any framework's model works (a torch `nn.Module`, a
    `trackpoint.Module`, a Keras model, ...).

    Args:
        model: The model (the root of the checkpoint).
        file_prefix: The prefix to write (`weights` → `weights.index`, `weights.data-*`).
        options: How to write it.

    Returns:
        The prefix written.

    Example:
        >>> import tempfile, numpy as np, trackpoint
        >>> model = trackpoint.Module()
        >>> model.w = trackpoint.Variable(np.ones(2, np.float32))
        >>> prefix = trackpoint.save_weights(model, tempfile.mkdtemp() + "/weights")
        >>> trackpoint.list_variables(prefix)[-1]
        ('w/.ATTRIBUTES/VARIABLE_VALUE', [2])
    """
    return Checkpoint(root=model).write(file_prefix, options)


def load_weights(
    model: object, file_prefix: PathLike, *, expect_partial: bool = False
) -> LoadStatus | NameBasedLoadStatus | Any:
    """Restore `model`'s values from a checkpoint written by `save_weights`.

    The model is the root (`Checkpoint(root=model).read(file_prefix)`); its values are
    restored in place.

    Args:
        model: The model to restore into.
        file_prefix: A prefix, or a folder (its latest checkpoint).
        expect_partial: The restore is meant to be partial: no `PartialRestoreWarning`.

    Returns:
        The restore status: `assert_consumed()` checks that everything matched.

    Warns:
        PartialRestoreWarning: At this call, when the model has objects the weights have
            nothing for, or the weights hold parts the model cannot take (a compiled
            model's optimizer state), unless `expect_partial`.

    Example:
        >>> import tempfile, numpy as np, trackpoint
        >>> model = trackpoint.Module()
        >>> model.w = trackpoint.Variable(np.ones(2, np.float32))
        >>> prefix = trackpoint.save_weights(model, tempfile.mkdtemp() + "/weights")
        >>> model.w.assign([5.0, 5.0])
        >>> _ = trackpoint.load_weights(model, prefix).assert_consumed()
        >>> model.w.numpy()
        array([1., 1.], dtype=float32)
    """
    return Checkpoint(root=model)._read(
        file_prefix, expect_partial=expect_partial, call="load_weights"
    )


def _write_items(
    prefix: str,
    items: Iterable[tuple[str, NDArray[Any]]],
    graph_bytes: bytes,
    options: CheckpointOptions,
) -> None:
    """Write `(key, host array)` items and the serialized object graph to `prefix`.

    The one write path of every save: sync saves pass views of the live values, the
    background thread of an async save passes its snapshot.
    """
    graph_value = np.empty((), dtype=object)
    graph_value[()] = graph_bytes
    # Chained, not copied into a list of pairs (an object per value); the graph's bytes
    # are let go with the chain once write_bundle has encoded them.
    items = itertools.chain(items, [(OBJECT_GRAPH_KEY, graph_value)])
    del graph_value, graph_bytes
    write_bundle(
        prefix,
        items,
        num_shards=options.num_shards,
        threads=options.threads,
        durable=options.durable,
        # TF writes the object graph last, into the last shard (format doc §5.1).
        last_key=OBJECT_GRAPH_KEY,
    )


def _undo_count(counter: Variable, previous: int) -> None:
    """Give back the number of a save that failed in the background (if still unused)."""
    if int(np.asarray(counter.numpy())) == previous + 1:
        counter.assign(previous)


def _recorded_latest(folder: str) -> str | None:
    """The latest checkpoint the folder's state file names, or None (for messages only)."""
    with contextlib.suppress(TrackpointError, OSError):
        state = read_checkpoint_state(folder or ".")
        return None if state is None else state.model_checkpoint_path
    return None
