"""Why a restore was partial: both sides side by side, paired by structure, with the fix.

After a restore, two lists say what did not meet:

- **in the program**: live objects holding values under a matched object by a name the
  checkpoint's object does not have — nothing in this checkpoint can ever reach them;
- **in the checkpoint**: saved objects holding unused values under a matched object,
  which the live object neither has nor can wait for (it cannot notice new children), or
  any saved child of the root the program lacks (the `Checkpoint(...)` the user built
  names what is restored; the root's own `save_counter` excepted).

Both are *certain* at the restore call, so `Checkpoint.restore`/`read` and `load_weights`
warn about them there (`PartialRestoreWarning`), at the caller's line. Values waiting for
an object the program may still create (an unbuilt Keras layer, an attribute set after
`restore`) are not certain and are named only by `status.assert_consumed()`.

Objects of the two sides under the same parent are paired as renames: first by structure
(the same value names and shapes below them), then by shapes alone, and by name
similarity only to break ties or when nothing else relates them. Hints (a forgotten or
missing optimizer, objects still to be built) speak of the call the user made and of the
framework their objects come from.
"""

from __future__ import annotations

import difflib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trackpoint._stack import user_frame, user_stacklevel

from ._keys import SAVE_COUNTER, VARIABLE_VALUE, display_path
from ._view import GraphView, walk_values

if TYPE_CHECKING:
    from ._matching import BoundIds, Restorer

__all__ = [
    "Call",
    "Mismatch",
    "Side",
    "find_mismatch",
    "framework_of",
    "user_frame",
    "user_stacklevel",
]

#: The user-level call a restore came from; messages name its silencing keyword.
Call = Literal["restore", "read", "load_weights"]
#: What the objects of a restore come from; hints are worded for it.
Framework = Literal["keras", "torch", "jax", "numpy"]

_MAX_LISTED = 10
#: Nodes looked at for a saved object's signature (enough for any layer's values).
_SIGNATURE_NODES = 1000
_OPTIMIZER_HINTS = ("optimizer", "opt", "optim")
_FRAMEWORKS: dict[str, Framework] = {
    "keras": "keras",
    "torch": "torch",
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "jax",
    "optax": "jax",
}


def listing(items: list[str], more_in: str = "") -> str:
    """Up to ten items, comma-separated, and how many more (where to find them, if given)."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    if more <= 0:
        return shown
    return shown + f", … and {more} more" + (f" (see {more_in})" if more_in else "")


def looks_like_optimizer(name: str) -> bool:
    """Whether a child's name says it is an optimizer (`optimizer`, `opt`, `optim_g`)."""
    lowered = name.lower()
    return lowered in _OPTIMIZER_HINTS or "optim" in lowered


def framework_of(objects: list[object]) -> Framework:
    """The framework the objects come from (by their type's package), Keras first.

    A Keras layer on the PyTorch backend is a `torch.nn.Module` too; its type's package
    says Keras, which is what its user wrote.
    """
    found: set[Framework] = set()
    for obj in objects:
        package = (type(obj).__module__ or "").partition(".")[0]
        framework = _FRAMEWORKS.get(package)
        if framework is not None:
            found.add(framework)
    for framework in ("keras", "torch", "jax"):
        if framework in found:
            return framework
    return "numpy"


# ---------------------------------------------------------------------------------------
# The two sides


@dataclass(frozen=True, slots=True)
class Side:
    """One object on one side: the parent it hangs under and its name there.

    Attributes:
        parent: The saved node of the (matched) parent.
        name: Its local name under that parent.
        display: How messages name it (`model.fc1`).
        signature: (value path below it, shape) of each of its values, sorted.
        certain: Whether nothing can change it later (see the module docstring).
    """

    parent: int
    name: str
    display: str
    signature: tuple[tuple[str, tuple[int, ...]], ...]
    certain: bool


@dataclass(frozen=True, slots=True)
class Mismatch:
    """What did not meet in a restore, and the renames that explain some of it.

    Attributes:
        program: Objects of the program that got nothing (unpaired).
        checkpoint: Objects of the checkpoint that nothing took (unpaired).
        renames: (program side, checkpoint side) pairs, most alike first.
        framework: What the program's objects come from.
    """

    program: list[Side]
    checkpoint: list[Side]
    renames: list[tuple[Side, Side]]
    framework: Framework

    @property
    def certain(self) -> bool:
        """Whether anything here is certain at the restore call (worth a warning)."""
        return (
            any(s.certain for s in self.program)
            or any(s.certain for s in self.checkpoint)
            or any(p.certain or c.certain for p, c in self.renames)
        )


def find_mismatch(restorer: Restorer) -> Mismatch:
    """Both sides of a restore as it stands now, renames paired (module docstring)."""
    graph = restorer.graph
    bound_ids = restorer.bound_ids()
    program: list[Side] = []
    checkpoint: list[Side] = []
    reported: set[int] = set()
    for parent_id, trackable in restorer.trackables.items():
        saved_children = graph.children(parent_id)
        saved_names = {name for name, _ in saved_children}
        parent_path = restorer.path(parent_id)
        if parent_path is None:
            continue  # a slot variable's node: it has no children of its own
        for name, child in trackable.trackable_children().items():
            if name in saved_names or id(child) in reported or child in bound_ids:
                continue
            signature = _live_signature(child, bound_ids, restorer)
            if signature is None:
                continue  # holds nothing, or only values restored by another path
            reported.add(id(child))
            program.append(
                Side(parent_id, name, display_path((*parent_path, name)), signature, True)
            )
        for name, child_id in saved_children:
            if not 0 <= child_id < len(graph) or child_id in restorer.bound:
                continue
            if parent_id == 0 and name == SAVE_COUNTER:
                continue  # the Checkpoint's own counter: `read` leaves it, as TF's does
            signature = _saved_signature(restorer, child_id)
            if signature is None:
                continue
            certain = parent_id == 0 or child_id not in restorer.deferred
            checkpoint.append(
                Side(parent_id, name, display_path((*parent_path, name)), signature, certain)
            )
    renames = _pair(program, checkpoint)
    paired = {id(side) for pair in renames for side in pair}
    # Only named when there is something to say: it looks at every bound object.
    framework = (
        framework_of([obj for _, obj in restorer.bound.items()])
        if program or checkpoint or restorer.deferred
        else "numpy"
    )
    return Mismatch(
        [s for s in program if id(s) not in paired],
        [s for s in checkpoint if id(s) not in paired],
        renames,
        framework,
    )


def _live_signature(
    obj: object, bound_ids: BoundIds, restorer: Restorer
) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    """(value path, shape) of each value below a live object; None if all are restored."""
    unrestored = False
    for value_obj, _, names in walk_values(obj):
        node = bound_ids.get(value_obj)
        if node is None or not all(restorer.is_restored(node, n) for n in names):
            unrestored = True
            break
    if not unrestored:
        return None
    try:
        nodes = GraphView(obj).nodes
    except Exception:  # noqa: BLE001 - an explanation must never mask the restore itself
        return ()
    return tuple(
        sorted(
            ("/".join((*(node.names or ()), value.name)), tuple(value.value.shape))
            for node in nodes
            if node.names is not None
            for value in node.values
        )
    )


def _saved_signature(
    restorer: Restorer, node_id: int
) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    """(value path, shape) of each value below a saved node; None if none is unused.

    The signature only pairs renames: it stops after `_SIGNATURE_NODES` nodes, so that a
    hostile graph (a chain of a million nodes) costs no more than the restore did.
    """
    graph = restorer.graph
    if not restorer.has_values(node_id) or not _has_unused(restorer, node_id):
        return None
    out: list[tuple[str, tuple[int, ...]]] = []
    seen = {node_id}
    queue: deque[tuple[int, tuple[str, ...]]] = deque([(node_id, ())])
    while queue and len(seen) <= _SIGNATURE_NODES:
        current, names = queue.popleft()
        for attribute, key in graph.attributes(current):
            info = restorer.reader.find_info(key)
            if info is not None:
                out.append(("/".join((*names, attribute)), tuple(info.shape)))
        for name, child_id in graph.children(current):
            if child_id not in seen and 0 <= child_id < len(graph):
                seen.add(child_id)
                queue.append((child_id, (*names, name)))
    return tuple(sorted(out))


def _has_unused(restorer: Restorer, node_id: int) -> bool:
    """Whether a saved node or anything below it holds a value that was not restored."""
    graph = restorer.graph
    seen = bytearray(len(graph))  # a byte per node: the graph may be huge
    seen[node_id] = 1
    stack = [node_id]
    while stack:
        current = stack.pop()
        if any(not restorer.is_restored(current, a) for a, _ in graph.attributes(current)):
            return True
        for child_id in graph.child_ids(current):
            if 0 <= child_id < len(seen) and not seen[child_id]:
                seen[child_id] = 1
                stack.append(child_id)
    return False


def _relation(live: Side, saved: Side) -> int:
    """2: same value names and shapes; 1: same shapes; 0: nothing structural in common."""
    if live.signature and live.signature == saved.signature:
        return 2
    if live.signature and sorted(s for _, s in live.signature) == sorted(
        s for _, s in saved.signature
    ):
        return 1
    return 0


def _pair(program: list[Side], checkpoint: list[Side]) -> list[tuple[Side, Side]]:
    """Pair siblings as renames: by structure, then shapes; names only break ties.

    Names alone pair two objects only when they look alike (difflib ratio ≥ 0.5), as
    `fc1`/`fc_1`: unrelated names with unrelated contents are listed, not guessed at.
    """
    scored = []
    for live in program:
        for saved in checkpoint:
            if live.parent != saved.parent:
                continue
            relation = _relation(live, saved)
            similarity = difflib.SequenceMatcher(None, live.name, saved.name).ratio()
            if relation or similarity >= 0.5:
                scored.append((relation, similarity, live, saved))
    scored.sort(key=lambda item: (-item[0], -item[1]))
    taken: set[int] = set()
    pairs = []
    for _, _, live, saved in scored:
        if id(live) in taken or id(saved) in taken:
            continue
        taken.update((id(live), id(saved)))
        pairs.append((live, saved))
    return pairs


# ---------------------------------------------------------------------------------------
# Sentences


def _value_name(path: str) -> str:
    # `kernel/VARIABLE_VALUE` is the variable `kernel`; a variable node itself is "value".
    if path == VARIABLE_VALUE:
        return "value"
    return path.removesuffix(f"/{VARIABLE_VALUE}")


def _values(side: Side) -> str:
    shown = [f"{_value_name(path)} {list(shape)}" for path, shape in side.signature[:4]]
    more = len(side.signature) - len(shown)
    return ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


def rename_sentences(mismatch: Mismatch, *, certain_only: bool = False) -> list[str]:
    """One sentence per paired rename: both names, and what they have in common."""
    sentences = []
    for live, saved in mismatch.renames:
        if certain_only and not (live.certain or saved.certain):
            continue
        relation = _relation(live, saved)
        if relation == 2:
            common = f"hold the same variables and shapes ({_values(saved)})"
        elif relation == 1:
            common = "hold values of the same shapes under other names"
        else:
            common = "have similar names but different contents"
        sentences.append(
            f"{live.display} in the program and {saved.display} in the checkpoint {common} — "
            f"was {saved.display} renamed to {live.display}? Give the object its saved name "
            "again (or restore from the renamed checkpoint)"
        )
    return sentences


def side_sentences(mismatch: Mismatch, *, certain_only: bool = False) -> list[str]:
    """The unpaired objects of each side, side by side (only the certain ones, if asked)."""
    program = [s.display for s in mismatch.program if s.certain or not certain_only]
    checkpoint = [s.display for s in mismatch.checkpoint if s.certain or not certain_only]
    sentences = []
    if program:
        sentences.append(
            f"{len(program)} object(s) in the program got nothing from the checkpoint: "
            f"{listing(program)}"
        )
    if checkpoint:
        sentences.append(
            f"{len(checkpoint)} object(s) of the checkpoint have no counterpart in the "
            f"program: {listing(checkpoint)}"
        )
    return sentences


def optimizer_sentences(mismatch: Mismatch, restorer: Restorer, call: Call) -> list[str]:
    """A forgotten or missing optimizer, in the words of the call and the framework."""
    framework = mismatch.framework
    sentences = []
    saved_root = sorted(name for name, _ in restorer.graph.children(0))
    for side in mismatch.checkpoint:
        if side.parent != 0 or not looks_like_optimizer(side.name):
            continue
        name = side.name
        if call == "load_weights":
            fix = (
                "compile the model with its optimizer (model.compile(optimizer=...)) before "
                "load_weights to restore that state too"
                if framework == "keras"
                else f"restore it with Checkpoint(root=model, {name}=optimizer).read(...)"
            )
            sentences.append(
                f"the weights hold optimizer state under {name!r} but the model has no "
                f"{name!r}: {fix}"
            )
        else:
            sentences.append(
                f"the checkpoint holds optimizer state under {name!r} but the program's "
                f"Checkpoint has no {name!r}: pass Checkpoint(model=model, {name}=optimizer)"
            )
    for side in mismatch.program:
        if side.parent != 0 or not looks_like_optimizer(side.name):
            continue
        fresh = {
            "torch": (
                "it starts fresh and creates its state at its first optimizer.step(), as "
                "torch optimizers do"
            ),
            "keras": "it starts fresh and builds its state at its first apply_gradients / fit",
            "jax": "its state starts from tx.init(params)",
            "numpy": "it starts fresh",
        }[framework]
        sentences.append(
            f"the program's {side.name!r} has no state in the checkpoint: it was saved without "
            f"an optimizer (its root has {', '.join(saved_root) or 'nothing'}); {fresh}"
        )
    return sentences


def deferred_hint(framework: Framework, call: Call) -> str:
    """How to create the objects a checkpoint's values wait for, in the user's framework."""
    if framework == "keras":
        return (
            "build the model and the optimizer (call the model once on a batch, then "
            "optimizer.build(model.trainable_variables), or fit) and they are restored then"
        )
    if call == "load_weights":
        return "they are restored if the model gets objects of those names"
    if framework == "torch":
        return (
            "torch modules and optimizers do not wait for objects created later: pass every "
            "object to the Checkpoint before restore (Checkpoint(model=model, "
            "optimizer=optimizer))"
        )
    if framework == "jax":
        return "assign them to the Checkpoint (ckpt.opt_state = tx.init(params)) to restore them"
    return "they are restored when the program attaches objects of those names"


def silence_hint(call: str) -> str:
    """How to say a partial restore is intended, at the call the user made."""
    return f"pass {call}(..., expect_partial=True) if a partial restore is intended"
