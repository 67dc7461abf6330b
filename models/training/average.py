"""An exponential moving average of a model's weights, which a run validates and exports in place of its raw weights.

Batches of eight crops give noisy steps: the average over the last ~1 / (1 - decay) steps sits nearer the bottom of
the valley the steps wander around than any one step does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """The average of every floating-point tensor of `model`'s state (parameters and buffers), in float32, started
    at the model's weights as they are (a run that continues shipped weights starts its average there)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay {decay} is not in (0, 1)")
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, tensor in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(tensor.float(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """`model` holds the average inside the block and its own weights again after it."""
        state = model.state_dict()
        raw = {k: state[k].detach().clone() for k in self.shadow}
        model.load_state_dict({k: v.to(raw[k].dtype) for k, v in self.shadow.items()}, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: dict[str, torch.Tensor]) -> None:
        if shadow.keys() != self.shadow.keys():
            raise ValueError("the saved average belongs to another network")
        self.shadow = {k: v.float().to(self.shadow[k].device) for k, v in shadow.items()}
