"""trackpoint: TensorFlow's checkpoints for every Python ML framework, without TensorFlow.

Reads and writes TensorFlow's own checkpoint format byte for byte.

Example:
    >>> import tempfile, numpy as np, trackpoint
    >>> from trackpoint.format import BundleWriter
    >>> prefix = tempfile.mkdtemp() + "/ckpt"
    >>> with BundleWriter(prefix) as writer:
    ...     writer.add("w", np.arange(3, dtype=np.int32))
    >>> trackpoint.list_variables(prefix)
    [('w', [3])]
"""

import contextlib

from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointOptions as CheckpointOptions
from .checkpoint import load_weights as load_weights
from .checkpoint import save_weights as save_weights
from .errors import AsyncSaveError as AsyncSaveError
from .errors import CheckpointNotFoundError as CheckpointNotFoundError
from .errors import CorruptCheckpointError as CorruptCheckpointError
from .errors import DTypeMismatchError as DTypeMismatchError
from .errors import IncompleteCheckpointError as IncompleteCheckpointError
from .errors import InvalidValueError as InvalidValueError
from .errors import KeyNotFoundError as KeyNotFoundError
from .errors import MismatchError as MismatchError
from .errors import NotTrackableError as NotTrackableError
from .errors import PartialRestoreWarning as PartialRestoreWarning
from .errors import ShapeMismatchError as ShapeMismatchError
from .errors import TrackpointError as TrackpointError
from .errors import TrackpointWarning as TrackpointWarning
from .errors import UnsupportedCheckpointError as UnsupportedCheckpointError
from .format import DType as DType
from .graph import JSONState as JSONState
from .graph import Module as Module
from .graph import PythonState as PythonState
from .graph import Trackable as Trackable
from .graph import Variable as Variable
from .graph import register as register
from .manager import CheckpointManager as CheckpointManager
from .reader import CheckpointReader as CheckpointReader
from .reader import latest_checkpoint as latest_checkpoint
from .reader import list_variables as list_variables
from .reader import load_checkpoint as load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "AsyncSaveError",
    "Checkpoint",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointOptions",
    "CheckpointReader",
    "CorruptCheckpointError",
    "DType",
    "DTypeMismatchError",
    "IncompleteCheckpointError",
    "InvalidValueError",
    "JSONState",
    "KeyNotFoundError",
    "MismatchError",
    "Module",
    "NotTrackableError",
    "PartialRestoreWarning",
    "PythonState",
    "ShapeMismatchError",
    "Trackable",
    "TrackpointError",
    "TrackpointWarning",
    "UnsupportedCheckpointError",
    "Variable",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "load_weights",
    "register",
    "save_weights",
]

# Reprs and docs show the public path (trackpoint.X), not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "trackpoint"
del _name, _obj
