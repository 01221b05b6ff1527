"""``frontend_firing_init``: front-end gains that make each front-end neuron fire at a target rate."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nwtrain.core.layers import prepare_net

_BISECTION_STEPS = 16


@torch.no_grad()
def frontend_firing_init(model: nn.Module, x: torch.Tensor, target_rate: float = 0.05) -> torch.Tensor:
    """Set each front-end gain of a ``KWSNet``-like ``model`` (``frontend``, ``frontend_layer``,
    ``input_gain``) so its neuron fires ``target_rate`` spikes per step on the feature batch ``x [B, T, C]``;
    returns the rates reached per channel.

    A neuron's rate grows with its gain, so each channel bisects its own gain in ``[0, limit]`` (the front
    end's weight range), all channels at once. A channel whose input is too weak to reach the target at
    the top of the range keeps the top gain (its rate is then below the target): the returned rates show it.
    """
    if not 0 < target_rate < 1:
        raise ValueError(f"target_rate must lie in (0, 1) spikes per step, got {target_rate}")
    weight = model.frontend.weight
    limit = getattr(model.frontend, "WEIGHT_LIMIT_V", None) or 1.0
    lo, hi = torch.zeros_like(weight), torch.full_like(weight, limit)
    drive = x * getattr(model, "input_gain", 1.0)

    def rates(gain: torch.Tensor) -> torch.Tensor:
        weight.copy_(gain)
        layer = prepare_net(copy.deepcopy(model.frontend_layer), generator=torch.Generator().manual_seed(0))
        spikes, _ = layer(model.frontend(drive))
        return spikes.mean(dim=(0, 1)).reshape(weight.shape)

    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        above = rates(mid) >= target_rate
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return rates(hi).flatten()
