"""Types shared by several layers."""

from __future__ import annotations

import os
from typing import TypeAlias

#: A filesystem path given by a user: a string or any `os.PathLike[str]`.
PathLike: TypeAlias = "str | os.PathLike[str]"
