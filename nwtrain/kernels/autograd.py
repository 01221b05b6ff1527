"""Autograd wrappers of the fused time loops, one per neuron family, independent of the device.

``backend`` is a kernel module with the four functions of ``cpu.py``: ``cpu`` (numba, CPU tensors) or
``cuda`` (Triton, CUDA tensors, or CPU tensors under Triton's interpreter); it takes and returns tensors
on the device of its inputs, so nothing here moves data. The forward kernel saves the membranes before
reset; the backward evaluates the surrogate derivative on all steps at once in torch, which keeps the
kernels free of any surrogate (any ``Surrogate`` works on every backend), and hands the reverse-time
recursion to the backward kernel.
"""

# `# fmt: skip` below keeps a kernel's long argument lists in their groups (gradients, state, parameters,
# options, outputs) on a line each, as the numba signatures list them: one name per line hides the groups.

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _requested(ctx, grads):
    """The gradients of the inputs ``apply`` was given (the recurrence's are optional trailing inputs)."""
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


def _spike_path(ctx, g_spikes, pre, threshold):
    """dL/du through the spike: the incoming gradient times the surrogate derivative at ``u - threshold``."""
    if g_spikes is None:  # the spikes reached no loss; autograd leaves unused gradients unmaterialised
        return torch.zeros_like(pre)
    return g_spikes * ctx.spike_fn.grad(pre - threshold)


def _spike_inputs(ctx, g_spikes, pre, threshold, recurrent):
    """``(g_spike, slope)`` for a backward kernel: dL/du through the spike and None when feed-forward; with
    recurrence the spikes' gradient also comes from the next step, inside the loop, so the kernel gets
    dL/ds from outside and the surrogate derivative apart."""
    if recurrent is None:
        return _spike_path(ctx, g_spikes, pre, threshold), None
    g_spikes = torch.zeros_like(pre) if g_spikes is None else g_spikes
    return g_spikes, ctx.spike_fn.grad(pre - threshold)


def _recurrent_weights_grad(ctx, index, g_input, spikes, spk0):
    """``dL/dG = sum over b, t of s[t-1]^T dL/dI[t]`` (summed in float64, as the kernels sum the other
    parameter gradients), or None where it is not needed."""
    if len(ctx.needs_input_grad) <= index or not ctx.needs_input_grad[index]:
        return None
    previous = torch.cat([spk0[:, None], spikes[:, :-1]], 1)
    return torch.einsum("bti,btn->in", previous.double(), g_input.double()).to(g_input.dtype)


class LIFSequence(torch.autograd.Function):
    """``dynamics.lif_step`` over ``current [B, T, N]``, with in-core recurrence when ``recurrent``
    (``G [N, N]``, ``spk0`` the spikes before the first step) is given; returns ``(spikes, membranes)``."""

    @staticmethod
    def forward(ctx, current, mem0, decay, threshold, reset, spike_fn, backend, recurrent=None, spk0=None):
        spikes, mems, pre = backend.lif_forward(current, mem0, decay, threshold, reset, recurrent, spk0)
        ctx.set_materialize_grads(False)  # the membranes are rarely in the loss: skip their zero gradient
        ctx.save_for_backward(pre, spikes, mems, mem0, decay, threshold, recurrent, spk0)
        ctx.reset, ctx.spike_fn, ctx.backend = reset, spike_fn, backend
        return spikes, mems

    @staticmethod
    @once_differentiable  # the kernels are not differentiable themselves: refuse double backward loudly
    def backward(ctx, g_spikes, g_mems):
        pre, spikes, mems, mem0, decay, threshold, recurrent, spk0 = ctx.saved_tensors
        g_spike, slope = _spike_inputs(ctx, g_spikes, pre, threshold, recurrent)
        need_params = any(ctx.needs_input_grad[2:4])
        g_current, g_mem0, g_decay, g_threshold, g_spk0 = ctx.backend.lif_backward(
            g_spike, g_mems, spikes, mems, mem0, decay, ctx.reset, need_params, recurrent, slope
        )
        g_recurrent = _recurrent_weights_grad(ctx, 7, g_current, spikes, spk0)
        grads = (g_current, g_mem0, g_decay, g_threshold, None, None, None, g_recurrent, g_spk0)
        return _requested(ctx, grads)


class LinearLeakSequence(torch.autograd.Function):
    """``dynamics.linear_leak_step`` over ``scale * current [B, T, N]``, with in-core recurrence as
    ``LIFSequence`` (its current scaled too); returns ``(spikes, membranes)``."""

    @staticmethod
    def forward(
        ctx, current, mem0, vleak, vt, scale, reset, spike_fn, backend, clamp_grad=0.0, recurrent=None,
        spk0=None,
    ):  # fmt: skip
        spikes, mems, pre, flags = backend.leak_forward(
            current, mem0, vleak, vt, scale, reset, recurrent, spk0
        )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(pre, flags, vt, recurrent, spk0, None if recurrent is None else spikes)
        ctx.scale, ctx.reset, ctx.spike_fn, ctx.backend = scale, reset, spike_fn, backend
        ctx.clamp_grad = clamp_grad
        return spikes, mems

    @staticmethod
    @once_differentiable
    def backward(ctx, g_spikes, g_mems):
        pre, flags, vt, recurrent, spk0, spikes = ctx.saved_tensors
        g_spike, slope = _spike_inputs(ctx, g_spikes, pre, vt, recurrent)
        need_params = any(ctx.needs_input_grad[2:4])
        g_current, g_mem0, g_vleak, g_vt, g_spk0 = ctx.backend.leak_backward(
            g_spike, g_mems, flags, ctx.scale, ctx.clamp_grad, ctx.reset, need_params, recurrent, slope
        )
        g_recurrent = _recurrent_weights_grad(ctx, 9, g_current, spikes, spk0)
        grads = (g_current, g_mem0, g_vleak, g_vt, None, None, None, None, None, g_recurrent, g_spk0)
        return _requested(ctx, grads)
