"""The loss stack of tutorial 4 (sign topology, weight magnitude, firing-rate targets) and the SDK's
population loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nwtrain.core.layers import recurrent_layers, routed_weight, synapses
from nwtrain.core.topology import sign_conflict


def topology_loss(synapse: nn.Module, lam: float) -> torch.Tensor:
    """``lam * sum over sign blocks of the minority magnitude`` ((sum|w| - |sum w|) / 2 per block) of a
    synapse's weight or an RC layer's recurrent weights (``layers.routed_weight``).

    Zero exactly when every block of 5 is sign-uniform; its gradient shrinks the weights that disagree
    with their block's majority, which is the nudge tutorial 4 describes (lam=0.05).
    """
    return lam * sign_conflict(routed_weight(synapse)).sum()


def weight_magnitude_loss(model: nn.Module, limit: float) -> torch.Tensor:
    """``sum over every synapse weight and recurrent weight of relu(|w| - limit)^2``: a soft wall at the
    chip's range."""
    weights = [s.weight for s in synapses(model)] + [routed_weight(m) for m in recurrent_layers(model)]
    terms = [torch.relu(w.abs() - limit).pow(2).sum() for w in weights]
    if not terms:
        raise ValueError(f"{type(model).__name__} has no synapse for weight_magnitude_loss")
    return torch.stack(terms).sum()


def firing_rate_target_mse_loss(
    spikes_list: Sequence[torch.Tensor], offsets: Sequence[float], multipliers: Sequence[float]
) -> torch.Tensor:
    """``sum_i multipliers[i] * mean_{b,n} (rate_i[b, n] - offsets[i])^2`` with ``rate_i`` the fraction of
    time steps each neuron fired for each sample (``spikes [B, T, N]``)."""
    if not len(spikes_list) == len(offsets) == len(multipliers):
        raise ValueError(
            f"spikes_list, offsets and multipliers differ in length: "
            f"{len(spikes_list)}, {len(offsets)}, {len(multipliers)}"
        )
    terms = [m * (spk.mean(dim=1) - o).pow(2).mean() for spk, o, m in zip(spikes_list, offsets, multipliers)]
    return torch.stack(terms).sum()


def balanced_population_mse(
    spikes: torch.Tensor, targets: torch.Tensor, num_classes: int, high: float, low: float
) -> torch.Tensor:
    """Each class's output population pushed to ``high`` spikes per neuron when it is the label and to
    ``low`` otherwise (the SDK's ``balanced_population_mse``):

        L = mean_b [ mean_{j in pop(y_b)} (c_bj - high)^2 + mean_{j not in pop(y_b)} (c_bj - low)^2 ]

    with ``c`` the spike counts ``[B, N]`` (``spikes [B, T, N]`` are counted over time first) of N =
    ``num_classes`` x P output neurons, class-major (neuron j of class k is column k * P + j, as
    ``KWSNet`` lays them out). Balanced: the one target population weighs as much as all others together.
    """
    counts = population_counts(spikes, num_classes)
    on = torch.nn.functional.one_hot(targets, num_classes).to(counts.dtype)[:, :, None].expand_as(counts)
    error = torch.where(on.bool(), counts - high, counts - low).pow(2)
    per_target = (error * on).sum(dim=(1, 2)) / on.sum(dim=(1, 2))
    per_other = (error * (1 - on)).sum(dim=(1, 2)) / (1 - on).sum(dim=(1, 2)).clamp_min(1)
    return (per_target + per_other).mean()


def population_counts(spikes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Spike counts ``[B, num_classes, P]`` of a class-major output population (``spikes`` ``[B, T, N]`` or
    counts ``[B, N]``)."""
    counts = spikes.sum(dim=1) if spikes.dim() == 3 else spikes
    n = counts.shape[-1]
    if n % num_classes:
        raise ValueError(f"{n} output neurons are not a multiple of {num_classes} classes")
    return counts.reshape(counts.shape[0], num_classes, n // num_classes)
