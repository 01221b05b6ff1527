"""An exponential moving average of a network's weights (``trainer.ema_decay``).

Training steps the weights themselves; validation, the best checkpoint, the test and everything that loads a
checkpoint (``nwtrain-eval``, ``-export``, ``-predict``) see the average. Why: the validation accuracy of a
small keyword set moves by 1 to 2 points from one epoch to the next (docs/accuracy.md, "How much a test
figure moves"), partly the noise of the last steps in the weights; an average over the last few epochs'
steps has less of it, and the epoch picked on validation is then less a lucky draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """The average a_k = d a_{k-1} + (1 - d) w_k of the parameters w_k after optimiser step k, a_0 = w_0
    (the weights the run starts from), decay d in (0, 1): it weighs the steps of roughly the last
    1 / (1 - d). Parameters only: buffers (constants, and the sign hardness an annealer sets) are the
    model's own."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(f"ema decay must be a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.average = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold in the weights after an optimiser step."""
        for name, p in model.named_parameters():
            self.average[name].lerp_(p, 1.0 - self.decay)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``model`` with the averaged weights in place of its own; its own come back on exit."""
        own = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._copy_into(model, self.average)
        try:
            yield model
        finally:
            self._copy_into(model, own)

    def load(self, state_dict: dict) -> None:
        """The average from a model ``state_dict`` taken with the average applied (a checkpoint's
        ``model``)."""
        missing = sorted(self.average.keys() - state_dict.keys())
        if missing:
            raise KeyError(f"the averaged weights lack {missing}")
        with torch.no_grad():
            for name, a in self.average.items():
                a.copy_(state_dict[name])

    @staticmethod
    @torch.no_grad()
    def _copy_into(model: torch.nn.Module, weights: dict) -> None:
        for name, p in model.named_parameters():
            p.copy_(weights[name])
