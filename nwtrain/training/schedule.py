"""The learning-rate schedule of the runs: cosine decay over the run's epochs."""

from __future__ import annotations

import math

import torch


class CosineSchedule:
    """Learning rates annealed from each parameter group's rate to 0 along a cosine over ``total_epochs``:

        lr(epoch) = lr_0 * (1 + cos(pi * epoch / total_epochs)) / 2

    A function of the epoch alone: ``set_epoch(e)`` before epoch ``e`` (0-based) sets the rates it runs
    with, so a run resumed at any epoch, even with a longer ``total_epochs``, needs no saved state. The
    base rates are the optimiser's when this is built (build it before loading a checkpoint's optimiser).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_epochs: int):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.optimizer = optimizer
        self.total_epochs = int(total_epochs)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def factor(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.total_epochs) / self.total_epochs))

    def set_epoch(self, epoch: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(epoch)
