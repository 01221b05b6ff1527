"""Fluctuation-driven initialisation (Rossbroich, Gygax and Zenke 2022, arXiv 2206.10226), as the vendor
SDK's ``nwavesdk.init.fluct_init`` adapts it to the chips.

A neuron trains well when its free membrane potential U (the threshold out of the way) sits a few standard
deviations below threshold: it then fires on input fluctuations, and the surrogate gradient reaches it. The
target is

    xi = (theta - mean U) / std U.

With n inputs firing at nu spikes per step through weights w ~ N(mu_W, sigma_W^2) and the layer's
postsynaptic potential per unit weight eps[t] (the PSP kernel), shot noise gives

    mean U = n nu mu_W sum_t eps[t],        var U = n nu (mu_W^2 + sigma_W^2) sum_t eps[t]^2.

Choosing mean U = mean_fraction * theta fixes std U = (theta - mean U) / xi, then mu_W and sigma_W. As in
the SDK, and unlike the paper, two steps follow the theory:

- the kernel eps is measured from the layer's own dynamics (a probe weight of ``probe_fraction`` of the
  chip's range through the real synapse and neuron, threshold disabled), since the chips' linear leak
  with its clamp at 0 and H1v1's tanh synapse are not the paper's exponential LIF;
- the theory's mu_W and sigma_W are then scaled together until the layer's free membrane, simulated on
  the data, has the target xi (see ``_init_layer`` for why the theory alone misses it on the chips);
- a binary search on mu_W, running the real layer on the data, leaves no neuron silent on the batch.

``alpha`` splits the variance budget of an RC layer: the feed-forward weights carry ``alpha`` of var U and
the recurrent weights (mean 0, within the core mask) the rest, at the layer's own firing rate after its
feed-forward initialisation. Layers are initialised in order, each on the spikes of the ones before it.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from nwtrain.core.layers import SpikingLayer, prepare_net

log = logging.getLogger(__name__)

# A weight range for layers without one (the LIF baseline): its weights are membrane jumps in thresholds.
UNBOUNDED_LIMIT = 10.0
_SEARCH_STEPS = 12


@dataclass(frozen=True)
class LayerInit:
    """What ``fluct_init`` set on one layer and what it measured."""

    layer: str
    mu_w: float
    sigma_w: float
    sigma_rec: float | None  # the recurrent weights' std (RC layers)
    input_rate: float  # presynaptic spikes per input per step
    xi: float  # (theta - mean U) / std U of the free membrane, measured after the init
    dead_fraction: float  # neurons without a spike on the batch, after the search
    drive_raised: bool  # the xi target left neurons silent, and the search raised the weights past it


def psp_kernel(layer: SpikingLayer, synapse: nn.Module, probe: float, steps: int) -> torch.Tensor:
    """The membrane response ``eps [steps]`` of ``layer`` per unit weight to one input spike at step 0
    through ``synapse``'s transfer at weight ``probe``, the threshold disabled (a copy is simulated)."""
    current = torch.zeros(1, steps, layer.n_neurons, device=_device(layer))
    current[0, 0] = synapse.transfer(torch.tensor(probe, device=current.device))
    _, mem = _without_threshold(layer)(current)
    return mem[0, :, 0].detach() / probe


@torch.no_grad()
def fluct_init(
    model: nn.Module,
    x: torch.Tensor,
    xi_target: float = 1.5,
    alpha: float = 1.0,
    mean_fraction: float = 0.5,
    probe_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> list[LayerInit]:
    """Initialise the dense (and recurrent) weights of a ``KWSNet``-like ``model`` (``layer_names``, a
    ``syn_<name>`` before each layer, ``frontend`` / ``frontend_layer``, ``traces``) on the feature batch
    ``x [B, T, C]``, for every layer after the front end; returns one :class:`LayerInit` per layer.

    ``xi_target``: the free membrane's distance to threshold in standard deviations (1 to 3 in the paper;
    H1v2's weak synapse needs more input to reach it, and the SDK advises a higher target there).
    ``alpha`` in (0, 1]: the feed-forward share of the variance of an RC layer. ``mean_fraction`` in
    [0, 1): the mean free membrane as a fraction of the threshold. ``probe_fraction``: the PSP probe, a
    fraction of the chip's weight range. Weights are drawn from ``generator`` and clipped to the range.
    The batch runs on one simulated chip instance (mismatch drawn with seed 0). Call it before
    SignAnnealing parametrises the weights (``nwtrain.training.loop`` does).
    """
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("fluct_init sets the plain weights: call it before SignAnnealing parametrises them")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if not 0 <= mean_fraction < 1:
        raise ValueError(f"mean_fraction must lie in [0, 1), got {mean_fraction}")
    if not xi_target > 0:
        raise ValueError(f"xi_target must be > 0, got {xi_target}")
    generator = generator or torch.Generator(device=x.device).manual_seed(0)
    model.eval()
    report = []
    names = list(model.layer_names[1:])
    for i, name in enumerate(names):
        synapse, layer = getattr(model, f"syn_{name}"), getattr(model, name)
        model(x, torch.Generator().manual_seed(0))
        pre = _layer_input(model, names, i)
        report.append(
            _init_layer(name, synapse, layer, pre, xi_target, alpha, mean_fraction, probe_fraction, generator)
        )
        log.info(
            "fluct_init %s: mu_W %.4g, sigma_W %.4g, input rate %.3f, xi %.2f, dead %.0f %%",
            name,
            report[-1].mu_w,
            report[-1].sigma_w,
            report[-1].input_rate,
            report[-1].xi,
            100 * report[-1].dead_fraction,
        )
    return report


def _init_layer(name, synapse, layer, pre, xi_target, alpha, mean_fraction, probe_fraction, generator):
    limit = getattr(synapse, "WEIGHT_LIMIT_V", None) or UNBOUNDED_LIMIT
    n_in = pre.shape[-1]
    nu = float(pre.mean())
    if nu == 0:
        raise ValueError(
            f"fluct_init: the input of {name} never spikes on this batch; initialise the layers before it"
        )
    theta = _threshold(layer)
    mean_target = mean_fraction * theta
    std_target = (theta - mean_target) / xi_target
    # The shot-noise theory with the measured kernel gives the ratio sigma_W / mu_W and a first scale.
    eps = psp_kernel(layer, synapse, probe_fraction * limit, pre.shape[1])
    mu_w = mean_target / (n_in * nu * float(eps.sum()))
    sigma_w = math.sqrt(max(alpha * std_target**2 / (n_in * nu * float(eps.pow(2).sum())) - mu_w**2, 0.0))
    # Where the theory leaves no variance to the weights, a spread of half the mean keeps the neurons of
    # the layer apart (identical weights would train alike).
    sigma_w = max(sigma_w, 0.5 * abs(mu_w))
    z = torch.randn(synapse.weight.shape, generator=generator, device=generator.device).to(synapse.weight)
    if getattr(layer, "recurrent", False):  # the feed-forward part first, without recurrence
        layer.recurrent_weights.zero_()

    def set_weights(mu: float, sigma: float) -> None:
        synapse.weight.copy_((mu + sigma * z).clamp(-limit, limit))

    def xi_at(scale: float) -> float:
        set_weights(scale * mu_w, scale * sigma_w)
        mean_u, std_u = _free_membrane(layer, synapse(pre))
        return (theta - mean_u) / max(std_u, 1e-12 * theta)

    # The theory assumes independent Poisson inputs and a linear membrane; the batch's correlated spikes,
    # H1v1's tanh and the chips' clamp at 0 (whose free membrane has a std close to its mean, so the two
    # cannot be set apart) bend it. Its ratio sigma_W / mu_W stays, and a bisection on their common scale
    # lands the simulated free membrane's xi on the target (xi falls as the drive grows). The feed-forward
    # weights carry alpha of the variance: their own xi is larger by 1 / sqrt(alpha).
    target = xi_target / math.sqrt(alpha)
    lo, hi = 0.0, 1.0
    while xi_at(hi) > target and hi * abs(mu_w) < limit:
        lo, hi = hi, 2 * hi
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if xi_at(mid) > target else (lo, mid)
    mu_w, sigma_w = hi * mu_w, hi * sigma_w

    def dead_at(mu: float) -> float:
        set_weights(mu, sigma_w * mu / mu_w)  # the spread follows the mean: the neurons stay apart
        spikes, _ = _fresh(layer)(synapse(pre))
        return float((spikes.sum(dim=(0, 1)) == 0).float().mean())

    dead = dead_at(mu_w)
    if raised := dead > 0:
        mu = _lowest_live_mean(dead_at, mu_w, limit)
        mu_w, sigma_w = mu, sigma_w * mu / mu_w
        dead = dead_at(mu_w)
    sigma_rec = None
    if getattr(layer, "recurrent", False) and alpha < 1:
        sigma_rec = _init_recurrent(layer, synapse(pre), (1 - alpha) * std_target**2, eps, limit, generator)
    mean_u, std_u = _free_membrane(layer, synapse(pre))
    xi = (theta - mean_u) / max(std_u, 1e-12)
    return LayerInit(name, mu_w, sigma_w, sigma_rec, nu, xi, dead, raised)


def _lowest_live_mean(dead_at, mu: float, limit: float) -> float:
    """The lowest mean weight above ``mu`` (up to ``limit``) at which ``dead_at`` finds no silent neuron:
    doubling, then a bisection."""
    lo, hi = mu, 2 * mu
    while dead_at(hi) > 0 and hi < limit:
        lo, hi = hi, min(2 * hi, limit)
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if dead_at(mid) == 0 else (mid, hi)
    return hi


def _init_recurrent(layer, current, variance: float, eps, limit: float, generator) -> float:
    """Zero-mean recurrent weights whose shot noise, at the layer's own rate under the feed-forward
    ``current``, carries ``variance`` of the membrane; returns their sigma."""
    spikes, _ = _fresh(layer)(current)
    nu_rec = max(float(spikes.mean()), 1.0 / current.shape[1])
    mask = layer.recurrent_mask
    n_rec = layer.n_neurons if mask is None else float(mask.sum(dim=0).float().mean())
    sigma_rec = math.sqrt(variance / (n_rec * nu_rec * float(eps.pow(2).sum())))
    w = sigma_rec * torch.randn(layer.recurrent_weights.shape, generator=generator, device=generator.device)
    w = w.to(layer.recurrent_weights).clamp(-limit, limit)
    layer.recurrent_weights.copy_(w if mask is None else w * mask)
    return sigma_rec


def _layer_input(model, names, i) -> torch.Tensor:
    """The spikes layer ``names[i]``'s synapse receives on the last forward pass."""
    if i == 0:
        spk = model.traces["frontend"]
        delays = getattr(model, "delays", None)
        return spk if delays is None else delays(spk)
    return model.traces[names[i - 1]]


def _threshold(layer) -> float:
    vt = getattr(layer, "_vt", None)
    return float(vt) if vt is not None else float(layer.thresholds.float().mean())


def _without_threshold(layer):
    probe = _fresh(layer)
    # No spike ever: the membrane integrates freely, and an RC layer's recurrence stays silent with it.
    if hasattr(probe, "_vt"):
        probe._vt = torch.full_like(probe._vt, 1e9)
    else:
        probe.thresholds = torch.full_like(probe.thresholds, 1e9)
    return probe


def _fresh(layer):
    """A copy of ``layer``, its state reset on the chip instance of seed 0."""
    return prepare_net(copy.deepcopy(layer), generator=torch.Generator(device=_device(layer)).manual_seed(0))


def _free_membrane(layer, current) -> tuple[float, float]:
    """Mean and standard deviation of ``layer``'s membrane under ``current`` with the threshold disabled."""
    _, mem = _without_threshold(layer)(current)
    return float(mem.mean()), float(mem.std())


def _device(layer) -> torch.device:
    return next((b.device for b in layer.buffers()), torch.device("cpu"))
