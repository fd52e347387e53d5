"""The PyTorch adapter: modules, in-place restore, optimizers, schedulers, RNG, errors, resume."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from torch import nn

import trackpoint
from trackpoint.adapters.torch import RNGState, StateDict

pytestmark = pytest.mark.torch


class Net(nn.Module):
    """Nested containers, BatchNorm buffers and a non-persistent buffer."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList([nn.Linear(4, 8), nn.Linear(8, 8)])
        self.bn = nn.BatchNorm1d(8)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Sequential(nn.Linear(8, 1))})
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("cache", torch.zeros(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.relu(block(x))
        x = self.bn(x)
        out: torch.Tensor = self.scale * (self.heads["a"](x).sum(1) + self.heads["b"](x).sum(1))
        return out


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 7) -> None:
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = torch.randn(16, 4, generator=gen)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


def _keys(prefix: str) -> list[str]:
    return [key for key, _ in trackpoint.list_variables(prefix)]


def _assert_same_module(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


# -- modules ------------------------------------------------------------------------------


def test_module_tree_gets_tf_keys_and_round_trips(tmp_path: Path) -> None:
    model = Net(seed=0)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=2)
    path = trackpoint.Checkpoint(model=model).save(tmp_path / "ckpt")
    keys = _keys(path)
    for key in [
        "model/blocks/0/weight/.ATTRIBUTES/VARIABLE_VALUE",
        "model/blocks/1/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/bn/running_mean/.ATTRIBUTES/VARIABLE_VALUE",
        "model/bn/running_var/.ATTRIBUTES/VARIABLE_VALUE",
        "model/bn/num_batches_tracked/.ATTRIBUTES/VARIABLE_VALUE",
        "model/heads/a/weight/.ATTRIBUTES/VARIABLE_VALUE",
        "model/heads/b/0/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/scale/.ATTRIBUTES/VARIABLE_VALUE",
    ]:
        assert key in keys
    assert not any("cache" in key for key in keys)  # non-persistent buffers are not saved
    # Every entry of torch's own state_dict is in the checkpoint, and nothing else.
    values = {k for k in keys if k.startswith("model/")}
    assert len(values) == len(model.state_dict())

    fresh = Net(seed=1)
    trackpoint.Checkpoint(model=fresh).restore(path).assert_consumed()
    _assert_same_module(model, fresh)
    assert int(fresh.get_buffer("bn.num_batches_tracked")) == 2


def test_sequential_children_are_named_by_index(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1, bias=False))
    path = trackpoint.Checkpoint(model=model).save(tmp_path / "ckpt")
    assert [k for k in _keys(path) if k.startswith("model/")] == [
        "model/0/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/0/weight/.ATTRIBUTES/VARIABLE_VALUE",
        "model/2/weight/.ATTRIBUTES/VARIABLE_VALUE",
    ]


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight


def test_tied_parameters_are_saved_once_and_stay_tied(tmp_path: Path) -> None:
    model = Tied()
    path = trackpoint.save_weights(model, tmp_path / "w")
    assert [k for k in _keys(path) if k != "_CHECKPOINTABLE_OBJECT_GRAPH"] == [
        "embed/weight/.ATTRIBUTES/VARIABLE_VALUE"
    ]
    fresh = Tied()
    trackpoint.load_weights(fresh, path).assert_consumed()
    assert fresh.out.weight is fresh.embed.weight
    assert torch.equal(fresh.embed.weight, model.embed.weight)


def test_restore_is_in_place_and_an_optimizer_keeps_working(tmp_path: Path) -> None:
    model = Net(seed=0)
    path = trackpoint.save_weights(model, tmp_path / "w")
    fresh = Net(seed=1)
    fresh.get_parameter("blocks.0.weight").requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    before = {
        name: (t, t.data_ptr(), t.requires_grad)
        for name, t in fresh.state_dict(keep_vars=True).items()
    }

    trackpoint.load_weights(fresh, path).assert_consumed()

    for name, t in fresh.state_dict(keep_vars=True).items():
        tensor, ptr, requires_grad = before[name]
        assert t is tensor, name
        assert t.data_ptr() == ptr, name
        assert t.requires_grad == requires_grad, name
    _assert_same_module(model, fresh)
    weight = fresh.get_parameter("blocks.1.weight").detach().clone()
    _train(fresh, optimizer, steps=1)
    # The optimizer updates the restored tensors; the frozen one stays as restored.
    assert not torch.equal(fresh.get_parameter("blocks.1.weight"), weight)
    assert torch.equal(
        fresh.get_parameter("blocks.0.weight"), model.get_parameter("blocks.0.weight")
    )


def test_non_contiguous_tensor_is_restored_with_copy(tmp_path: Path) -> None:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    view = base.t()  # a strided view: no buffer to read into; copy_ keeps it a view
    path = trackpoint.Checkpoint(v=view).save(tmp_path / "ckpt")
    with torch.no_grad():
        base.zero_()
    trackpoint.Checkpoint(v=view).restore(path).assert_consumed()
    assert torch.equal(base, torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_bfloat16_and_float8_round_trip_bit_for_bit(tmp_path: Path) -> None:
    model = nn.Linear(5, 3).to(torch.bfloat16)
    f8 = torch.randn(4).to(torch.float8_e4m3fn)
    path = trackpoint.Checkpoint(model=model, f8=f8).save(tmp_path / "ckpt")
    reader = trackpoint.load_checkpoint(path)
    assert reader.get_variable_to_dtype_map()["model/weight/.ATTRIBUTES/VARIABLE_VALUE"].name == (
        "bfloat16"
    )
    fresh, f8_fresh = nn.Linear(5, 3).to(torch.bfloat16), torch.zeros(4).to(torch.float8_e4m3fn)
    trackpoint.Checkpoint(model=fresh, f8=f8_fresh).restore(path).assert_consumed()
    assert torch.equal(fresh.weight.view(torch.int16), model.weight.view(torch.int16))
    assert torch.equal(f8_fresh.view(torch.uint8), f8.view(torch.uint8))
    assert fresh.weight.dtype == torch.bfloat16


class WithExtraState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.calls = 0
        self.table = torch.zeros(3)

    def get_extra_state(self) -> Any:
        return {"calls": self.calls, "table": self.table, "shape": (2, 3)}

    def set_extra_state(self, state: Any) -> None:
        self.calls = state["calls"]
        self.table = state["table"]
        assert state["shape"] == (2, 3)


def test_module_extra_state_round_trips_as_json_and_tensors(tmp_path: Path) -> None:
    model = WithExtraState()
    model.calls, model.table = 5, torch.tensor([1.0, 2.0, 3.0])
    path = trackpoint.save_weights(model, tmp_path / "w")
    assert "_extra_state/.ATTRIBUTES/table" in _keys(path)
    fresh = WithExtraState()
    trackpoint.load_weights(fresh, path).assert_consumed()
    assert fresh.calls == 5
    assert torch.equal(fresh.table, model.table)


# -- optimizers -----------------------------------------------------------------------------

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1),
}


def _assert_same_optimizer_state(
    a: torch.optim.Optimizer,
    pa: list[torch.Tensor],
    b: torch.optim.Optimizer,
    pb: list[torch.Tensor],
) -> None:
    for x, y in zip(pa, pb, strict=True):
        sx, sy = a.state[x], b.state[y]
        assert sorted(sx) == sorted(sy)
        for key in sx:
            assert sx[key].dtype == sy[key].dtype, key
            assert sx[key].device == sy[key].device, key
            assert torch.equal(sx[key], sy[key]), key


@pytest.mark.parametrize("name", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_optimizer_restores_into_fresh_empty_state_and_steps_identically(
    tmp_path: Path, name: str
) -> None:
    make = OPTIMIZERS[name]
    model = Net(seed=0)
    optimizer = make(model.parameters())
    _train(model, optimizer, steps=3)
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(tmp_path / "ckpt")
    assert any(".OPTIMIZER_SLOT/optimizer/" in k for k in _keys(path))

    fresh = Net(seed=1)
    fresh_optimizer = make(fresh.parameters())
    fresh_optimizer.param_groups[0]["lr"] = 123.0  # restored from the checkpoint
    # Adagrad makes its state in __init__ (restored in place then); the others have none.
    assert bool(fresh_optimizer.state) == (name == "adagrad")
    status = trackpoint.Checkpoint(model=fresh, optimizer=fresh_optimizer).restore(path)
    status.assert_consumed()

    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    strip = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    fresh_strip = [
        {k: v for k, v in g.items() if k != "params"} for g in fresh_optimizer.param_groups
    ]
    assert fresh_strip == strip  # tuples (betas) stay tuples
    _assert_same_optimizer_state(
        optimizer, list(model.parameters()), fresh_optimizer, list(fresh.parameters())
    )
    _train(model, optimizer, steps=2, seed=8)
    _train(fresh, fresh_optimizer, steps=2, seed=8)
    _assert_same_module(model, fresh)
    _assert_same_optimizer_state(
        optimizer, list(model.parameters()), fresh_optimizer, list(fresh.parameters())
    )


def _slot_key(parameter: str, slot: str) -> str:
    return f"model/{parameter}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.mark.parametrize(
    ("name", "slots"),
    [("sgd-momentum", ["momentum_buffer"]), ("adam", ["exp_avg", "exp_avg_sq", "step"])],
    ids=["sgd-momentum", "adam"],
)
def test_optimizer_state_is_saved_under_tf_slot_keys_of_its_parameter(
    tmp_path: Path, name: str, slots: list[str]
) -> None:
    # TF format doc §7.3: <variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot>/.ATTRIBUTES/
    # VARIABLE_VALUE, every tensor of torch's per-parameter state a slot, nothing else.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1, bias=False))
    optimizer = OPTIMIZERS[name](model.parameters())
    optimizer.zero_grad()
    model(torch.randn(4, 2)).pow(2).sum().backward()
    optimizer.step()
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(tmp_path / "ckpt")

    parameters = {
        "0/weight": model.get_parameter("0.weight"),
        "0/bias": model.get_parameter("0.bias"),
        "2/weight": model.get_parameter("2.weight"),
    }
    assert set(_keys(path)) == {
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "optimizer/param_groups/.ATTRIBUTES/py_state",
        *(f"model/{p}/.ATTRIBUTES/VARIABLE_VALUE" for p in parameters),
        *(_slot_key(p, slot) for p in parameters for slot in slots),
    }
    reader = trackpoint.load_checkpoint(path)
    for parameter, tensor in parameters.items():
        assert sorted(optimizer.state[tensor]) == sorted(slots)
        for slot in slots:
            saved = reader.get_tensor(_slot_key(parameter, slot))
            theirs = optimizer.state[tensor][slot].numpy()
            assert (saved.dtype, saved.shape) == (theirs.dtype, theirs.shape)
            assert saved.tobytes() == theirs.tobytes()


def test_optimizer_state_follows_the_parameter_not_its_position(tmp_path: Path) -> None:
    model = Net(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer, steps=2)
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(tmp_path / "ckpt")

    fresh = Net(seed=1)
    reordered = list(reversed(list(fresh.parameters())))
    fresh_optimizer = torch.optim.Adam(reordered, lr=0.01)
    trackpoint.Checkpoint(model=fresh, optimizer=fresh_optimizer).restore(path).assert_consumed()
    _assert_same_optimizer_state(
        optimizer, list(model.parameters()), fresh_optimizer, list(fresh.parameters())
    )

    # torch's own state_dict keys the state by position in param_groups: loading it into
    # the reordered optimizer puts the first parameter's exp_avg on the last parameter
    # (here of another shape; with equal shapes it would be silently wrong).
    torch_way = torch.optim.Adam(list(reversed(list(Net(seed=2).parameters()))), lr=0.01)
    torch_way.load_state_dict(optimizer.state_dict())
    first = torch_way.param_groups[0]["params"][0]
    assert torch_way.state[first]["exp_avg"].shape != first.shape


def test_optimizer_over_fewer_parameters_leaves_their_state_unused(tmp_path: Path) -> None:
    model = Net(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, optimizer, steps=1)
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(tmp_path / "ckpt")

    fresh = Net(seed=1)
    head_only = torch.optim.SGD(fresh.heads.parameters(), lr=0.1, momentum=0.9)  # fine-tuning
    status = trackpoint.Checkpoint(model=fresh, optimizer=head_only).restore(path)
    with pytest.raises(trackpoint.MismatchError, match="momentum_buffer") as err:
        status.assert_consumed()
    assert "model.blocks[0].weight" in str(err.value)
    assert "waits" not in str(err.value)
    status.assert_existing_objects_matched()
    status.expect_partial()
    assert set(head_only.state) == set(fresh.heads.parameters())


def test_optimizer_with_other_param_groups_is_refused(tmp_path: Path) -> None:
    model = Net(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = trackpoint.Checkpoint(optimizer=optimizer).save(tmp_path / "ckpt")
    groups = [{"params": model.blocks.parameters()}, {"params": model.heads.parameters()}]
    with pytest.raises(trackpoint.InvalidValueError, match="1 param group"):
        trackpoint.Checkpoint(optimizer=torch.optim.SGD(groups, lr=0.1)).restore(path)


def test_tensor_learning_rate_is_restored_in_place(tmp_path: Path) -> None:
    param = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param], lr=torch.tensor(0.25))
    path = trackpoint.Checkpoint(optimizer=optimizer).save(tmp_path / "ckpt")
    fresh = torch.optim.Adam([nn.Parameter(torch.ones(2))], lr=torch.tensor(0.5))
    lr = fresh.param_groups[0]["lr"]
    trackpoint.Checkpoint(optimizer=fresh).restore(path).assert_consumed()
    assert fresh.param_groups[0]["lr"] is lr
    assert float(lr) == 0.25


# -- schedulers, scaler, generic state dicts, RNG -----------------------------------------


def test_lr_schedulers_round_trip(tmp_path: Path) -> None:
    def build() -> tuple[torch.optim.Optimizer, Any, Any]:
        opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0)
        return (
            opt,
            torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
            torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
        )

    opt, step_lr, plateau = build()
    for loss in [3.0, 2.0, 2.5, 2.6]:
        opt.step()
        step_lr.step()
        plateau.step(loss)
    path = trackpoint.Checkpoint(optimizer=opt, sched=step_lr, plateau=plateau).save(tmp_path / "c")
    fresh_opt, fresh_step, fresh_plateau = build()
    status = trackpoint.Checkpoint(optimizer=fresh_opt, sched=fresh_step, plateau=fresh_plateau)
    status.restore(path).assert_consumed()
    assert fresh_step.state_dict() == step_lr.state_dict()
    assert fresh_plateau.state_dict().keys() == plateau.state_dict().keys()
    for key, value in plateau.state_dict().items():
        assert fresh_plateau.state_dict()[key] == value, key
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    fresh_step.step()
    step_lr.step()
    assert fresh_step.get_last_lr() == step_lr.get_last_lr()


def test_grad_scaler_round_trips(tmp_path: Path) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 8.0, "_growth_tracker": 3})
    path = trackpoint.Checkpoint(scaler=scaler).save(tmp_path / "ckpt")
    fresh = torch.amp.GradScaler("cpu")
    trackpoint.Checkpoint(scaler=fresh).restore(path).assert_consumed()
    assert fresh.state_dict() == scaler.state_dict()


class Counter:
    """Not a torch type: found by having state_dict/load_state_dict."""

    def __init__(self) -> None:
        self.seen = 0
        self.history = torch.zeros(2, dtype=torch.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "history": self.history, "ids": {1: "a", 2: "b"}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]
        self.history = state["history"]
        assert state["ids"] == {1: "a", 2: "b"}


def test_any_object_with_state_dict_round_trips(tmp_path: Path) -> None:
    counter = Counter()
    counter.seen, counter.history = 4, torch.tensor([7, 9])
    path = trackpoint.Checkpoint(counter=counter).save(tmp_path / "ckpt")
    assert "counter/.ATTRIBUTES/history" in _keys(path)
    fresh = Counter()
    trackpoint.Checkpoint(counter=StateDict(fresh)).restore(path).assert_consumed()
    assert fresh.seen == 4
    assert torch.equal(fresh.history, torch.tensor([7, 9]))


def test_rng_state_resumes_every_generator_exactly(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    gen = torch.Generator().manual_seed(11)
    ckpt = trackpoint.Checkpoint(rng=RNGState(), gen=gen)
    path = ckpt.save(tmp_path / "ckpt")
    expected = (torch.rand(4), torch.rand(2, generator=gen), np.random.rand(3), random.random())  # noqa: S311
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    gen.manual_seed(99)
    ckpt.restore(path).assert_consumed()
    again = (torch.rand(4), torch.rand(2, generator=gen), np.random.rand(3), random.random())  # noqa: S311
    assert torch.equal(again[0], expected[0])
    assert torch.equal(again[1], expected[1])
    np.testing.assert_array_equal(again[2], expected[2])
    assert again[3] == expected[3]


# -- save_weights / load_weights -------------------------------------------------------------


def test_save_weights_makes_the_model_the_root(tmp_path: Path) -> None:
    model = Net(seed=0)
    prefix = trackpoint.save_weights(model, tmp_path / "weights")
    assert prefix == str(tmp_path / "weights")
    keys = _keys(prefix)
    assert "blocks/0/weight/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not any(k.startswith(("model/", "save_counter")) for k in keys)
    assert not (tmp_path / "checkpoint").exists()  # write, not save: no state file
    fresh = Net(seed=1)
    status = trackpoint.load_weights(fresh, prefix)
    assert status.assert_consumed() is status
    _assert_same_module(model, fresh)


# -- errors -------------------------------------------------------------------------------


def test_unknown_torch_object_names_type_path_and_register(tmp_path: Path) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(3)))
    with pytest.raises(trackpoint.NotTrackableError, match="DataLoader at loader") as err:
        trackpoint.Checkpoint(model=nn.Linear(1, 1), loader=loader)
    assert "torch.utils.data.dataloader.DataLoader" in str(err.value)
    assert "trackpoint.register" in str(err.value)


def test_shape_mismatch_names_the_object_path(tmp_path: Path) -> None:
    path = trackpoint.Checkpoint(model=nn.Sequential(nn.Linear(3, 2))).save(tmp_path / "c")
    with pytest.raises(trackpoint.ShapeMismatchError, match=r"model\[0\]\.weight is \[2, 3\] in "):
        trackpoint.Checkpoint(model=nn.Sequential(nn.Linear(4, 2))).restore(path)


def test_dtype_mismatch_names_the_object_path(tmp_path: Path) -> None:
    path = trackpoint.save_weights(nn.Linear(3, 2), tmp_path / "w")
    with pytest.raises(trackpoint.DTypeMismatchError, match="weight is float32 in the checkpoint"):
        trackpoint.load_weights(nn.Linear(3, 2).double(), path)


def test_unsupported_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(trackpoint.NotTrackableError, match="no such dtype"):
        trackpoint.Checkpoint(x=torch.zeros(2, dtype=torch.float8_e8m0fnu)).save(tmp_path / "c")


def test_uninitialized_lazy_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(trackpoint.NotTrackableError, match="run the model once"):
        trackpoint.save_weights(nn.LazyLinear(3), tmp_path / "w")


def test_state_that_is_not_json_is_refused(tmp_path: Path) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda _: 1.0)
    scheduler.__dict__["extra"] = object()  # state_dict() is the scheduler's __dict__
    with pytest.raises(trackpoint.NotTrackableError, match="'extra' of LambdaLR holds a builtins"):
        trackpoint.Checkpoint(scheduler=scheduler).save(tmp_path / "c")


# -- resume equivalence in a new process ----------------------------------------------------

TRAIN = textwrap.dedent(
    """
    import random
    import sys
    import numpy as np
    import torch
    from torch import nn
    import trackpoint
    from trackpoint.adapters.torch import RNGState

    torch.use_deterministic_algorithms(True)
    run_dir, stop = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.BatchNorm1d(16), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    step = torch.zeros((), dtype=torch.int64)
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer, scheduler=scheduler,
                                 step=step, rng=RNGState())
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_consumed()
    data = torch.Generator().manual_seed(1)
    while int(step) < stop:
        data.manual_seed(1000 + int(step))  # a step's batch depends on the step only
        x = torch.randn(32, 6, generator=data)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()  # dropout draws from the global RNG
        optimizer.step()
        scheduler.step()
        step += 1
    manager.save()
    """
)


def _run_training(script: Path, run_dir: Path, stop: int) -> None:
    subprocess.run([sys.executable, str(script), str(run_dir), str(stop)], check=True)


def test_resumed_run_in_a_new_process_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    _run_training(script, tmp_path / "whole", 8)
    _run_training(script, tmp_path / "split", 3)
    _run_training(script, tmp_path / "split", 8)  # a new process restores and continues
    whole = trackpoint.load_checkpoint(tmp_path / "whole")
    split = trackpoint.load_checkpoint(tmp_path / "split")
    keys = whole.get_variable_to_shape_map()
    assert keys == split.get_variable_to_shape_map()
    assert "model/0/weight/.OPTIMIZER_SLOT/optimizer/exp_avg_sq/.ATTRIBUTES/VARIABLE_VALUE" in keys
    for key in keys:
        if key in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE"):
            continue
        a, b = whole.get_tensor(key), split.get_tensor(key)
        assert a.dtype == b.dtype, key
        if a.dtype == object:  # JSON state (optimizer groups, scheduler, RNG) as strings
            assert a.tolist() == b.tolist(), key
        else:
            assert a.tobytes() == b.tobytes(), key  # bit for bit
    assert int(split.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 8


# -- what a restore says, in torch terms -----------------------------------------------------


class _Two(nn.Module):
    def __init__(self, first: str = "fc1") -> None:
        super().__init__()
        setattr(self, first, nn.Linear(4, 8))
        self.fc2 = nn.Linear(8, 2)


def _trained_two(tmp_path: Path, with_optimizer: bool = True) -> str:
    model = _Two()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    hidden = model.get_submodule("fc1")(torch.ones(3, 4))
    model.get_submodule("fc2")(hidden).sum().backward()
    optimizer.step()
    children: dict[str, Any] = {"model": model}
    if with_optimizer:
        children["optimizer"] = optimizer
    return trackpoint.Checkpoint(**children).save(tmp_path / "ckpt")


def _partial_warning(record: pytest.WarningsRecorder) -> str:
    found = [w for w in record if issubclass(w.category, trackpoint.PartialRestoreWarning)]
    assert len(found) == 1, [str(w.message) for w in found]
    assert found[0].filename == __file__  # the user's line, raised during the call
    return str(found[0].message)


def test_forgotten_optimizer_warns_at_the_restore_call(tmp_path: Path) -> None:
    path = _trained_two(tmp_path)
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        status = trackpoint.Checkpoint(model=_Two()).restore(path)
    message = _partial_warning(record)
    assert "pass Checkpoint(model=model, optimizer=optimizer)" in message
    assert "restore(..., expect_partial=True)" in message
    with pytest.raises(trackpoint.MismatchError) as err:
        status.assert_consumed()
    # Torch objects do not wait to be built: no Keras advice.
    assert "optimizer.build" not in str(err.value)
    assert "call the model once" not in str(err.value)
    assert "Keras" not in str(err.value)


def test_optimizer_missing_from_the_checkpoint_warns_in_torch_terms(tmp_path: Path) -> None:
    path = _trained_two(tmp_path, with_optimizer=False)
    model = _Two()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        trackpoint.Checkpoint(model=model, optimizer=optimizer).restore(path)
    message = _partial_warning(record)
    assert "saved without an optimizer" in message
    assert "optimizer.step()" in message
    assert "optimizer.build" not in message


def test_restore_with_expect_partial_is_silent(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    path = _trained_two(tmp_path)
    trackpoint.Checkpoint(model=_Two()).restore(path, expect_partial=True)
    assert not [w for w in recwarn if issubclass(w.category, trackpoint.PartialRestoreWarning)]


def test_renamed_submodule_names_both_sides_paired_by_structure(tmp_path: Path) -> None:
    path = _trained_two(tmp_path)
    renamed = _Two(first="encoder")  # fc1 → encoder: nothing alike in the names
    optimizer = torch.optim.Adam(renamed.parameters(), lr=0.01)
    with pytest.warns(trackpoint.PartialRestoreWarning) as record:
        status = trackpoint.Checkpoint(model=renamed, optimizer=optimizer).restore(path)
    message = _partial_warning(record)
    assert "model.encoder in the program and model.fc1 in the checkpoint" in message
    assert "same variables and shapes (bias [8], weight [8, 4])" in message
    with pytest.raises(trackpoint.MismatchError) as err:
        status.assert_existing_objects_matched()
    assert "model.encoder in the program and model.fc1 in the checkpoint" in str(err.value)
