"""Save and load a PyTorch model's weights alone (the seed's third example).

    python examples/torch_weights.py [PREFIX]    # default: weights/model

`save_weights` makes the model itself the root, as Keras does: the keys are the model's
own paths (`0/weight/.ATTRIBUTES/VARIABLE_VALUE`), readable by `tf.train.load_checkpoint`.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import trackpoint


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def main(prefix: str) -> None:
    torch.manual_seed(0)
    model = build()
    trackpoint.save_weights(model, prefix)
    print(f"saved {prefix}: {[key for key, _ in trackpoint.list_variables(prefix)]}")

    torch.manual_seed(1)
    other = build()  # different initial weights
    trackpoint.load_weights(other, prefix).assert_consumed()
    pairs = zip(model.parameters(), other.parameters(), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    print(f"loaded into a new model: weights equal = {same}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "weights/model")
