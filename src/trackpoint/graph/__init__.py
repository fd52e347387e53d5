"""Objects: the trackable protocol, TF's object graph and keys, matching on restore.

Knows objects and the format layer; knows no concrete framework (adapters register types).
"""

from ._keys import OBJECT_GRAPH_KEY as OBJECT_GRAPH_KEY
from ._keys import display_path as display_path
from ._keys import escape_local_name as escape_local_name
from ._matching import Restorer as Restorer
from ._matching import restore_by_name as restore_by_name
from ._module import JSONState as JSONState
from ._module import Module as Module
from ._module import PythonState as PythonState
from ._module import Variable as Variable
from ._saved import SavedGraph as SavedGraph
from ._saved import parse_nodes as parse_nodes
from ._saving import save_graph as save_graph
from ._status import InitializationOnlyStatus as InitializationOnlyStatus
from ._status import LoadStatus as LoadStatus
from ._status import NameBasedLoadStatus as NameBasedLoadStatus
from ._trackable import ArrayValue as ArrayValue
from ._trackable import NumberLeaf as NumberLeaf
from ._trackable import Trackable as Trackable
from ._trackable import Value as Value
from ._trackable import register as register
from ._trackable import register_finder as register_finder
from ._trackable import register_number_leaves as register_number_leaves
from ._trackable import to_trackable as to_trackable
from ._view import GraphView as GraphView
from ._walk import walk as walk

__all__ = [
    "OBJECT_GRAPH_KEY",
    "ArrayValue",
    "GraphView",
    "InitializationOnlyStatus",
    "JSONState",
    "LoadStatus",
    "Module",
    "NameBasedLoadStatus",
    "NumberLeaf",
    "PythonState",
    "Restorer",
    "SavedGraph",
    "Trackable",
    "Value",
    "Variable",
    "display_path",
    "escape_local_name",
    "parse_nodes",
    "register",
    "register_finder",
    "register_number_leaves",
    "restore_by_name",
    "save_graph",
    "to_trackable",
    "walk",
]
