"""How bytes move fast: save plans, parallel shard writers, parallel reads into place.

The engine joins the format layer (what the bytes are) to the files: `write_bundle`
writes a whole TensorBundle from host arrays with a few threads; `read_into_many` reads
many tensors straight into their destination arrays, verifying checksums on the way;
`AsyncSaver` snapshots values into reused host buffers and writes them in the background.
Both are plain functions, safe to call from any thread (an async save's background
writer calls `write_bundle` with its snapshot).

Knows bytes, arrays and threads; knows nothing of objects or frameworks.
"""

from ._buffers import aligned_empty as aligned_empty
from ._plan import SavePlan as SavePlan
from ._plan import WriteItem as WriteItem
from ._plan import default_num_shards as default_num_shards
from ._plan import default_threads as default_threads
from ._plan import plan_save as plan_save
from ._read import read_into_many as read_into_many
from ._snapshot import AsyncSaver as AsyncSaver
from ._write import write_bundle as write_bundle

__all__ = [
    "AsyncSaver",
    "SavePlan",
    "WriteItem",
    "aligned_empty",
    "default_num_shards",
    "default_threads",
    "plan_save",
    "read_into_many",
    "write_bundle",
]
