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

from .errors import CheckpointNotFoundError as CheckpointNotFoundError
from .errors import CorruptCheckpointError as CorruptCheckpointError
from .errors import IncompleteCheckpointError as IncompleteCheckpointError
from .errors import InvalidValueError as InvalidValueError
from .errors import KeyNotFoundError as KeyNotFoundError
from .errors import NotTrackableError as NotTrackableError
from .errors import TrackpointError as TrackpointError
from .errors import TrackpointWarning as TrackpointWarning
from .errors import UnsupportedCheckpointError as UnsupportedCheckpointError
from .format import DType as DType
from .reader import CheckpointReader as CheckpointReader
from .reader import latest_checkpoint as latest_checkpoint
from .reader import list_variables as list_variables
from .reader import load_checkpoint as load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointReader",
    "CorruptCheckpointError",
    "DType",
    "IncompleteCheckpointError",
    "InvalidValueError",
    "KeyNotFoundError",
    "NotTrackableError",
    "TrackpointError",
    "TrackpointWarning",
    "UnsupportedCheckpointError",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
]

# Reprs and docs show the public path (trackpoint.X), not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "trackpoint"
del _name, _obj
