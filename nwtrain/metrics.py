"""Classification metrics on spike trains."""

from __future__ import annotations

import torch


def spike_counts(spikes: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` output spikes -> ``[B, C]`` spike counts, the class scores."""
    return spikes.sum(dim=1)


def accuracy(spikes: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose most-spiking output neuron is the label (ties go to the lower index)."""
    return (spike_counts(spikes).argmax(dim=1) == labels).float().mean().item()
