"""Autograd wrappers of the fused time loops, one per neuron family, independent of the device.

``backend`` is a kernel module with the four functions of ``cpu.py``: ``cpu`` (numba, CPU tensors) or
``cuda`` (Triton, CUDA tensors, or CPU tensors under Triton's interpreter); it takes and returns tensors
on the device of its inputs, so nothing here moves data. The forward kernel saves the membranes before
reset; the backward evaluates the surrogate derivative on all steps at once in torch, which keeps the
kernels free of any surrogate (any ``Surrogate`` works on every backend), and hands the reverse-time
recursion to the backward kernel.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _requested(ctx, grads):
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


def _spike_path(ctx, g_spikes, pre, threshold):
    """dL/du through the spike: the incoming gradient times the surrogate derivative at ``u - threshold``."""
    if g_spikes is None:  # the spikes reached no loss; autograd leaves unused gradients unmaterialised
        return torch.zeros_like(pre)
    return g_spikes * ctx.spike_fn.grad(pre - threshold)


class LIFSequence(torch.autograd.Function):
    """``dynamics.lif_step`` over ``current [B, T, N]``; returns ``(spikes, membranes)``."""

    @staticmethod
    def forward(ctx, current, mem0, decay, threshold, reset, spike_fn, backend):
        spikes, mems, pre = backend.lif_forward(current, mem0, decay, threshold, reset)
        ctx.set_materialize_grads(False)  # the membranes are rarely in the loss: skip their zero gradient
        ctx.save_for_backward(pre, spikes, mems, mem0, decay, threshold)
        ctx.reset, ctx.spike_fn, ctx.backend = reset, spike_fn, backend
        return spikes, mems

    @staticmethod
    @once_differentiable  # the kernels are not differentiable themselves: refuse double backward loudly
    def backward(ctx, g_spikes, g_mems):
        pre, spikes, mems, mem0, decay, threshold = ctx.saved_tensors
        g_spike = _spike_path(ctx, g_spikes, pre, threshold)
        need_params = any(ctx.needs_input_grad[2:4])
        grads = ctx.backend.lif_backward(g_spike, g_mems, spikes, mems, mem0, decay, ctx.reset, need_params)
        return _requested(ctx, grads) + (None, None, None)


class LinearLeakSequence(torch.autograd.Function):
    """``dynamics.linear_leak_step`` over ``scale * current [B, T, N]``; returns ``(spikes, membranes)``."""

    @staticmethod
    def forward(ctx, current, mem0, vleak, vt, scale, reset, spike_fn, backend, clamp_grad=0.0):
        spikes, mems, pre, flags = backend.leak_forward(current, mem0, vleak, vt, scale, reset)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(pre, flags, vt)
        ctx.scale, ctx.reset, ctx.spike_fn, ctx.backend = scale, reset, spike_fn, backend
        ctx.clamp_grad = clamp_grad
        return spikes, mems

    @staticmethod
    @once_differentiable
    def backward(ctx, g_spikes, g_mems):
        pre, flags, vt = ctx.saved_tensors
        g_spike = _spike_path(ctx, g_spikes, pre, vt)
        need_params = any(ctx.needs_input_grad[2:4])
        grads = ctx.backend.leak_backward(
            g_spike, g_mems, flags, ctx.scale, ctx.clamp_grad, ctx.reset, need_params
        )
        return _requested(ctx, grads) + (None, None, None, None, None)
