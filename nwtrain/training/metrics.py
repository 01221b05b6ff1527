"""Classification metrics on spike trains."""

from __future__ import annotations

import torch

from nwtrain.training.losses import population_counts


def spike_counts(spikes: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` output spikes -> ``[B, C]`` spike counts, the class scores."""
    return spikes.sum(dim=1)


def accuracy(spikes: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose most-spiking output neuron is the label (ties go to the lower index)."""
    return (spike_counts(spikes).argmax(dim=1) == labels).float().mean().item()


def accuracy_population(spikes: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Accuracy of a population readout (the SDK's ``accuracy_population``, recommended on hardware): each
    class's score is its population's total spike count (``spikes`` ``[B, T, N]`` or counts ``[B, N]``, N =
    ``num_classes`` x P, class-major); the prediction is the class with the most."""
    scores = population_counts(spikes, num_classes).sum(dim=-1)
    return (scores.argmax(dim=1) == targets).float().mean().item()
