"""Compare what trackpoint reads with an `expected.json` that TensorFlow's own reader wrote.

The JSON layout is the one `tests/fixtures/generate.py` writes: per checkpoint `prefix`,
`tensors` {key: {dtype, shape, values, raw_hex?}} and the decoded `object_graph` (protobuf
JSON mapping with the proto's field names); per folder the sha256 of its `files`. Values
are row-major; complex as [re, im]; strings as UTF-8 text, or {"hex": ...} for bytes that
are not UTF-8.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format

from trackpoint.format.protos import trackable_object_graph_pb2
from trackpoint.reader import OBJECT_GRAPH_KEY, CheckpointReader

_INTEGER_NAMES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"int4", "uint4", "int2", "uint2"}
    | {"qint8", "quint8", "qint16", "quint16", "qint32"}
)


def _text_or_hex(item: bytes) -> str | dict[str, str]:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": item.hex()}


def encode_values(value: Any, dtype_name: str) -> list[Any]:
    """A tensor's values as expected.json spells them (as generate.py's `_values`)."""
    flat = np.asarray(value, dtype=object if dtype_name == "string" else None).ravel()
    if dtype_name == "string":
        return [_text_or_hex(item) for item in flat]
    if dtype_name.startswith("complex"):
        return [[float(x.real), float(x.imag)] for x in flat]
    if dtype_name == "bool":
        return [bool(x) for x in flat]
    if dtype_name in _INTEGER_NAMES:
        return [int(x) for x in flat]
    return [float(x) for x in flat]


def raw_hex(value: Any) -> str:
    """The bytes of a numeric array as stored (row-major, little-endian), in hex."""
    return np.ascontiguousarray(value).view(np.uint8).tobytes().hex()


def object_graph_dict(serialized: bytes) -> dict[str, Any]:
    """A serialized TrackableObjectGraph in the JSON mapping expected.json uses."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(serialized)
    return json_format.MessageToDict(graph, preserving_proto_field_name=True)


def mismatches(reader: CheckpointReader, expected: dict[str, Any]) -> list[str]:
    """Every difference between `reader` and one checkpoint of an expected.json (empty: none)."""
    problems: list[str] = []
    want = expected["tensors"]
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    if set(shapes) != set(want):
        problems.append(
            f"keys: trackpoint has extra {sorted(set(shapes) - set(want))}, "
            f"misses {sorted(set(want) - set(shapes))}"
        )
    for key in sorted(set(shapes) & set(want)):
        entry = want[key]
        if str(dtypes[key]) != entry["dtype"]:
            problems.append(f"{key}: dtype {dtypes[key]} != {entry['dtype']}")
        if shapes[key] != entry["shape"]:
            problems.append(f"{key}: shape {shapes[key]} != {entry['shape']}")
        if key == OBJECT_GRAPH_KEY:
            graph = object_graph_dict(reader.get_tensor(key).item())
            ours, theirs = graph.get("nodes", []), expected["object_graph"].get("nodes", [])
            if len(ours) != len(theirs):
                problems.append(f"{key}: {len(ours)} graph nodes, TF read {len(theirs)}")
            problems.extend(
                f"{key}: node {i} is {a}, TF read {b}"
                for i, (a, b) in enumerate(zip(ours, theirs, strict=False))
                if a != b
            )
            continue
        value = reader.get_tensor(key)
        if list(value.shape) != entry["shape"]:
            problems.append(f"{key}: array shape {list(value.shape)} != {entry['shape']}")
        got = encode_values(value, entry["dtype"])
        if got != entry["values"]:
            problems.append(f"{key}: values {got} != {entry['values']}")
        if "raw_hex" in entry and raw_hex(value) != entry["raw_hex"]:
            problems.append(f"{key}: bytes {raw_hex(value)} != {entry['raw_hex']}")
    if OBJECT_GRAPH_KEY not in want and "object_graph" in expected:
        problems.append("expected.json has an object graph but no graph key")
    return problems
