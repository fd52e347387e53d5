"""Restore status objects: TF's assertions, with messages that say what to change.

`LoadStatus` (object-based checkpoints), `NameBasedLoadStatus` (TF1 checkpoints, matched by
variable names) and `InitializationOnlyStatus` (`restore(None)`) share TF's methods:
`assert_consumed()`, `assert_existing_objects_matched()`, `assert_nontrivial_match()`,
`expect_partial()` — each returns the status. Failures raise `MismatchError` (an
`AssertionError`), whose `unused_checkpoint_values` and `unrestored_objects` hold the
object paths so programs need not parse the text.

When values of the checkpoint were never used and `expect_partial()` was not called, a
`PartialRestoreWarning` lists them once, when the status is garbage-collected (deferred
restorations can still use values until then).
"""

from __future__ import annotations

import difflib
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trackpoint.errors import MismatchError, PartialRestoreWarning

from ._keys import display_path
from ._view import GraphView, walk_values

if TYPE_CHECKING:
    from ._matching import Restorer

__all__ = ["InitializationOnlyStatus", "LoadStatus", "NameBasedLoadStatus"]

_MAX_LISTED = 10
_OPTIMIZER_HINTS = ("optimizer", "opt", "optim")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", … and {more} more (see err.unused_checkpoint_values)" if more > 0 else "")


def _looks_like_optimizer(name: str) -> bool:
    lowered = name.lower()
    return lowered in _OPTIMIZER_HINTS or "optim" in lowered


@dataclass(slots=True)
class _Flags:
    expect_partial: bool = False
    warned: bool = False


def _warn_unused(restorer: Restorer, flags: _Flags) -> None:
    if flags.expect_partial or flags.warned:
        return
    unused = sorted({restorer.display(node) for node, _ in restorer.unused_values()})
    if unused:
        flags.warned = True
        warnings.warn(
            f"{len(unused)} value(s) of the checkpoint were not restored: {_listing(unused)}; "
            "call status.expect_partial() if that is intended, or status.assert_consumed() "
            "to see why",
            PartialRestoreWarning,
            stacklevel=2,
        )


class _StatusBase:
    def expect_partial(self) -> Any:
        """Silence the warning about unused checkpoint values; returns the status."""
        return self

    def run_restore_ops(self, session: object = None) -> None:
        """Does nothing: values are restored eagerly (kept for TF compatibility)."""
        del session

    def initialize_or_restore(self, session: object = None) -> None:
        """Does nothing: values are restored eagerly (kept for TF compatibility)."""
        del session


class LoadStatus(_StatusBase):
    """The result of restoring an object-based checkpoint (`Checkpoint.restore/read`)."""

    def __init__(self, restorer: Restorer, root: object, prefix: str) -> None:
        self._restorer = restorer
        self._root = root
        self.prefix = prefix
        self._flags = _Flags()
        weakref.finalize(self, _warn_unused, restorer, self._flags)

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
            deferred = sorted(
                {restorer.display(n) for n in restorer.deferred if n not in restorer.bound}
            )
            if deferred:
                # Values kept for objects created later (an unbuilt layer or optimizer):
                # say so, since creating them is the fix, not a change of names.
                lines.append(
                    f"{len(deferred)} object(s) of the checkpoint wait for the program to "
                    f"create them ({_listing(deferred)}) and are restored when they appear: "
                    "build the model and the optimizer first (Keras: call the model once, "
                    "then optimizer.build(model.trainable_variables))"
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
            lines.append("or call status.expect_partial() if a partial restore is intended")
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
            lines += self._explain_unused(live_side=True)
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
        """Silence the warning about unused checkpoint values; returns the status."""
        self._flags.expect_partial = True
        return self

    # -- explanations -------------------------------------------------------------------

    def _explain_unused(self, live_side: bool = False) -> list[str]:
        """Sentences that name the likely cause: a rename, a missing optimizer."""
        restorer = self._restorer
        graph = restorer.graph
        hints: list[str] = []
        live_by_parent = self._unbound_live_children()
        for parent_id, live_children in live_by_parent.items():
            saved_children = [
                (name, child_id)
                for name, child_id in graph.children(parent_id)
                if self._unbound_with_values(child_id)
            ]
            saved_names = [name for name, _ in saved_children]
            for live_name, live_shapes in live_children.items():
                for match in difflib.get_close_matches(live_name, saved_names, n=1, cutoff=0.5):
                    node_id = dict(saved_children)[match]
                    same = sorted(self._saved_shapes(node_id)) == sorted(live_shapes)
                    parent = restorer.path(parent_id) or ()
                    hints.append(
                        f"{display_path((*parent, live_name))} has no value in the checkpoint; "
                        f"the checkpoint has {display_path((*parent, match))}"
                        + (" (same shapes)" if same else "")
                        + " — was it renamed?"
                    )
                    saved_names.remove(match)
        root_saved = {
            name for name, child_id in graph.children(0) if self._unbound_with_values(child_id)
        }
        for name in sorted(root_saved):
            if _looks_like_optimizer(name) and name not in live_by_parent.get(0, {}):
                hints.append(
                    f"the checkpoint holds optimizer state under {name!r} but the program's "
                    f"Checkpoint has no {name!r}: pass Checkpoint(model=model, {name}=optimizer)"
                )
        if live_side:
            saved_root = {name for name, _ in graph.children(0)}
            for name in sorted(live_by_parent.get(0, {})):
                if _looks_like_optimizer(name) and name not in saved_root:
                    hints.append(
                        f"the program's {name!r} has no state in the checkpoint: it was saved "
                        f"without an optimizer (its root has {', '.join(sorted(saved_root))}); "
                        "the optimizer starts fresh — call status.expect_partial() to accept that"
                    )
        return hints

    def _unbound_live_children(self) -> dict[int, dict[str, list[tuple[int, ...]]]]:
        """For each bound saved node: its live children that matched nothing, with shapes."""
        restorer = self._restorer
        bound_ids = restorer.bound_ids()
        out: dict[int, dict[str, list[tuple[int, ...]]]] = {}
        for node_id, trackable in restorer.trackables.items():
            for name, child in trackable.trackable_children().items():
                if child in bound_ids:
                    continue
                try:
                    shapes = [
                        value.value.shape for n in GraphView(child).nodes for value in n.values
                    ]
                except Exception:  # noqa: BLE001 - a hint must never mask the real error
                    shapes = []
                if shapes:
                    out.setdefault(node_id, {})[name] = shapes
        return out

    def _saved_shapes(self, node_id: int) -> list[tuple[int, ...]]:
        restorer = self._restorer
        graph = restorer.graph
        shapes = []
        seen = {node_id}
        stack = [node_id]
        while stack:
            current = stack.pop()
            for _, key in graph.attributes(current):
                if key in restorer.reader:
                    shapes.append(restorer.reader.info(key).shape)
            for _, child_id in graph.children(current):
                if child_id not in seen and 0 <= child_id < len(graph):
                    seen.add(child_id)
                    stack.append(child_id)
        return shapes

    def _unbound_with_values(self, node_id: int) -> bool:
        restorer = self._restorer
        return (
            0 <= node_id < len(restorer.graph)
            and node_id not in restorer.bound
            and restorer.has_values(node_id)
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
        self._flags = _Flags()

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
        self._flags.expect_partial = True
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
