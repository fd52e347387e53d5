"""TensorFlow's checkpoint key spelling (TF format doc §7.3, §7.4).

An object's path is the local names along its first-discovered (breadth-first) path from
the root, each escaped (`.` → `..`, then `/` → `.S`) and joined with `/`. A value's key is
`<path>/.ATTRIBUTES/<escaped name>`; a slot variable's key is
`<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<escaped slot>/.ATTRIBUTES/VARIABLE_VALUE`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
OBJECT_ATTRIBUTES = ".ATTRIBUTES"
OPTIMIZER_SLOT = ".OPTIMIZER_SLOT"
VARIABLE_VALUE = "VARIABLE_VALUE"
PYTHON_STATE = "py_state"
SAVE_COUNTER = "save_counter"


def escape_local_name(name: str) -> str:
    """Escape one edge name the way TF does.

    Example:
        >>> escape_local_name("a/b.c")
        'a.Sb..c'
    """
    return name.replace(".", "..").replace("/", ".S")


def object_path(names: Sequence[str]) -> str:
    """The path of an object reached from the root through `names`.

    Example:
        >>> object_path(["model", "dense_1"])
        'model/dense_1'
    """
    return "/".join(escape_local_name(n) for n in names)


def attribute_key(path: str, escaped_name: str) -> str:
    """The bundle key of a value: `<path>/.ATTRIBUTES/<name>` (`name` already escaped once).

    TF escapes the tensor name into `SerializedTensor.name` and once more into the key;
    for names without `.` or `/` (all real ones) both spellings are the name itself.

    Example:
        >>> attribute_key("model/dense_1/kernel", VARIABLE_VALUE)
        'model/dense_1/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    """
    return f"{path}/{OBJECT_ATTRIBUTES}/{escape_local_name(escaped_name)}"


def slot_key(variable_path: str, optimizer_path: str, slot_name: str) -> str:
    """The bundle key of an optimizer slot variable.

    Example:
        >>> slot_key("net/shared", "opt", "m")
        'net/shared/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE'
    """
    return (
        f"{variable_path}/{OPTIMIZER_SLOT}/{optimizer_path}/{escape_local_name(slot_name)}"
        f"/{OBJECT_ATTRIBUTES}/{VARIABLE_VALUE}"
    )


def display_path(names: Sequence[str]) -> str:
    """How messages name an object: `model.dense_1.kernel` (root: `(root)`).

    Example:
        >>> display_path(["model", "layers", "0"])
        'model.layers[0]'
        >>> display_path([])
        '(root)'
    """
    if not names:
        return "(root)"
    out = ""
    for name in names:
        if name.isdigit():
            out += f"[{name}]"
        elif name.isidentifier():
            out += f".{name}" if out else name
        else:
            out += f"[{name!r}]"
    return out
