"""Initialisers of the vendor SDK (``nwavesdk.init``): fluctuation-driven dense weights (:func:`fluct_init`),
front-end gains set to a firing rate (:func:`frontend_firing_init`) and sign-block-uniform weights in the
chip's range (:func:`nwtrain.init.hardware.init_weights`). See docs/accuracy.md, "Initialisation"."""

import torch
from torch import nn

from nwtrain.init.fluct_init import LayerInit, fluct_init, psp_kernel
from nwtrain.init.frontend import frontend_firing_init

__all__ = ["LayerInit", "auto_init", "fluct_init", "frontend_firing_init", "psp_kernel"]


def auto_init(
    model: nn.Module,
    x: torch.Tensor,
    generator: torch.Generator,
    frontend_rate: float = 0.05,
    xi_target: float = 1.5,
    alpha: float = 1.0,
    mean_fraction: float = 0.5,
) -> list[LayerInit]:
    """SDK tutorial 5's automatic initialisation on the feature batch ``x``: the front-end gains to
    ``frontend_rate`` spikes per step (:func:`frontend_firing_init`), then every later layer by
    :func:`fluct_init` on the spikes that front end now gives (the ``init=fluct`` config option)."""
    frontend_firing_init(model, x, frontend_rate)
    return fluct_init(model, x, xi_target, alpha, mean_fraction, generator=generator)
