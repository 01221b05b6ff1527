"""Neuron state updates, each written once as a pure function of (state, input, parameters).

Modules in ``nwtrain.core.layers`` hold parameters and state and call these; the sequence path
(``run_sequence``) is the reference every fused kernel is checked against. All functions return
``(spikes, membrane)`` with the membrane after reset. The reset uses the spike value without its
surrogate gradient (as snnTorch and SpikingJelly do by default): the gradient reaches earlier time steps
through the membrane, not the reset.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RESET_MECHANISMS = ("subtraction", "zero", "none")

SpikeFn = Callable[[torch.Tensor], torch.Tensor]


def apply_reset(mem: torch.Tensor, spk: torch.Tensor, threshold, reset: str) -> torch.Tensor:
    """subtraction: v - s*theta; zero: v*(1 - s); none: v (s detached in all cases)."""
    s = spk.detach()
    if reset == "subtraction":
        return mem - s * threshold
    if reset == "zero":
        return mem * (1.0 - s)
    if reset == "none":
        return mem
    raise ValueError(f"reset_mechanism must be one of {RESET_MECHANISMS}, got {reset!r}")


def lif_step(mem, current, decay, threshold, reset: str, spike_fn: SpikeFn):
    """Leaky integrate-and-fire with exponential decay (tutorial 1, section 3):

        v[t+1] = v[t] * exp(-dt / tau) + I[t]
        s[t+1] = H(v[t+1] - theta)
        v[t+1] <- reset(v[t+1], s[t+1])

    ``decay`` is ``exp(-dt/tau)`` per neuron; a spike fires at ``v >= theta``.
    """
    mem = decay * mem + current
    spk = spike_fn(mem - threshold)
    return spk, apply_reset(mem, spk, threshold, reset)


def adlif_step(state, current, decay, threshold, adapt_decay, a, b, reset: str, spike_fn: SpikeFn):
    """Adaptive LIF (adLIF; Bittar and Garner 2022, in the LIF baseline's units): the LIF membrane ``v``
    minus an adaptation ``w`` that low-passes the membrane and the spikes:

        v[t+1] = alpha * v[t] + I[t] - (1 - alpha) * w[t],               alpha = exp(-dt / tau)
        s[t+1] = H(v[t+1] - theta)
        v[t+1] <- reset(v[t+1], s[t+1])
        w[t+1] = beta * w[t] + (1 - beta) * (a * v[t+1] + b * s[t+1]),   beta = exp(-dt / tau_w)

    ``state`` is ``[..., 2, N]``: ``v`` then ``w``. ``w`` is in membrane units (held constant it lowers
    the resting membrane by ``w``), so ``a`` is dimensionless: held at ``a * v``, it scales the membrane's
    gain by ``1 / (1 + a)`` (a > 0 adapts; -1 < a < 0 resonates; the linear system's eigenvalues are
    ``1`` and ``alpha * beta`` at ``a = -1``, inside the unit circle above it). A spike adds ``b``
    thresholds of adaptation spread over ``tau_w``. The spike keeps its surrogate gradient in ``w``, as
    the recurrent input does.
    """
    v, w = state.unbind(-2)
    v = decay * v + current - (1.0 - decay) * w
    spk = spike_fn(v - threshold)
    v = apply_reset(v, spk, threshold, reset)
    w = adapt_decay * w + (1.0 - adapt_decay) * (a * v + b * spk)
    return spk, torch.stack((v, w), dim=-2)


def clamp_at_zero(x: torch.Tensor, clamp_grad: float = 0.0) -> torch.Tensor:
    """``max(0, x)`` whose derivative is 1 where ``x > 0`` and ``clamp_grad`` elsewhere (0: the exact one).

    A clamped membrane passes no gradient at all, so a silent or inhibited chip neuron could never learn
    to fire; a small ``clamp_grad`` is a surrogate for the clamp, as the spike has one for the step.
    """
    if clamp_grad == 0.0:
        return torch.relu(x)
    return torch.where(x > 0, x, clamp_grad * (x - x.detach()))


def linear_leak_step(mem, dv, vleak, vt, reset: str, spike_fn: SpikeFn, clamp_grad: float = 0.0):
    """Analog neuron of the H1 chips: constant leak, membrane clamped at 0 (tutorial 1, section 4a):

        v[t+1] = max(0, max(0, v[t] - Vleak) + dV[t])
        s[t+1] = H(v[t+1] - vt)
        v[t+1] <- max(0, reset(v[t+1], s[t+1]))

    The leak drains the charge already on the capacitor during the step and the synaptic charge packet
    ``dV`` lands at its end, so a lone input shows its full height (tutorial 2: peak membrane 0.1973 for
    0.01 V/nA * 19.7304 nA). H1v1 resets to zero, H1v2 subtracts the threshold (both clamp at 0).
    ``clamp_grad`` is the backward slope of every ``max(0, .)`` where it clamps (``clamp_at_zero``); the
    forward values do not depend on it.
    """
    mem = clamp_at_zero(clamp_at_zero(mem - vleak, clamp_grad) + dv, clamp_grad)
    spk = spike_fn(mem - vt)
    return spk, clamp_at_zero(apply_reset(mem, spk, vt, reset), clamp_grad)


def recurrent_current(current, spk_prev, recurrent):
    """In-core recurrence (the SDK's ``layer_topology="RC"``): a layer's own spikes of the previous step
    reach it again through the transferred recurrent weights ``G = transfer(W_rec) [N, N]`` (row: the
    neuron that spiked), added to the feed-forward input in the units the neuron integrates:

        I[t] = I_ff[t] + s[t-1] @ G          s[-1] = 0 (after ``prepare_net``)

    The one-step delay is the chip's: a spike reaches its own core in the next step, never in the step it
    fires, so each step stays explicit.
    """
    return current + spk_prev @ recurrent


def run_sequence(step, mem: torch.Tensor, inputs: torch.Tensor, *args, recurrent=None, spk=None):
    """Reference time loop: ``step(mem, inputs[:, t], *args)`` for t in 0..T-1 on ``inputs [B, T, N]``;
    with ``recurrent`` (``G [N, N]``) the input of each step is ``recurrent_current(inputs[:, t], s[t-1],
    G)``, ``spk`` being ``s[-1]``.

    Returns ``(spikes [B, T, N], membranes [B, T, N], final membrane [B, N])``.
    """
    spikes, mems = [], []
    for t in range(inputs.shape[1]):
        current = inputs[:, t] if recurrent is None else recurrent_current(inputs[:, t], spk, recurrent)
        spk, mem = step(mem, current, *args)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes, dim=1), torch.stack(mems, dim=1), mem
