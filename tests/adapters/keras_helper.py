"""Keras checks run on one backend in a fresh process (Keras picks its backend at import).

Usage: ``KERAS_BACKEND=jax python keras_helper.py TASK WORKDIR [FIXTURE_PREFIX]``. Prints one
JSON object (the task's results) as the last line of stdout; tests/adapters/test_keras.py
runs the tasks and asserts on the results. Tasks:

- ``tf_write`` (tensorflow): each model trained two steps and written by
  `tf.train.Checkpoint(model=, optimizer=).write`; TF's predictions, TF's object graph, the
  graph trackpoint computes on the TF backend, and TF's restore of the seed fixture.
- ``restore`` (jax, torch): the seed fixture and every ``tf_write`` checkpoint restored by
  trackpoint with ``assert_consumed()``; predictions, optimizer state, trackpoint's graph.
  On JAX also: two more steps, written by trackpoint for ``tf_restore``; and the first half
  of the resume check.
- ``tf_restore`` (tensorflow): trackpoint's JAX checkpoints restored by TensorFlow.
- ``resume`` (jax): the second half of the resume check, then the error cases.
- ``messages`` (jax, torch): what restores say at the call — a renamed layer, a forgotten
  optimizer, `load_weights` into an uncompiled model — with each warning's file.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

import keras
import numpy as np

import trackpoint
from trackpoint.graph import GraphView, to_trackable

BACKEND = keras.backend.backend()
KINDS = ("mlp", "conv", "lstm", "functional")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class Net(keras.Model):  # type: ignore[misc]  # keras ships no type hints
    """The seed's model (fixture keras_adam)."""

    def __init__(self, units: int = 10) -> None:
        super().__init__()
        self.dense_1 = keras.layers.Dense(units, activation="relu")
        self.dense_2 = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.dense_2(self.dense_1(x))


SEED_X = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0
SEED_Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)


def data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    if kind in ("mlp", "functional"):
        return SEED_X, SEED_Y
    if kind == "conv":
        return rng.normal(size=(4, 6, 6, 2)).astype(np.float32), rng.normal(size=(4, 2)).astype(
            np.float32
        )
    return rng.integers(0, 12, size=(4, 5)).astype(np.int32), rng.normal(size=(4, 1)).astype(
        np.float32
    )


def build(kind: str, seed: int) -> tuple[Any, Any]:
    """A model of `kind` with its variables created, and its (unbuilt) optimizer."""
    keras.utils.set_random_seed(seed)
    if kind == "mlp":
        model: Any = Net()
        model(SEED_X)
        return model, keras.optimizers.Adam(0.001)
    if kind == "conv":
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Conv2D(3, 3),
                keras.layers.BatchNormalization(),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )
        return model, keras.optimizers.SGD(0.01, momentum=0.9)
    if kind == "lstm":
        model = keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                keras.layers.Embedding(12, 4),
                keras.layers.LSTM(3),
                keras.layers.Dense(1),
            ]
        )
        return model, keras.optimizers.RMSprop(0.01)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    return model, keras.optimizers.Adam(0.01)


def train(model: Any, optimizer: Any, kind: str, steps: int) -> None:
    if not getattr(model, "compiled", False):
        model.compile(optimizer=optimizer, loss="mse")
    x, y = data(kind)
    for _ in range(steps):
        model.train_on_batch(x, y)


def predict(model: Any, kind: str) -> list[Any]:
    x, _ = data(kind)
    out: list[Any] = np.asarray(keras.ops.convert_to_numpy(model(x, training=False))).tolist()
    return out


def exact(array: Any) -> dict[str, Any]:
    """An array as JSON that keeps every bit: dtype, shape and its bytes in hex.

    Lists of Python floats would hide -0.0, NaN payloads and the dtype; equal dicts here
    mean equal bytes (tests.adapters.test_keras.decode turns one back into an array).
    """
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "hex": array.tobytes().hex()}


def values(variables: list[Any]) -> list[Any]:
    """Variables, each as `exact`; integers as int64 (TF's dtype for Keras's "int")."""
    out = []
    for v in variables:
        array = np.asarray(keras.ops.convert_to_numpy(v.value))
        out.append(exact(array.astype(np.int64) if array.dtype.kind == "i" else array))
    return out


def graph_fields(graph: Any) -> list[Any]:
    """Each node's children, attribute keys and has_checkpoint_values (full names left out)."""
    return [
        {
            "children": [[c.local_name, c.node_id] for c in node.children],
            "keys": [a.checkpoint_key for a in node.attributes],
            "slots": len(node.slot_variables),
            "has_values": node.has_checkpoint_values.value,
        }
        for node in graph.nodes
    ]


def our_graph(model: Any, optimizer: Any) -> list[Any]:
    return graph_fields(
        GraphView(trackpoint.Checkpoint(model=model, optimizer=optimizer)).to_proto()
    )


def checkpoint_optimizer_values(prefix: str, optimizer: Any) -> list[Any]:
    """The checkpoint's `optimizer/_variables/N` values, N = 0 .. len(optimizer.variables)."""
    # 0 and 1 were first met as `_iterations` and `_learning_rate`: their keys say so.
    paths = ["_iterations", "_learning_rate"]
    paths += [f"_variables/{n}" for n in range(2, len(optimizer.variables))]
    with trackpoint.load_checkpoint(prefix) as reader:
        return [
            exact(np.asarray(reader.get_tensor(f"optimizer/{p}/.ATTRIBUTES/VARIABLE_VALUE")))
            for p in paths
        ]


def restore_fixture(prefix: str) -> dict[str, Any]:
    """The seed's flow: build the model, restore, build the optimizer, assert_consumed."""
    keras.utils.set_random_seed(99)
    model, optimizer = Net(), keras.optimizers.Adam(0.5)
    model(SEED_X)
    status = trackpoint.Checkpoint(model=model, optimizer=optimizer).restore(prefix)
    optimizer.build(model.trainable_variables)
    status.assert_consumed()
    return {
        "predictions": predict(model, "mlp"),
        "optimizer": values(optimizer.variables),
        "checkpoint_optimizer": checkpoint_optimizer_values(prefix, optimizer),
        "weights": values(model.weights),
    }


# -- tasks -------------------------------------------------------------------------------


def task_tf_write(work: str, fixture: str) -> dict[str, Any]:
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    results: dict[str, Any] = {}
    for kind in KINDS:
        model, optimizer = build(kind, seed=1)
        train(model, optimizer, kind, steps=2)
        prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).write(
            os.path.join(work, f"tf_{kind}")
        )
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY))
        results[kind] = {
            "prefix": prefix,
            "predictions": predict(model, kind),
            "tf_graph": graph_fields(graph),
            "our_graph_on_tf_backend": our_graph(model, optimizer),
        }
    # TF's own restore of the seed fixture (format doc §11) — the reference for the others.
    keras.utils.set_random_seed(99)
    model, optimizer = Net(), keras.optimizers.Adam(0.5)
    model(SEED_X)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(fixture)
    optimizer.build(model.trainable_variables)
    status.assert_consumed()
    results["fixture"] = {
        "predictions": predict(model, "mlp"),
        "optimizer": values(optimizer.variables),
        "weights": values(model.weights),
    }
    results["trackpoint_on_tf"] = trackpoint_on_tf_backend(work, fixture)
    return results


def trackpoint_on_tf_backend(work: str, fixture: str) -> dict[str, Any]:
    """Keras on the TF backend through trackpoint: the seed restored, and each model
    written by trackpoint, read by TF and by trackpoint into fresh models."""
    import tensorflow as tf

    out: dict[str, Any] = {"fixture": restore_fixture(fixture)}
    for kind in KINDS:
        model, optimizer = build(kind, seed=4)
        train(model, optimizer, kind, steps=2)
        prefix = trackpoint.Checkpoint(model=model, optimizer=optimizer).write(
            os.path.join(work, f"tp_on_tf_{kind}")
        )
        by_tf, tf_opt = build(kind, seed=5)
        by_tf.compile(optimizer=tf_opt, loss="mse")
        status = tf.train.Checkpoint(model=by_tf, optimizer=tf_opt).read(prefix)
        tf_opt.build(by_tf.trainable_variables)
        status.assert_consumed()
        by_us, our_opt = build(kind, seed=6)
        by_us.compile(optimizer=our_opt, loss="mse")
        status = trackpoint.Checkpoint(model=by_us, optimizer=our_opt).read(prefix)
        our_opt.build(by_us.trainable_variables)
        status.assert_consumed()
        out[kind] = {
            "written": values(model.weights) + values(optimizer.variables),
            "read_by_tf": values(by_tf.weights) + values(tf_opt.variables),
            "read_by_trackpoint": values(by_us.weights) + values(our_opt.variables),
        }
    return out


def task_restore(work: str, fixture: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if BACKEND == "torch":
        # With the torch adapter loaded first, Keras layers (torch Modules on this
        # backend) must still get the Keras adapter.
        import torch

        trackpoint.Checkpoint(linear=torch.nn.Linear(2, 2)).write(os.path.join(work, "torch"))
        results["adapter_after_torch"] = type(to_trackable(Net())).__module__
    results["fixture"] = restore_fixture(fixture)
    for kind in KINDS:
        model, optimizer = build(kind, seed=2)
        model.compile(optimizer=optimizer, loss="mse")
        prefix = os.path.join(work, f"tf_{kind}")
        status = trackpoint.Checkpoint(model=model, optimizer=optimizer).read(prefix)
        optimizer.build(model.trainable_variables)
        status.assert_consumed()
        entry: dict[str, Any] = {
            "predictions": predict(model, kind),
            "optimizer": values(optimizer.variables),
            "checkpoint_optimizer": checkpoint_optimizer_values(prefix, optimizer),
            "graph": our_graph(model, optimizer),
        }
        if BACKEND == "jax":
            train(model, optimizer, kind, steps=2)
            out = trackpoint.Checkpoint(model=model, optimizer=optimizer).write(
                os.path.join(work, f"jax_{kind}")
            )
            entry.update(
                written=out,
                predictions_after=predict(model, kind),
                optimizer_after=values(optimizer.variables),
            )
        results[kind] = entry
    if BACKEND == "jax":
        results["resume"] = resume_start(work)
    return results


def task_tf_restore(work: str, fixture: str) -> dict[str, Any]:
    import tensorflow as tf

    del fixture
    results: dict[str, Any] = {}
    for kind in KINDS:
        model, optimizer = build(kind, seed=3)
        model.compile(optimizer=optimizer, loss="mse")
        status = tf.train.Checkpoint(model=model, optimizer=optimizer).read(
            os.path.join(work, f"jax_{kind}")
        )
        optimizer.build(model.trainable_variables)
        status.assert_consumed()
        results[kind] = {
            "predictions": predict(model, kind),
            "optimizer": values(optimizer.variables),
        }
    return results


# -- resume: N steps straight vs k, save, new process, restore, N-k -----------------------

RESUME_STEPS, RESUME_SPLIT = 6, 3


def resume_state(model: Any, optimizer: Any) -> dict[str, Any]:
    return {"weights": values(model.weights), "optimizer": values(optimizer.variables)}


def resume_start(work: str) -> dict[str, Any]:
    model, optimizer = build("conv", seed=5)
    train(model, optimizer, "conv", RESUME_STEPS)
    straight = resume_state(model, optimizer)
    model, optimizer = build("conv", seed=5)
    train(model, optimizer, "conv", RESUME_SPLIT)
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    manager = trackpoint.CheckpointManager(ckpt, os.path.join(work, "resume"), max_to_keep=2)
    return {"straight": straight, "saved": manager.save()}


def resume_finish(work: str) -> dict[str, Any]:
    model, optimizer = build("conv", seed=6)  # other initial values: all must come from disk
    model.compile(optimizer=optimizer, loss="mse")
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    status = ckpt.restore(trackpoint.latest_checkpoint(os.path.join(work, "resume")))
    optimizer.build(model.trainable_variables)
    status.assert_consumed()
    train(model, optimizer, "conv", RESUME_STEPS - RESUME_SPLIT)
    return resume_state(model, optimizer)


# -- error cases and deferred restoration ---------------------------------------------------


def error_of(fn: Any) -> dict[str, Any] | None:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - reported to the test, which checks the type
        return {
            "type": type(err).__name__,
            "message": str(err),
            "trackpoint": isinstance(err, trackpoint.TrackpointError),
            "assertion": isinstance(err, AssertionError),
        }
    return None


def deferred_cases(fixture: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fixture_weights = None
    with trackpoint.load_checkpoint(fixture) as reader:
        fixture_weights = [
            exact(np.asarray(reader.get_tensor(f"model/{layer}/{name}/.ATTRIBUTES/VARIABLE_VALUE")))
            for layer in ("dense_1", "dense_2")
            for name in ("_kernel", "bias")
        ]
    out["fixture_weights"] = fixture_weights

    # Unbuilt model and unbuilt optimizer: values wait for `build`, assertions say so.
    model, optimizer = Net(), keras.optimizers.Adam(0.5)
    status = trackpoint.Checkpoint(model=model, optimizer=optimizer).restore(fixture)
    out["unbuilt_iterations"] = int(keras.ops.convert_to_numpy(optimizer.iterations))
    out["unbuilt_learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    out["unbuilt_assert"] = error_of(status.assert_consumed)
    model(SEED_X)  # builds the layers by a first call (symbolically first, on JAX)
    out["model_built_assert"] = error_of(status.assert_consumed)
    out["model_built_weights"] = values(model.weights)
    optimizer.build(model.trainable_variables)
    out["all_built_assert"] = error_of(status.assert_consumed)
    out["all_built_optimizer"] = values(optimizer.variables)
    out["fixture_optimizer"] = checkpoint_optimizer_values(fixture, optimizer)

    # The optimizer built over a reordered var_list: its state would land, by position, on
    # the wrong variables. Built before restore → restore raises; after → build raises.
    model, optimizer = Net(), keras.optimizers.Adam(0.5)
    model(SEED_X)
    optimizer.build(list(reversed(model.trainable_variables)))
    ckpt = trackpoint.Checkpoint(model=model, optimizer=optimizer)
    out["position_mismatch"] = error_of(lambda: ckpt.restore(fixture))
    model, optimizer = Net(), keras.optimizers.Adam(0.5)
    model(SEED_X)
    status = trackpoint.Checkpoint(model=model, optimizer=optimizer).restore(fixture)
    out["position_mismatch_deferred"] = error_of(
        lambda: optimizer.build(list(reversed(model.trainable_variables)))
    )
    status.expect_partial()

    # A changed model: the layer's own shape check fires.
    model, optimizer = Net(units=11), keras.optimizers.Adam(0.5)
    model(SEED_X)
    out["changed_model"] = error_of(
        lambda: trackpoint.Checkpoint(model=model, optimizer=optimizer).restore(fixture)
    )

    # Model-only restore of a checkpoint with optimizer state: assert_consumed fails,
    # assert_existing_objects_matched passes (as in TF, format doc §7.7).
    model = Net()
    model(SEED_X)
    # Model-only on purpose: without expect_partial=True the call warns (tested in `messages`).
    status = trackpoint.Checkpoint(model=model).restore(fixture, expect_partial=True)
    out["model_only_consumed"] = error_of(status.assert_consumed)
    out["model_only_existing"] = error_of(status.assert_existing_objects_matched)
    status.expect_partial()
    return out


def task_resume(work: str, fixture: str) -> dict[str, Any]:
    return {"resumed": resume_finish(work), "errors": deferred_cases(fixture)}


# -- what a restore says at the call ----------------------------------------------------------


class Renamed(keras.Model):  # type: ignore[misc]  # keras ships no type hints
    """The seed's model with `dense_1` renamed to `hidden` (nothing alike in the names)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(10, activation="relu")
        self.dense_2 = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        return self.dense_2(self.hidden(x))


def with_warnings(fn: Any) -> dict[str, Any]:
    """Run `fn`; the trackpoint warnings it raised, and whether each points at this file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    found = [w for w in caught if issubclass(w.category, trackpoint.TrackpointWarning)]
    return {
        "warnings": [
            {
                "category": w.category.__name__,
                "message": str(w.message),
                "here": os.path.abspath(w.filename) == os.path.abspath(__file__),
            }
            for w in found
        ],
        "result": result,
    }


def task_messages(work: str, fixture: str) -> dict[str, Any]:
    del fixture
    out: dict[str, Any] = {}
    model, optimizer = Net(), keras.optimizers.Adam(0.01)
    train(model, optimizer, "mlp", 1)
    path = trackpoint.Checkpoint(model=model, optimizer=optimizer).save(os.path.join(work, "m"))

    renamed = Renamed()
    renamed(SEED_X)
    out["rename"] = with_warnings(
        lambda: (
            trackpoint.Checkpoint(model=renamed, optimizer=keras.optimizers.Adam()).restore(path)
            and None
        )
    )

    built = Net()
    built(SEED_X)
    box: dict[str, Any] = {}
    out["forgotten_optimizer"] = with_warnings(
        lambda: box.update(status=trackpoint.Checkpoint(model=built).restore(path))
    )
    out["forgotten_optimizer_consumed"] = error_of(box["status"].assert_consumed)

    # Weights of a compiled (and trained) model, loaded into an uncompiled one.
    compiled = Net()
    compiled.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    compiled.fit(SEED_X, SEED_Y, epochs=1, verbose=0)
    weights = trackpoint.save_weights(compiled, os.path.join(work, "weights"))
    out["weights_keys"] = [k for k, _ in trackpoint.list_variables(weights)]
    plain = Net()
    plain(SEED_X)
    out["load_weights_uncompiled"] = with_warnings(
        lambda: trackpoint.load_weights(plain, weights) and None
    )
    quiet = Net()
    quiet(SEED_X)
    out["load_weights_expect_partial"] = with_warnings(
        lambda: trackpoint.load_weights(quiet, weights, expect_partial=True) and None
    )
    return out


TASKS = {
    "tf_write": task_tf_write,
    "restore": task_restore,
    "tf_restore": task_tf_restore,
    "resume": task_resume,
    "messages": task_messages,
}


def main() -> None:
    # As in the test suite (filterwarnings = error): a trackpoint warning is a failure.
    warnings.simplefilter("error", trackpoint.TrackpointWarning)
    task, work = sys.argv[1], sys.argv[2]
    fixture = sys.argv[3] if len(sys.argv) > 3 else ""
    result = TASKS[task](work, fixture)
    print(json.dumps({"backend": BACKEND, "result": result}))


if __name__ == "__main__":
    main()
