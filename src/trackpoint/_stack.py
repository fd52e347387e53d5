"""Where the user's code is on the stack, for warnings that point at the user's line.

A warning raised deep inside trackpoint (a restore through a manager, a state-file rule
met by `latest_checkpoint`) must name the line of the program that made the call, not a
line of trackpoint: each trackpoint frame between them adds one to the `stacklevel`.
Every layer may import this module (it imports nothing of trackpoint).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["user_frame", "user_stacklevel"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The `stacklevel` that makes a warning point at the first caller outside trackpoint.

    Called by the function that calls `warnings.warn`: level 1 is that function, and each
    trackpoint frame above it (`Checkpoint.restore` → `read`, a manager) adds one, so the
    warning names the user's line however deep inside trackpoint it was raised.
    """
    return _first_outside(sys._getframe(1))[0]


def user_frame() -> tuple[int, FrameType]:
    """`user_stacklevel()` and the user's frame it names (to look at the caller's names)."""
    return _first_outside(sys._getframe(1))


def _first_outside(frame: FrameType) -> tuple[int, FrameType]:
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level, frame
