"""Types shared by several layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import os

#: A filesystem path given by a user: a string or any `os.PathLike[str]`.
PathLike: TypeAlias = "str | os.PathLike[str]"
