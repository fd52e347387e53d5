"""The main demo (`make demo`): a PyTorch training run is killed, resumes, and ends bit-exact.

1. A small PyTorch model trains on the CPU in a subprocess, a CheckpointManager saving
   every few steps (model, AdamW state, LR schedule, step counter and RNG state).
2. Part-way, the demo kills that process with SIGKILL — no chance to clean up.
3. A second run restores the latest checkpoint and trains to the end.
4. A third, uninterrupted run does the whole thing in one go. The demo checks that the
   resumed run's final weights and optimizer state equal it bit for bit.
5. `trackpoint inspect` shows the folder, `trackpoint verify` checks every checksum.
The folder is TensorFlow's format: `tf.train.load_checkpoint('demo-run')` reads it.

    python examples/demo.py                       # the demo
    python examples/demo.py --train RUN_DIR       # one training run (used by the demo)
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trackpoint
from trackpoint.adapters.torch import RNGState
from trackpoint.cli import main as cli_main

RUN = Path("demo-run")
REFERENCE = Path("demo-run-uninterrupted")
STEPS = 200
SAVE_EVERY = 20
KILL_AT_SAVE = 4  # SIGKILL the first run right after it reports its 4th save (step 80)


def build() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Dropout(0.1),  # draws from torch's global RNG: RNGState makes resuming exact
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    return model, optimizer, scheduler


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The data of a step depends on the step only, so a resumed run sees the same data."""
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(256, 16, generator=gen)
    y = torch.sin(x[:, :4].sum(1, keepdim=True)) + 0.1 * x[:, 4:5]
    return x, y


def train(run_dir: Path) -> None:
    """Train to STEPS, resuming from the latest checkpoint in `run_dir` if there is one."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # a small model trains fastest on one thread; the runs share the CPU
    np.random.seed(0)
    random.seed(0)
    model, optimizer, scheduler = build()
    step = torch.zeros((), dtype=torch.int64)
    ckpt = trackpoint.Checkpoint(
        model=model, optimizer=optimizer, scheduler=scheduler, step=step, rng=RNGState()
    )
    manager = trackpoint.CheckpointManager(ckpt, run_dir, max_to_keep=3)
    latest = manager.latest_checkpoint
    if latest is not None:
        ckpt.restore(latest).assert_consumed()
        print(f"resumed from {Path(latest).name} at step {int(step)}", flush=True)
    model.train()
    while int(step) < STEPS:
        x, y = batch(int(step))
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        optimizer.step()
        scheduler.step()
        step += 1
        if int(step) % SAVE_EVERY == 0:
            path = Path(str(manager.save()))
            print(f"step {int(step):3d}  loss {loss.item():.4f}  saved {path.name}", flush=True)


def _first_run_killed() -> None:
    worker = subprocess.Popen(  # noqa: S603 - this very script, by its absolute path
        [sys.executable, __file__, "--train", str(RUN)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None  # noqa: S101 - stdout=PIPE above
    saves = 0
    for line in worker.stdout:
        print(f"  [run 1] {line.rstrip()}")
        saves += "saved" in line
        if saves == KILL_AT_SAVE:
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait()
    print(f"  [run 1] killed with SIGKILL (exit code {worker.returncode})")


def _run_to_end(run_dir: Path, label: str) -> None:
    result = subprocess.run(  # noqa: S603 - this very script, by its absolute path
        [sys.executable, __file__, "--train", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    for line in [*lines[:2], "...", *lines[-1:]] if len(lines) > 4 else lines:
        print(f"  [{label}] {line}")


def _compare(a: Path, b: Path) -> tuple[int, list[str]]:
    """How many tensors were compared (all of the latest checkpoints), and those that differ."""
    ra, rb = trackpoint.load_checkpoint(a), trackpoint.load_checkpoint(b)
    keys = list(ra.get_variable_to_shape_map())
    if keys != list(rb.get_variable_to_shape_map()):
        return len(keys), ["(the checkpoints hold different keys)"]
    differ = []
    for key in keys:
        x, y = ra.get_tensor(key), rb.get_tensor(key)
        same = x.tolist() == y.tolist() if x.dtype == object else x.tobytes() == y.tobytes()
        if not same:
            differ.append(key)
    return len(keys), differ


def main() -> int:
    for folder in (RUN, REFERENCE):
        shutil.rmtree(folder, ignore_errors=True)

    print(f"1. training for {STEPS} steps, saving every {SAVE_EVERY} into {RUN}/")
    _first_run_killed()
    print(f"\n2. a new process resumes from {trackpoint.latest_checkpoint(RUN)}")
    _run_to_end(RUN, "run 2")
    print(f"\n3. an uninterrupted run for comparison, into {REFERENCE}/")
    _run_to_end(REFERENCE, "ref")

    count, differ = _compare(RUN, REFERENCE)
    if differ:
        print(f"\nMISMATCH: {len(differ)} of {count} tensors differ: {differ[:5]}")
        return 1
    print(
        f"\nfinal weights equal the uninterrupted run's bit for bit "
        f"({count} tensors: parameters, BatchNorm statistics, AdamW state, LR schedule, step, "
        "RNG state, object graph)\n"
    )
    code = cli_main(["inspect", str(RUN)])
    if code == 0:
        code = cli_main(["verify", str(RUN)])
    return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--train":
        train(Path(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
