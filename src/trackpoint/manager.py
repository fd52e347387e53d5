"""`CheckpointManager`: keep the last N checkpoints of a folder, as `tf.train.CheckpointManager`.

Same parameters, numbering, state file (with timestamps and `last_preserved_timestamp`, so
TensorFlow's own manager can continue the folder) and deletion policy as TF. Safer than
TF where TF is careless: old checkpoints are deleted only after the new one is complete
and recorded; only files of the manager's own prefix in its own folder are deleted,
matched by name (never a glob, never through a path that leaves the folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from . import storage
from ._stack import user_stacklevel
from .errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    InvalidValueError,
    SaveError,
    TrackpointError,
    TrackpointWarning,
)
from .format import (
    DATA_SUFFIX,
    STAGING_MARK,
    STATE_FILENAME,
    TEMP_MARK,
    BundleReader,
    data_file_pattern,
    find_staged,
    index_file_name,
    read_checkpoint_state,
    roll_forward,
    write_checkpoint_state,
)
from .reader import checkpoints_in, local_path, whole_checkpoint_problem
from .reader import latest_checkpoint as latest_checkpoint
from .storage import WriterLock

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._typing import PathLike
    from .checkpoint import Checkpoint, CheckpointOptions
    from .format import CheckpointState

__all__ = ["CheckpointManager", "latest_checkpoint"]


def _as_int(value: Any) -> int:
    return int(np.asarray(value))


class CheckpointManager:
    """Saves numbered checkpoints into a folder and deletes the old ones.

    Args:
        checkpoint: The `Checkpoint` to save and restore.
        directory: The folder (created when missing).
        max_to_keep: How many recent checkpoints to keep; None keeps all.
        keep_checkpoint_every_n_hours: Also keep one checkpoint per this many hours.
        checkpoint_name: The prefix's name (`ckpt` → `ckpt-7`).
        step_counter: A variable (or array) holding the training step, for
            `checkpoint_interval`.
        checkpoint_interval: Save only when the step advanced this much since the last save.
        init_fn: Called by `restore_or_initialize` when there is nothing to restore.

    Example:
        >>> import os, tempfile, numpy as np, trackpoint
        >>> ckpt = trackpoint.Checkpoint(w=trackpoint.Variable(np.zeros(2)))
        >>> manager = trackpoint.CheckpointManager(ckpt, tempfile.mkdtemp(), max_to_keep=2)
        >>> for _ in range(3):
        ...     _ = manager.save()
        >>> [os.path.basename(p) for p in manager.checkpoints]
        ['ckpt-2', 'ckpt-3']
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        directory: PathLike,
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        step_counter: Any = None,
        checkpoint_interval: int | None = None,
        init_fn: Callable[[], object] | None = None,
    ) -> None:
        if max_to_keep is not None and max_to_keep <= 0:
            raise InvalidValueError(
                f"max_to_keep must be a positive number or None (keep all), not {max_to_keep}"
            )
        if checkpoint_interval is not None and step_counter is None:
            raise InvalidValueError("checkpoint_interval needs a step_counter to count steps")
        if not checkpoint_name or "/" in checkpoint_name or os.sep in checkpoint_name:
            raise InvalidValueError(
                f"checkpoint_name must be a plain name, not {checkpoint_name!r}"
            )
        self._checkpoint = checkpoint
        self._directory = local_path(directory, action="keeping checkpoints in")
        self._max_to_keep = max_to_keep
        self._keep_every_n_hours = keep_checkpoint_every_n_hours
        self._checkpoint_name = checkpoint_name
        self._prefix = os.path.join(self._directory, checkpoint_name)
        self._step_counter = step_counter
        self._checkpoint_interval = checkpoint_interval
        self._init_fn = init_fn
        self._last_checkpoint_step: int | None = None
        self._own_name = re.compile(re.escape(checkpoint_name) + r"-\d+")
        self._maybe_delete: OrderedDict[str, float] = OrderedDict()
        # An async save commits (records, deletes) from its background thread.
        self._lock = threading.Lock()
        # Taken at the first save, held until close(): one writer per folder.
        self._writer_lock = WriterLock(self._directory, f"CheckpointManager '{checkpoint_name}'")
        weakref.finalize(self, self._writer_lock.release)
        self._latest: str | None = None
        # The latest the folder's state file names, as last read or written: differs from
        # `_latest` after a fall-back restore skipped broken checkpoints.
        self._recorded: str | None = None
        # A second earlier, so that a manager re-created at once does not adopt
        # checkpoints it did not write (TF's rule).
        self._last_preserved = time.time() - 1.0
        self._load_state(read_checkpoint_state(self._directory))

    def _load_state(self, state: CheckpointState | None) -> None:
        """Take the latest checkpoint and the ones this manager may delete from `state`."""
        if state is None:
            return
        now = time.time()
        self._latest = self._recorded = state.model_checkpoint_path
        self._last_preserved = min(state.last_preserved_timestamp or 0.0, now)
        self._maybe_delete.clear()
        stamps = list(state.all_model_checkpoint_timestamps) or [self._last_preserved] * len(
            state.all_model_checkpoint_paths
        )
        for path, stamp in zip(state.all_model_checkpoint_paths, stamps, strict=False):
            stamp = min(stamp, now)
            if path != self._latest and not (
                storage.current().exists(index_file_name(path)) or find_staged(path)
            ):
                # Half deleted by a crash during a sweep (the index goes first): no longer a
                # checkpoint; its data files are removed with the leftovers at the first save.
                continue
            # Checkpoints older than the preserved mark are not this manager's to delete.
            if stamp > self._last_preserved:
                self._maybe_delete[path] = stamp

    # -- properties ---------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The folder checkpoints are saved into."""
        return self._directory

    @property
    def checkpoint(self) -> Checkpoint:
        """The managed `Checkpoint`."""
        return self._checkpoint

    @property
    def latest_checkpoint(self) -> str | None:
        """The prefix of the newest checkpoint, or None.

        After `restore_or_initialize(fall_back=True)` skipped broken checkpoints, the one it
        restored: the newest this manager can restore, which the next save continues from.
        The folder's state file (`trackpoint.latest_checkpoint(manager.directory)`) names
        the newest on disk until that save records a new one; restoring writes nothing.
        """
        return self._latest

    @property
    def checkpoints(self) -> list[str]:
        """Prefixes of the kept checkpoints this manager may delete, oldest first."""
        with self._lock:
            return list(self._maybe_delete)

    @property
    def checkpoint_interval(self) -> int | None:
        """Minimum step difference between saves, or None."""
        return self._checkpoint_interval

    # -- saving ---------------------------------------------------------------------------

    def save(
        self,
        checkpoint_number: int | None = None,
        check_interval: bool = True,
        options: CheckpointOptions | None = None,
    ) -> str | None:
        """Save a new checkpoint, record it, then delete the ones beyond `max_to_keep`.

        With `CheckpointOptions(enable_async=True)` it returns once the values are
        snapshotted; recording the checkpoint as the latest and deleting old ones happen in
        the background after the write is complete (`sync()` waits for them).

        Args:
            checkpoint_number: The number in the prefix; default: the bumped `save_counter`.
            check_interval: Honour `checkpoint_interval` (skip when too few steps passed).
            options: How to write it.

        Returns:
            The new prefix, or None when skipped because of `checkpoint_interval`.

        Raises:
            AsyncSaveError: The previous (async) save failed in the background.
        """
        # A finished background failure is reported even by a save that would be skipped;
        # a save still running is waited for only when this one really saves.
        self._checkpoint.sync(wait=False)
        if self._checkpoint_interval is not None:
            step = _as_int(self._step_counter)
            if self._last_checkpoint_step is not None:
                if step == self._last_checkpoint_step:
                    return None
                if check_interval and step < self._last_checkpoint_step + self._checkpoint_interval:
                    return None
            self._last_checkpoint_step = step
        self._checkpoint.sync()  # at most one save in flight
        self._take_folder()
        return self._checkpoint.save_numbered(
            self._prefix,
            options,
            commit=self._commit,
            checkpoint_number=checkpoint_number,
            previous=self._latest,
        )

    def sync(self) -> None:
        """Wait for the background save in flight (`enable_async`), if there is one.

        Raises:
            AsyncSaveError: A background save failed; the checkpoint before it is intact
                and still the latest.
        """
        self._checkpoint.sync()

    def close(self) -> None:
        """Wait for a save in flight, then give up the folder's writer lock.

        Another manager (or process) may save into the folder afterwards; this one takes
        the lock again if it saves. Also done when the manager is garbage-collected or
        the interpreter exits.

        Raises:
            AsyncSaveError: The background save in flight failed.
        """
        try:
            self.sync()
        finally:
            self._writer_lock.release()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_folder(self) -> None:
        """Take the folder's writer lock (first save), then clear what crashed saves left."""
        if self._writer_lock.held:
            return
        try:
            os.makedirs(self._directory, exist_ok=True)
            self._writer_lock.acquire()
        except OSError as err:
            raise storage.save_error(err, "locking the folder", self._directory) from None
        # Another writer may have committed between this manager's creation and now (it
        # held the lock then): continue from what the folder records, not a stale view.
        state = read_checkpoint_state(self._directory)
        if state is not None and state.model_checkpoint_path != self._recorded:
            with self._lock:
                self._load_state(state)
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Delete what interrupted saves of this manager's prefix left (under the lock).

        Temp files (`.tp-tmp-`), incomplete staged copies (a complete one is moved into
        place instead), and data files of a numbered prefix that has no index and is not
        recorded: none of them is a checkpoint, and nobody else writes here.
        """
        name = self._checkpoint_name
        state_temp = STATE_FILENAME + TEMP_MARK
        data = re.compile(re.escape(name) + r"-(\d+)" + DATA_SUFFIX)
        staged: set[str] = set()
        recorded = {os.path.basename(p) for p in self._maybe_delete}
        if self._latest is not None:
            recorded.add(os.path.basename(self._latest))
        try:
            entries = storage.current().list(self._directory)
        except FileNotFoundError:
            return
        present = set(entries)
        for entry in entries:
            path = os.path.join(self._directory, entry)
            if os.path.islink(path):
                continue
            own = entry.startswith(name + "-")
            if (own and TEMP_MARK in entry) or entry.startswith(state_temp):
                self._unlink(path)
            elif own and STAGING_MARK in entry:
                staged.add(entry.split(STAGING_MARK, 1)[0])
            elif own and (match := data.fullmatch(entry)):
                prefix = f"{name}-{match.group(1)}"
                if index_file_name(prefix) not in present and prefix not in recorded:
                    self._unlink(path)
        for prefix in sorted(staged):
            if self._own_name.fullmatch(prefix):
                try:
                    roll_forward(os.path.join(self._directory, prefix), clean=True)
                except OSError as err:
                    raise storage.save_error(
                        err, "finishing an interrupted save of", prefix
                    ) from None

    @staticmethod
    def _unlink(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            storage.current().unlink(path)

    def _commit(self, path: str, durable: bool) -> None:
        """Make the complete checkpoint `path` the latest, then delete the ones beyond.

        Raises only while `path` is not yet the latest (the previous one still is); what
        fails after the commit (deleting, recording the deletion) is a warning and is
        retried at the next save, since a save that moved the latest forward succeeded.
        """
        with self._lock:
            stamp = time.time()
            latest, queue = self._latest, OrderedDict(self._maybe_delete)
            # An overwritten checkpoint moves to the end of the queue.
            self._maybe_delete.pop(path, None)
            self._maybe_delete[path] = stamp
            self._latest = path
            # Record the new checkpoint before deleting anything, then again without the
            # deleted ones: a crash in between leaves a state file naming files that exist.
            try:
                self._record_state(durable)
            except OSError:
                self._latest, self._maybe_delete = latest, queue
                self._undo_record(path, durable)
                raise
            try:
                if self._sweep():
                    self._record_state(durable)
            except OSError as err:
                error = (
                    err
                    if isinstance(err, SaveError)
                    else storage.save_error(err, "deleting", err.filename or self._directory)
                )
                warnings.warn(
                    f"'{os.path.basename(path)}' is saved and is the latest checkpoint, but "
                    f"removing the old ones failed ({error}); they are removed at a later save",
                    TrackpointWarning,
                    stacklevel=user_stacklevel(),
                )

    def _undo_record(self, path: str, durable: bool) -> None:
        """After a failed commit: if the state file names `path` anyway, name the previous.

        The rename can succeed and the folder's fsync after it fail; the save raises, so
        the failed checkpoint must not stay the latest.
        """
        with contextlib.suppress(TrackpointError, OSError):
            state = read_checkpoint_state(self._directory)
            if state is None or state.model_checkpoint_path != path:
                return
            if self._latest is None:
                storage.current().unlink(os.path.join(self._directory, STATE_FILENAME))
            else:
                self._record_state(durable)

    def _record_state(self, durable: bool) -> None:
        if self._latest is None:
            return
        write_checkpoint_state(
            self._directory,
            self._latest,
            list(self._maybe_delete),
            list(self._maybe_delete.values()),
            self._last_preserved,
            durable=durable,
        )
        self._recorded = self._latest

    def _sweep(self) -> bool:
        """Delete the oldest checkpoints beyond `max_to_keep`; True if anything changed."""
        if self._max_to_keep is None:
            return False
        changed = False
        while len(self._maybe_delete) > self._max_to_keep:
            path, stamp = self._maybe_delete.popitem(last=False)
            changed = True
            if (
                self._keep_every_n_hours  # None or 0: keep none (TF tests it for truth)
                and stamp - self._keep_every_n_hours * 3600.0 >= self._last_preserved
            ):
                self._last_preserved = stamp  # kept for good, no longer listed
                continue
            try:
                self._delete(path)
            except OSError:
                # Kept listed (the state file still names it), deleted at the next save.
                self._maybe_delete[path] = stamp
                self._maybe_delete.move_to_end(path, last=False)
                raise
        return changed

    def _delete(self, prefix: str) -> None:
        folder, name = os.path.split(prefix)
        if os.path.abspath(folder or ".") != os.path.abspath(self._directory):
            return  # not in this manager's folder: never ours to delete
        if not self._own_name.fullmatch(name) or prefix == self._latest:
            return
        data = data_file_pattern(name)
        # The index first: without it the prefix is no checkpoint, whatever remains.
        victims = [
            index_file_name(name),
            *sorted(n for n in storage.current().list(self._directory) if data.fullmatch(n)),
        ]
        for victim in victims:
            path = os.path.join(self._directory, victim)
            if os.path.islink(path):
                continue
            self._unlink(path)

    # -- restoring ------------------------------------------------------------------------

    def restore_or_initialize(
        self, *, fall_back: bool = False, expect_partial: bool = False
    ) -> str | None:
        """Restore the latest checkpoint if there is one, else call `init_fn`.

        Args:
            fall_back: When the latest checkpoint is broken (a data file moved away or
                damaged), restore the newest one that verifies instead, with a
                `TrackpointWarning` naming each one skipped and why. Each candidate is
                read whole and its checksums checked before anything is restored from it
                (for large checkpoints this reads the one restored twice). Off by
                default: as in TF, the latest is restored or the call fails. After a
                fall-back, `latest_checkpoint` is the checkpoint restored (the folder's
                state file is rewritten only by the next save); `save_counter` moves past
                the highest number in the folder, so no save overwrites the broken
                checkpoints; they are the first that `max_to_keep` deletes.
            expect_partial: The restore is meant to be partial (as for
                `Checkpoint.restore`): no `PartialRestoreWarning`.

        Returns:
            The restored prefix, or None when initialized.

        Raises:
            AsyncSaveError: A background save in flight failed (it is waited for first, so
                that "latest" is settled before restoring it).
            IncompleteCheckpointError: A data file of the checkpoint (with `fall_back`:
                of every checkpoint) is missing; nothing was restored and `init_fn` was
                not called.
            CorruptCheckpointError: Likewise for a damaged file.

        Example:
            >>> import os, tempfile, numpy as np, trackpoint
            >>> folder = tempfile.mkdtemp()
            >>> manager = trackpoint.CheckpointManager(
            ...     trackpoint.Checkpoint(w=trackpoint.Variable(np.ones(2))), folder, max_to_keep=3
            ... )
            >>> _ = manager.save(), manager.save()
            >>> os.remove(os.path.join(folder, "ckpt-2.data-00000-of-00001"))
            >>> again = trackpoint.CheckpointManager(
            ...     trackpoint.Checkpoint(w=trackpoint.Variable(np.zeros(2))), folder, max_to_keep=3
            ... )
            >>> import warnings
            >>> with warnings.catch_warnings(record=True) as caught:
            ...     warnings.simplefilter("always")
            ...     restored = again.restore_or_initialize(fall_back=True)
            >>> os.path.basename(restored), str(caught[0].message)[:54]
            ('ckpt-1', "restored 'ckpt-1', not the latest checkpoint 'ckpt-2'")
        """
        self.sync()
        if self._latest is not None:
            prefix, skipped = self._newest_that_verifies() if fall_back else (self._latest, [])
            # The warnings name this call, the one the user made.
            status = self._checkpoint.restore(prefix, expect_partial=True)
            if skipped:
                self._skip_past(prefix, skipped)
            if not expect_partial:
                status.warn_partial(call="restore_or_initialize")
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = _as_int(self._step_counter)
            return prefix
        if self._init_fn is not None:
            self._init_fn()
        return None

    def _skip_past(
        self,
        restored: str,
        skipped: list[tuple[str, IncompleteCheckpointError | CorruptCheckpointError]],
    ) -> None:
        """After a fall-back restore of `restored`: continue from it, past the broken ones.

        The restored checkpoint becomes this manager's latest; the broken ones stay on
        disk untouched (a moved file can still be put back) but go first when
        `max_to_keep` deletes; `save_counter` moves past the highest number in the folder
        so that no save overwrites them. Warns, naming each one skipped.
        """
        with self._lock:
            for path, _ in skipped:  # newest first: each goes before the one after it
                if path in self._maybe_delete:
                    self._maybe_delete.move_to_end(path, last=False)
            newest = self._latest
            self._latest = restored
        numbers = [
            int(os.path.basename(p).rsplit("-", 1)[1])
            for p in [*checkpoints_in(self._directory), *(p for p, _ in skipped)]
            if os.path.dirname(p) == self._directory
            and self._own_name.fullmatch(os.path.basename(p))
        ]
        counter = self._checkpoint.save_counter
        count = max([_as_int(counter.numpy()), *numbers])
        counter.assign(count)
        reasons = "; ".join(f"'{os.path.basename(p)}': {problem}" for p, problem in skipped)
        name = os.path.basename(restored)
        warnings.warn(
            f"restored '{name}', not the latest checkpoint '{os.path.basename(newest or '')}', "
            f"because the newer ones are broken ({reasons}); training resumes from '{name}' "
            f"(now manager.latest_checkpoint), and the next save is "
            f"'{self._checkpoint_name}-{count + 1}', so the broken files are never "
            "overwritten: they stay as they are until max_to_keep deletes them (before any "
            "other) or you do",
            TrackpointWarning,
            stacklevel=user_stacklevel(),
        )

    def _candidates(self) -> list[str]:
        """The latest, then older checkpoints of this manager's folder, newest first."""
        assert self._latest is not None  # noqa: S101 - the caller checked
        found = [self._latest, *reversed(self._maybe_delete)]

        def number(prefix: str) -> int:
            return int(prefix.rsplit("-", 1)[1])

        latest_name = os.path.basename(self._latest)
        limit = number(latest_name) if self._own_name.fullmatch(latest_name) else None
        own = [
            p
            for p in checkpoints_in(self._directory)
            if self._own_name.fullmatch(os.path.basename(p))
        ]
        # Older ones kept for good (keep_checkpoint_every_n_hours) are candidates too; a
        # number above the latest's is a save that never finished being recorded.
        found += sorted(
            (p for p in own if limit is None or number(os.path.basename(p)) < limit),
            key=lambda p: number(os.path.basename(p)),
            reverse=True,
        )
        return list(dict.fromkeys(found))

    def _newest_that_verifies(
        self,
    ) -> tuple[str, list[tuple[str, IncompleteCheckpointError | CorruptCheckpointError]]]:
        """The newest checkpoint that reads whole, and the ones skipped with their problem.

        Raises:
            IncompleteCheckpointError: none verifies (or CorruptCheckpointError).
        """
        skipped: list[tuple[str, IncompleteCheckpointError | CorruptCheckpointError]] = []
        for prefix in self._candidates():
            problem: IncompleteCheckpointError | CorruptCheckpointError | None
            try:
                with BundleReader(prefix) as bundle:
                    problem = whole_checkpoint_problem(bundle, full=True)
            except (CorruptCheckpointError, IncompleteCheckpointError) as err:
                problem = err
            except CheckpointNotFoundError as err:
                problem = IncompleteCheckpointError(str(err), file=err.file)
            if problem is None:
                return prefix, skipped
            skipped.append((prefix, problem))
        reasons = "; ".join(f"'{os.path.basename(p)}': {problem}" for p, problem in skipped)
        first = skipped[0][1]
        raise type(first)(
            f"no checkpoint in '{self._directory}' verifies, so nothing was restored (and "
            f"init_fn was not called): {reasons}; restore the missing or damaged files, or "
            "delete the checkpoints to start afresh",
            file=first.file,
            key=first.key,
        )
