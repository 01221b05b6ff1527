"""SignAnnealing: drives every sign block of the chip synapses to one sign over training."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import synapses
from .topology import block_signs


def _signed_synapses(net: nn.Module):
    return [s for s in synapses(net) if s.SIGN_BLOCKS]


class SignAnnealing:
    """Anneal each sign block of 5 towards its majority sign (tutorial 1 section 4f, tutorial 2 section 7).

    ``step(net, epoch)`` sets the sharpness ``alpha`` on a geometric schedule from ``alpha_start`` (first
    epoch) to ``alpha_end`` (epoch ``total_epochs - 1`` and later) and moves every weight towards its
    block's sign, in place, by the hardness ``h = 1 - exp(-alpha)``:

        w <- (1 - h) * w + h * s_block * |w|

    Weights that agree with their block are untouched; a dissenting weight keeps its magnitude scaled
    by ``2h - 1`` and takes the block's sign as soon as ``h > 1/2``. At the last epoch ``h = 1``: the
    projection is exact and every block is sign-uniform. Magnitudes stay free, so gradients keep
    shaping them between steps.
    """

    def __init__(self, net: nn.Module, total_epochs: int, alpha_start: float = 0.5, alpha_end: float = 12.0):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        if not 0 < alpha_start <= alpha_end:
            raise ValueError(f"need 0 < alpha_start <= alpha_end, got {alpha_start}, {alpha_end}")
        self.total_epochs = int(total_epochs)
        self.alpha_start, self.alpha_end = float(alpha_start), float(alpha_end)
        if not _signed_synapses(net):
            raise ValueError(f"{type(net).__name__} has no chip synapse with sign blocks to anneal")
        self.alpha = self.alpha_start

    def progress(self, epoch: int) -> float:
        return min(max(epoch / max(self.total_epochs - 1, 1), 0.0), 1.0)

    def hardness(self, epoch: int) -> float:
        p = self.progress(epoch)
        return 1.0 if p >= 1.0 else 1.0 - math.exp(-self.alpha_at(epoch))

    def alpha_at(self, epoch: int) -> float:
        return self.alpha_start * (self.alpha_end / self.alpha_start) ** self.progress(epoch)

    @torch.no_grad()
    def step(self, net: nn.Module, epoch: int) -> float:
        """Apply this epoch's projection to ``net``'s chip synapses; returns the hardness used."""
        self.alpha = self.alpha_at(epoch)
        h = self.hardness(epoch)
        for syn in _signed_synapses(net):
            w = syn.weight
            w.copy_((1.0 - h) * w + h * block_signs(w) * w.abs())
        return h


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
