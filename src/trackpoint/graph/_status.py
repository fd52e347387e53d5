"""Restore status objects: TF's assertions, with messages that say what to change.

`LoadStatus` (object-based checkpoints), `NameBasedLoadStatus` (TF1 checkpoints, matched by
variable names) and `InitializationOnlyStatus` (`restore(None)`) share TF's methods:
`assert_consumed()`, `assert_existing_objects_matched()`, `assert_nontrivial_match()`,
`expect_partial()` — each returns the status. Failures raise `MismatchError` (an
`AssertionError`), whose `unused_checkpoint_values` and `unrestored_objects` hold the
object paths so programs need not parse the text.

What a restore can already tell is wrong — an object of the program that this checkpoint
has nothing for, a part of the checkpoint nothing in the program can take — is warned about
at the restore call itself (`LoadStatus.warn_partial`, a `PartialRestoreWarning` pointing at
the caller's line; `expect_partial=True` on the call silences it). Nothing is warned at
garbage collection: values waiting for objects the program may still create (an unbuilt
Keras layer) are named by `assert_consumed()` only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from trackpoint.errors import MismatchError, PartialRestoreWarning

from ._explain import (
    deferred_hint,
    find_mismatch,
    listing,
    optimizer_sentences,
    rename_sentences,
    side_sentences,
    silence_hint,
    user_stacklevel,
)
from ._view import walk_values

if TYPE_CHECKING:
    from ._explain import Call
    from ._matching import Restorer

__all__ = ["InitializationOnlyStatus", "LoadStatus", "NameBasedLoadStatus"]


def _listing(items: list[str]) -> str:
    return listing(items, "err.unused_checkpoint_values")


class _StatusBase:
    def expect_partial(self) -> Any:
        """Silence the warning about unused checkpoint values; returns the status."""
        return self

    def warn_partial(self, call: str | None = None) -> None:
        """Warn about what the restore certainly missed (see `LoadStatus.warn_partial`).

        This kind of status knows of nothing to warn about.
        """
        del call

    def run_restore_ops(self, session: object = None) -> None:
        """Does nothing: values are restored eagerly (kept for TF compatibility)."""
        del session

    def initialize_or_restore(self, session: object = None) -> None:
        """Does nothing: values are restored eagerly (kept for TF compatibility)."""
        del session


class LoadStatus(_StatusBase):
    """The result of restoring an object-based checkpoint (`Checkpoint.restore/read`)."""

    def __init__(
        self, restorer: Restorer, root: object, prefix: str, call: Call = "restore"
    ) -> None:
        self._restorer = restorer
        self._root = root
        self.prefix = prefix
        self._call: Call = call

    # -- facts ----------------------------------------------------------------------------

    @property
    def unused_checkpoint_values(self) -> tuple[str, ...]:
        """Object paths of checkpoint values that were not restored (yet)."""
        restorer = self._restorer
        return tuple(sorted({restorer.display(node) for node, _ in restorer.unused_values()}))

    @property
    def unrestored_objects(self) -> tuple[str, ...]:
        """Object paths in the program that hold values but matched nothing in the checkpoint."""
        return tuple(self._unrestored_live())

    def _unrestored_live(self) -> list[str]:
        restorer = self._restorer
        bound_ids = restorer.bound_ids()
        missing = []
        reported: set[int] = set()  # a value reachable by two paths is named once
        for obj, display, names in walk_values(self._root):
            saved = bound_ids.get(obj)
            restored = saved is not None and all(restorer.is_restored(saved, n) for n in names)
            if not restored and id(obj) not in reported:
                reported.add(id(obj))
                missing.append(display())
        return missing

    # -- assertions -------------------------------------------------------------------------

    def assert_consumed(self) -> LoadStatus:
        """Every value in the checkpoint was used and every object in the program restored.

        Raises:
            MismatchError: naming what was left over on each side, and the likely fix.
        """
        self.assert_existing_objects_matched()
        restorer = self._restorer
        unused = self.unused_checkpoint_values
        pending = restorer.pending_slots()
        if unused or pending:
            lines = [f"{len(unused)} checkpoint value(s) were not used: {_listing(list(unused))}"]
            lines += self._explain_unused()
            unbound = [n for n in restorer.deferred if n not in restorer.bound]
            # A child of the root waits only for the user to attach it: the two sides of
            # the explanation above name it, with its fix. Deeper ones wait to be built.
            deferred = sorted(
                {restorer.display(n) for n in unbound if len(restorer.path(n) or ()) > 1}
            )
            if deferred:
                # Values kept for objects created later (an unbuilt layer or optimizer):
                # say so, since creating them is the fix, not a change of names.
                framework = find_mismatch(restorer).framework
                lines.append(
                    f"{len(deferred)} object(s) of the checkpoint wait for the program to "
                    f"create them ({_listing(deferred)}): " + deferred_hint(framework, self._call)
                )
            if pending:
                waiting = [
                    f"{restorer.display(opt)}'s state {name!r} for {restorer.display(var)}"
                    for opt, var, name, _ in pending
                ]
                lines.append(
                    "optimizer state waits for its "
                    + ("optimizer" if pending[0][0] not in restorer.bound else "variable")
                    + f": {_listing(waiting)}"
                )
            lines.append("or " + silence_hint(self._call))
            raise MismatchError("; ".join(lines), unused_checkpoint_values=unused)
        return self

    def assert_existing_objects_matched(self) -> LoadStatus:
        """Every object of the program that holds values got them from the checkpoint.

        Raises:
            MismatchError: naming the objects, and what in the checkpoint they may be.
        """
        missing = self._unrestored_live()
        if missing:
            lines = [
                f"{len(missing)} object(s) in the program got no value from the checkpoint "
                f"'{self.prefix}': {_listing(missing)}"
            ]
            lines += self._explain_unused()
            raise MismatchError(
                "; ".join(lines),
                unused_checkpoint_values=self.unused_checkpoint_values,
                unrestored_objects=tuple(missing),
            )
        return self

    def assert_nontrivial_match(self) -> LoadStatus:
        """Something besides the root was matched.

        Raises:
            MismatchError: nothing in the checkpoint matched the program.
        """
        if len(self._restorer.bound) <= 1:
            saved = [name for name, _ in self._restorer.graph.children(0)]
            raise MismatchError(
                f"nothing in the checkpoint '{self.prefix}' matched the program: the checkpoint's "
                f"root has {', '.join(saved) or 'no children'}; build the Checkpoint with the "
                "same names (Checkpoint(model=..., optimizer=...))",
                unused_checkpoint_values=self.unused_checkpoint_values,
            )
        return self

    def expect_partial(self) -> LoadStatus:
        """Accepted, as TF has it; returns the status.

        What the restore could tell was missing was warned about at the call already:
        silence that with `restore(path, expect_partial=True)` (or `read`,
        `load_weights`). Kept so that TF code runs unchanged.
        """
        return self

    # -- the warning at the call -----------------------------------------------------------

    def warn_partial(self, call: str | None = None) -> None:
        """Warn, once and at the caller's line, about what this restore certainly missed.

        Called by the restore call itself (`Checkpoint.restore`/`read`, `load_weights`)
        unless it was given `expect_partial=True`: an object of the program that this
        checkpoint has nothing for, or a part of the checkpoint nothing can take.

        Args:
            call: The user's call to name in the message, when it is not the restore
                call that made this status (`restore_or_initialize` restores through
                `Checkpoint.restore(..., expect_partial=True)`, then warns in its own name).
        """
        mismatch = find_mismatch(self._restorer)
        if not mismatch.certain:
            return
        name = call or self._call
        lines = [f"{name} of '{self.prefix}' was partial"]
        lines += rename_sentences(mismatch, certain_only=True)
        lines += side_sentences(mismatch, certain_only=True)
        lines += optimizer_sentences(mismatch, self._restorer, self._call)
        lines.append(silence_hint(name))
        warnings.warn("; ".join(lines), PartialRestoreWarning, stacklevel=user_stacklevel())

    # -- explanations -------------------------------------------------------------------

    def _explain_unused(self) -> list[str]:
        """Both sides side by side, renames paired by structure, and a missing optimizer."""
        mismatch = find_mismatch(self._restorer)
        return (
            rename_sentences(mismatch)
            + side_sentences(mismatch)
            + optimizer_sentences(mismatch, self._restorer, self._call)
        )


class NameBasedLoadStatus(_StatusBase):
    """The result of restoring a TF1 name-based checkpoint (no object graph) by names."""

    def __init__(
        self, prefix: str, matched: dict[str, str], unmatched_live: list[str], keys: list[str]
    ) -> None:
        self.prefix = prefix
        self.matched = matched  # object path → checkpoint key
        self._unmatched_live = unmatched_live
        used = set(matched.values())
        self._unused = [k for k in keys if k not in used]

    @property
    def unused_checkpoint_values(self) -> tuple[str, ...]:
        """Checkpoint keys no variable of the program matched."""
        return tuple(self._unused)

    @property
    def unrestored_objects(self) -> tuple[str, ...]:
        """Variables of the program whose name matched no checkpoint key."""
        return tuple(self._unmatched_live)

    def assert_consumed(self) -> NameBasedLoadStatus:
        """Every checkpoint key was used and every variable restored."""
        self.assert_existing_objects_matched()
        if self._unused:
            raise MismatchError(
                f"{len(self._unused)} key(s) of the name-based checkpoint '{self.prefix}' matched "
                f"no variable: {_listing(self._unused)}; name-based checkpoints are matched by "
                "variable name (Variable(name=...)) or by object path",
                unused_checkpoint_values=self.unused_checkpoint_values,
            )
        return self

    def assert_existing_objects_matched(self) -> NameBasedLoadStatus:
        """Every variable of the program found its name in the checkpoint."""
        if self._unmatched_live:
            raise MismatchError(
                f"{len(self._unmatched_live)} variable(s) found no key in the name-based "
                f"checkpoint '{self.prefix}': {_listing(self._unmatched_live)}; give them the "
                "names the checkpoint uses (Variable(name='dense/kernel'))",
                unrestored_objects=self.unrestored_objects,
            )
        return self

    def assert_nontrivial_match(self) -> NameBasedLoadStatus:
        """At least one variable matched."""
        if not self.matched:
            raise MismatchError(
                f"no variable of the program matched a key of the name-based checkpoint "
                f"'{self.prefix}'",
                unused_checkpoint_values=self.unused_checkpoint_values,
            )
        return self

    def expect_partial(self) -> NameBasedLoadStatus:
        """Accepted for TF compatibility; returns the status."""
        return self


class InitializationOnlyStatus(_StatusBase):
    """The status of `restore(None)`: nothing was restored, every assertion fails."""

    def _fail(self) -> MismatchError:
        return MismatchError(
            "no checkpoint was given (restore(None)): nothing was restored; pass a path, e.g. "
            "latest_checkpoint(folder), and check it is not None"
        )

    def assert_consumed(self) -> InitializationOnlyStatus:
        """Always fails: nothing was restored."""
        raise self._fail()

    def assert_existing_objects_matched(self) -> InitializationOnlyStatus:
        """Always fails: nothing was restored."""
        raise self._fail()

    def assert_nontrivial_match(self) -> InitializationOnlyStatus:
        """Always fails: nothing was restored."""
        raise self._fail()

    def expect_partial(self) -> InitializationOnlyStatus:
        """Accepted; returns the status."""
        return self
