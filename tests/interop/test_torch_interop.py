"""A PyTorch checkpoint as TensorFlow sees it: keys, bytes, object graph, restore, and back.

A torch model (a `Sequential` under a named attribute, BatchNorm buffers, a bfloat16
embedding) trained a few real steps by Adam, SGD with momentum or AdamW is saved with
`trackpoint.Checkpoint(model=..., optimizer=...)`. Then TensorFlow, not trackpoint:

- `tf.train.load_checkpoint` lists exactly the keys the documented mapping gives
  (`model/<attribute path>/...`, optimizer state as slots `.OPTIMIZER_SLOT/optimizer/<name>`)
  with each torch tensor's dtype, shape and bytes;
- TF's own `TrackableObjectGraph` proto parses the object graph, and each slot reference
  joins the parameter's node to a node holding that slot's key;
- `tf.train.Checkpoint.restore` puts every value into an equivalent tree of `tf.Variable`s
  and a TF1 optimizer (`tf.compat.v1.train.*Optimizer`, whose slots TF2 checkpointing
  restores through the graph's slot references, by slot name) with `assert_consumed()`;
- what TF then writes restores into a fresh torch model and optimizer, bit for bit.

TF creates a slot on restore only with its variable's shape, so the scalar `step` slots of
Adam/AdamW are made (with their own shape) before restoring; every other slot is created
by TensorFlow from the graph's slot references alone.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from torch import nn

import trackpoint
from tests._compare import assert_bitwise_equal

pytestmark = [pytest.mark.tf, pytest.mark.torch]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE = ".ATTRIBUTES/VARIABLE_VALUE"
SLOT = ".OPTIMIZER_SLOT/optimizer"


class Net(nn.Module):
    """Named submodules, a Sequential (children "0", "1", "2"), buffers, a bfloat16 table."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8))
        self.norm = nn.BatchNorm1d(8)  # running stats and an int64 counter as buffers
        self.head = nn.Linear(8, 3)
        self.emb = nn.Embedding(5, 3).to(torch.bfloat16)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.norm(self.encoder(x))) + self.emb(ids).float()
        return out


#: name → (the torch optimizer, the TF1 optimizer that receives its state in TF).
OPTIMIZERS: dict[str, tuple[Any, Any]] = {
    "adam": (
        lambda params: torch.optim.Adam(params, lr=0.01),
        lambda tf: tf.compat.v1.train.AdamOptimizer(0.01),
    ),
    "sgd_momentum": (
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        lambda tf: tf.compat.v1.train.MomentumOptimizer(0.1, 0.9),
    ),
    "adamw": (
        lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05),
        lambda tf: tf.compat.v1.train.AdamOptimizer(0.01),
    ),
}
#: The tensor state each torch optimizer keeps per parameter (torch's names).
SLOT_NAMES = {
    "adam": {"exp_avg", "exp_avg_sq", "step"},
    "sgd_momentum": {"momentum_buffer"},
    "adamw": {"exp_avg", "exp_avg_sq", "step"},
}


def _train(model: Net, optimizer: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(11)
    model.train()
    for _ in range(steps):
        x, ids = torch.randn(6, 4, generator=gen), torch.randint(0, 5, (6,), generator=gen)
        optimizer.zero_grad()
        model(x, ids).pow(2).mean().backward()
        optimizer.step()


def _numpy(tensor: torch.Tensor) -> np.ndarray[Any, Any]:
    """A tensor's bytes as NumPy (bfloat16 through its bits: torch has no NumPy bfloat16)."""
    host = tensor.detach().cpu().contiguous()
    if host.dtype == torch.bfloat16:
        return np.asarray(host.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    return np.asarray(host.numpy())


def _path(name: str) -> str:
    return "model/" + name.replace(".", "/")  # torch's dotted name → the object path


def _expected_values(model: Net, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every tensor key the documented mapping gives, and the torch tensor it holds."""
    values = {f"{_path(name)}/{VALUE}": t for name, t in model.state_dict().items()}
    for name, param in model.named_parameters():
        for slot, state in optimizer.state[param].items():
            values[f"{_path(name)}/{SLOT}/{slot}/{VALUE}"] = state
    return values


@pytest.fixture(scope="module", params=list(OPTIMIZERS))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(optimizer name, model, optimizer, prefix) after three real steps and one save."""
    name = request.param
    model = Net(seed=0)
    optimizer = OPTIMIZERS[name][0](model.parameters())
    _train(model, optimizer, steps=3)
    prefix = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(
        tmp_path_factory.mktemp(name) / "ckpt"
    )
    return name, model, optimizer, prefix


def test_tensorflow_reads_every_parameter_buffer_and_optimizer_state_bit_for_bit(saved, tf):
    name, model, optimizer, prefix = saved
    reader = tf.train.load_checkpoint(prefix)
    expected = _expected_values(model, optimizer)
    slots = {key.split("/")[-3] for key in expected if SLOT in key}
    assert slots == SLOT_NAMES[name]  # the state a real step made, under torch's names
    shapes = reader.get_variable_to_shape_map()
    extra = {
        OBJECT_GRAPH_KEY,
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "optimizer/param_groups/.ATTRIBUTES/py_state",
    }
    assert set(shapes) == set(expected) | extra
    dtypes = reader.get_variable_to_dtype_map()
    for key, tensor in expected.items():
        value = _numpy(tensor)
        assert dtypes[key].name == str(value.dtype), key
        assert shapes[key] == list(value.shape), key
        assert_bitwise_equal(reader.get_tensor(key), value, key)
    assert reader.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE") == 1
    groups = json.loads(reader.get_tensor("optimizer/param_groups/.ATTRIBUTES/py_state"))
    assert len(groups) == len(optimizer.param_groups) == 1
    assert groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert groups[0]["weight_decay"] == optimizer.param_groups[0]["weight_decay"]
    assert "params" not in groups[0]


def _node_ids(graph: Any) -> dict[str, int]:
    """Each node's first path from the root (children by local name), as TF resolves them."""
    ids = {"": 0}
    queue = [("", 0)]
    while queue:
        path, node_id = queue.pop(0)
        for child in graph.nodes[node_id].children:
            child_path = f"{path}/{child.local_name}" if path else child.local_name
            if child_path not in ids:
                ids[child_path] = child.node_id
                queue.append((child_path, child.node_id))
    return ids


def test_object_graph_parsed_by_tensorflow_joins_each_slot_to_its_parameter(saved, tf):
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    _, model, optimizer, prefix = saved
    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    ids = _node_ids(graph)

    for name in model.state_dict():
        attributes = [(a.name, a.checkpoint_key) for a in graph.nodes[ids[_path(name)]].attributes]
        assert attributes == [("VARIABLE_VALUE", f"{_path(name)}/{VALUE}")], name

    references = {
        (ref.original_variable_node_id, ref.slot_name): ref.slot_variable_node_id
        for ref in graph.nodes[ids["optimizer"]].slot_variables
    }
    expected = {
        (ids[_path(name)], slot): f"{_path(name)}/{SLOT}/{slot}/{VALUE}"
        for name, param in model.named_parameters()
        for slot in optimizer.state[param]
    }
    assert set(references) == set(expected)
    assert len(graph.nodes[ids["optimizer"]].slot_variables) == len(expected)
    for (param_node, slot), key in expected.items():
        slot_node = graph.nodes[references[param_node, slot]]
        assert [(a.name, a.checkpoint_key) for a in slot_node.attributes] == [
            ("VARIABLE_VALUE", key)
        ], key
        assert not slot_node.children  # a slot is a plain variable


# -- TensorFlow restores it ------------------------------------------------------------------


def _tf_variable(tf: Any, tensor: torch.Tensor) -> Any:
    """A tf.Variable of the tensor's dtype and shape, filled with -7 (never a saved value)."""
    dtype = tf.as_dtype(_numpy(tensor).dtype)
    return tf.Variable(tf.cast(tf.fill(tuple(tensor.shape), -7), dtype))


def _mirror(tf: Any, module: nn.Module) -> Any:
    """The same attribute tree in TF: tf.Modules, a list for a Sequential, tf.Variables."""
    if isinstance(module, nn.Sequential):
        return [_mirror(tf, child) for child in module]
    out = tf.Module()
    for name, child in module.named_children():
        setattr(out, name, _mirror(tf, child))
    for name, tensor in [
        *module.named_parameters(recurse=False),
        *module.named_buffers(recurse=False),
    ]:
        setattr(out, name, _tf_variable(tf, tensor))
    return out


def _tf_at(tf_model: Any, name: str) -> Any:
    obj = tf_model
    for part in name.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _json_state(tf: Any) -> Any:
    """A `tf.train.experimental.PythonState` that keeps the string it restores."""

    def serialize(self: Any) -> str:
        return str(self.text)

    def deserialize(self: Any, text: bytes) -> None:
        self.text = text.decode("utf-8")  # TF hands over the tensor's bytes

    cls = type(
        "JsonState",
        (tf.train.experimental.PythonState,),
        {"text": "", "serialize": serialize, "deserialize": deserialize},
    )
    return cls()


@pytest.fixture(scope="module")
def restored_by_tf(saved, tf, tmp_path_factory):
    """TF's tree and optimizer after `tf.train.Checkpoint.restore`, and what TF wrote then."""
    name, model, optimizer, prefix = saved
    tf_model = _mirror(tf, model)
    tf_optimizer = OPTIMIZERS[name][1](tf)
    groups = _json_state(tf)
    tf_optimizer._track_trackable(groups, "param_groups")  # the optimizer's JSON child
    for param_name, param in model.named_parameters():
        variable = _tf_at(tf_model, param_name)
        for slot, state in optimizer.state[param].items():
            if tuple(state.shape) != tuple(param.shape):  # TF could not create it (docstring)
                initial = tf.cast(tf.fill(tuple(state.shape), -7), tf.as_dtype(_numpy(state).dtype))
                tf_optimizer._get_or_make_slot(variable, initial, slot, tf_optimizer._name)
    tf_ckpt = tf.train.Checkpoint(model=tf_model, optimizer=tf_optimizer)
    status = tf_ckpt.restore(prefix)
    status.assert_consumed()
    status.assert_existing_objects_matched()
    written = tf_ckpt.write(str(tmp_path_factory.mktemp(f"{name}_tf") / "theirs"))
    return tf_ckpt, groups, written


def test_tensorflow_restores_weights_buffers_and_slots_into_its_own_objects(
    saved, restored_by_tf, tf
):
    name, model, optimizer, _ = saved
    tf_ckpt, groups, _ = restored_by_tf
    tf_model, tf_optimizer = tf_ckpt.model, tf_ckpt.optimizer
    for param_name, tensor in model.state_dict().items():
        variable = _tf_at(tf_model, param_name)
        assert_bitwise_equal(variable.numpy(), _numpy(tensor), param_name)
    assert set(tf_optimizer.get_slot_names()) == SLOT_NAMES[name]
    for param_name, param in model.named_parameters():
        variable = _tf_at(tf_model, param_name)
        for slot, state in optimizer.state[param].items():
            tf_slot = tf_optimizer.get_slot(variable, slot)
            assert tf_slot is not None, (param_name, slot)
            assert_bitwise_equal(tf_slot.numpy(), _numpy(state), f"{param_name} {slot}")
    assert int(tf_ckpt.save_counter.numpy()) == 1
    restored_groups = json.loads(groups.text)
    assert restored_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_what_tensorflow_writes_back_restores_into_torch_bit_for_bit(saved, restored_by_tf):
    name, model, optimizer, _ = saved
    _, _, written = restored_by_tf
    fresh = Net(seed=1)
    fresh_optimizer = OPTIMIZERS[name][0](fresh.parameters())
    fresh_optimizer.param_groups[0]["lr"] = 123.0  # restored from the JSON TF kept
    ckpt = trackpoint.Checkpoint(model=fresh, optimizer=fresh_optimizer)
    ckpt.restore(written).assert_consumed()
    assert int(ckpt.save_counter.numpy()) == 1
    saved_state = model.state_dict()
    for key, tensor in fresh.state_dict().items():
        assert_bitwise_equal(_numpy(tensor), _numpy(saved_state[key]), key)
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for (param_name, param), fresh_param in zip(
        model.named_parameters(), fresh.parameters(), strict=True
    ):
        state, fresh_state = optimizer.state[param], fresh_optimizer.state[fresh_param]
        assert set(fresh_state) == set(state), param_name
        for slot, value in state.items():
            assert_bitwise_equal(_numpy(fresh_state[slot]), _numpy(value), f"{param_name} {slot}")
    # ...and it takes the same next step as a copy of the saved run (torch's own deepcopy).
    twin = copy.deepcopy(model)
    twin_optimizer = OPTIMIZERS[name][0](twin.parameters())
    # (load_state_dict keeps the very tensors it is given: copy them, or the step moves ours)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _train(twin, twin_optimizer, steps=1)
    _train(fresh, fresh_optimizer, steps=1)
    for (key, a), b in zip(twin.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert_bitwise_equal(_numpy(b), _numpy(a), key)
