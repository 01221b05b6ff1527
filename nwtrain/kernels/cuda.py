"""Triton kernels: the whole time loop of a layer, forward and reverse, one GPU program per (batch row,
block of neurons).

Same contract as ``cpu.py`` (the four functions, their arguments and results, ``codes``), on tensors of
any device Triton serves: CUDA tensors, or CPU tensors when Triton runs its interpreter
(``TRITON_INTERPRET=1`` before this module is imported: ``INTERPRETED`` says which). Each program keeps
its neurons' state in registers and walks time inside the kernel, so a sequence costs one launch per layer
instead of a few small launches per time step.

The arithmetic follows ``nwtrain.core.dynamics`` operation by operation in the tensors' dtype, and the kernels
are compiled without fused multiply-add (``enable_fp_fusion=False``): the reference rounds ``decay * v``
before adding the input, and one FMA would round once, flip spikes at the threshold and break the bit-for-
bit equality of the forward pass. The parameter gradients are summed over time in float64 registers, one
partial sum per program, and over the batch by a float64 torch sum, as the CPU kernels accumulate them.

In-core recurrence (``RECURRENT``, ``cpu.py`` explains it) needs every neuron of a batch row in one program:
each step reads the spikes the whole row stored in the step before (after a barrier) and adds the rows of
``recurrent`` of those that spiked in index order, as the CPU kernel and the reference's matrix product do;
the reverse loop reads the row's input gradients back the same way.
"""

# `# fmt: skip` below keeps a kernel's long argument lists in their groups (gradients, state, parameters,
# options, outputs) on a line each, as the numba signatures list them: one name per line hides the groups.

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from nwtrain.kernels import codes

_SUBTRACTION = tl.constexpr(codes.SUBTRACTION)
_ZERO = tl.constexpr(codes.ZERO)
_FIRED = tl.constexpr(codes.FIRED)
_POST_PASSES = tl.constexpr(codes.POST_PASSES)
_PRE_PASSES = tl.constexpr(codes.PRE_PASSES)
_LEAKED_PASSES = tl.constexpr(codes.LEAKED_PASSES)
_MAX_BLOCK = 128  # neurons per program: one per thread in up to 4 warps
_MAX_WARPS = 8  # a recurrent layer's row may be wider than 128 neurons: up to 256 threads hold it


# ---------------------------------------------------------------------------------------------------------
# Kernels. Arguments: ``[B, T, N]`` arrays (C-contiguous), ``[B, N]`` initial and final membranes, ``[N]``
# parameters, ``[B, N]`` float64 partial sums of the parameter gradients; ``at`` walks one row of
# ``[B, T, N]`` in steps of N.
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _fire_and_store(u, threshold, pre, spikes, mems, at, mask, RESET: tl.constexpr, CLAMP: tl.constexpr):
    """One step's spike at ``u >= threshold`` and reset; stores the membrane before reset ``u``, the spikes
    and the membrane after reset, and returns ``(fired, membrane after reset)``. ``CLAMP``: a subtraction
    leaves at least 0 (the chip neurons)."""
    fired = u >= threshold
    if RESET == _SUBTRACTION:
        v = u - threshold
        if CLAMP:
            v = tl.where(v > 0, v, 0.0)
        v = tl.where(fired, v, u)
    elif RESET == _ZERO:
        v = tl.where(fired, 0.0, u)
    else:
        v = u
    tl.store(pre + at, u, mask=mask)
    tl.store(spikes + at, fired.to(u.dtype), mask=mask)
    tl.store(mems + at, v, mask=mask)
    return fired, v


@triton.jit
def _input(current, at, mask, prev, recurrent, offs, n_neurons, RECURRENT: tl.constexpr):
    """One step's input: ``current`` at ``at``, plus with ``RECURRENT`` the spikes of the row ``prev``
    points to (the step before) through ``recurrent``, its rows added in index order."""
    i_t = tl.load(current + at, mask=mask, other=0.0)
    if RECURRENT:
        tl.debug_barrier()  # the spikes of the other threads of this program, stored in the step before
        r = tl.zeros_like(i_t)
        for i in range(n_neurons):
            r += tl.load(prev + i) * tl.load(recurrent + i * n_neurons + offs, mask=mask, other=0.0)
        i_t = i_t + r
    return i_t


@triton.jit
def _spike_grad(g_spike, slope, at, mask, g_rec, RECURRENT: tl.constexpr):
    """dL/du through the spike: ``g_spike`` itself, or with ``RECURRENT`` dL/ds from outside plus from the
    next step's input (``g_rec``), times the surrogate derivative ``slope``."""
    g_s = tl.load(g_spike + at, mask=mask, other=0.0)
    if RECURRENT:
        g_s = (g_s + g_rec) * tl.load(slope + at, mask=mask, other=0.0)
    return g_s


@triton.jit
def _recurrent_grad(g_row, recurrent, offs, mask, n_neurons, g_rec, RECURRENT: tl.constexpr):
    """``recurrent @ dL/dI[t]`` (the row ``g_row`` of input gradients): the gradient of the spikes of the
    step before through the recurrence; ``g_rec`` unchanged (zeros) without ``RECURRENT``."""
    if RECURRENT:
        tl.debug_barrier()  # the input gradients the other threads of this program just stored
        g_rec = tl.zeros_like(g_rec)
        for n in range(n_neurons):
            g_rec += tl.load(recurrent + offs * n_neurons + n, mask=mask, other=0.0) * tl.load(g_row + n)
    return g_rec


@triton.jit
def _lif_forward_kernel(
    current, mem0, spk0, recurrent, decay, threshold, spikes, mems, pre, steps, n_neurons,
    RESET: tl.constexpr, RECURRENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_neurons
    d = tl.load(decay + offs, mask=mask, other=0.0)
    th = tl.load(threshold + offs, mask=mask, other=0.0)
    v = tl.load(mem0 + b * n_neurons + offs, mask=mask, other=0.0)
    row = b * steps * n_neurons
    prev = spk0 + b * n_neurons
    for _ in range(steps):
        at = row + offs
        u = d * v + _input(current, at, mask, prev, recurrent, offs, n_neurons, RECURRENT)
        _, v = _fire_and_store(u, th, pre, spikes, mems, at, mask, RESET, False)
        prev = spikes + row
        row += n_neurons


@triton.jit
def _threshold_grad(g_s, g_reset, fired, RESET: tl.constexpr):
    """One step's dL/dthreshold in float64: through the spike (``g_s``, dL/du through the spike), and
    through a subtraction reset (``g_reset``, dL/d(membrane after reset)) where the neuron fired."""
    g = g_s
    if RESET == _SUBTRACTION:
        g = g_s + tl.where(fired, g_reset, 0.0)
    return -g.to(tl.float64)


@triton.jit
def _lif_backward_kernel(
    g_spike, slope, g_mems, spikes, mems, mem0, recurrent, decay, g_current, g_mem0, g_spk0, g_decay,
    g_threshold, steps, n_neurons, RESET: tl.constexpr, HAS_G_MEMS: tl.constexpr, NEED_PARAMS: tl.constexpr,
    RECURRENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``g_spike``: dL/du through the spike alone, or with ``RECURRENT`` dL/ds from outside and ``slope``
    the surrogate derivative; ``g_mems`` is read only if ``HAS_G_MEMS``."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_neurons
    d = tl.load(decay + offs, mask=mask, other=0.0)
    v0 = tl.load(mem0 + b * n_neurons + offs, mask=mask, other=0.0)
    carry = tl.zeros_like(d)  # dL/dv[t] through v[t+1]
    g_rec = tl.zeros_like(d)  # dL/ds[t] through I[t+1]
    acc_decay = tl.zeros([BLOCK], tl.float64)
    acc_threshold = tl.zeros([BLOCK], tl.float64)
    row = (b * steps + steps - 1) * n_neurons
    for i in range(steps):
        at = row + offs
        g_s = _spike_grad(g_spike, slope, at, mask, g_rec, RECURRENT)
        g_mem = carry
        if HAS_G_MEMS:
            g_mem = tl.load(g_mems + at, mask=mask, other=0.0) + carry
        fired = tl.load(spikes + at, mask=mask, other=0.0) != 0
        if RESET == _ZERO:
            g_u = g_s + tl.where(fired, 0.0, g_mem)
        else:
            g_u = g_s + g_mem
        tl.store(g_current + at, g_u, mask=mask)
        carry = g_u * d
        if NEED_PARAMS:
            later = i < steps - 1  # t > 0: v[t-1] is a stored membrane, else the initial one
            prev = tl.where(later, tl.load(mems + at - n_neurons, mask=mask & later, other=0.0), v0)
            acc_decay += (g_u * prev).to(tl.float64)
            acc_threshold += _threshold_grad(g_s, g_mem, fired, RESET)
        g_rec = _recurrent_grad(g_current + row, recurrent, offs, mask, n_neurons, g_rec, RECURRENT)
        row -= n_neurons
    tl.store(g_mem0 + b * n_neurons + offs, carry, mask=mask)
    if RECURRENT:
        tl.store(g_spk0 + b * n_neurons + offs, g_rec, mask=mask)
    if NEED_PARAMS:
        tl.store(g_decay + b * n_neurons + offs, acc_decay, mask=mask)
        tl.store(g_threshold + b * n_neurons + offs, acc_threshold, mask=mask)


@triton.jit
def _leak_forward_kernel(
    current, mem0, spk0, recurrent, vleak, vt, scale, spikes, mems, pre, flags, steps, n_neurons,
    RESET: tl.constexpr, RECURRENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``vt`` and ``scale`` point to one value each, of the dtype (a float argument would be float32 in
    Triton, too narrow for float64 runs)."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_neurons
    vt = tl.load(vt)
    scale = tl.load(scale)
    leak = tl.load(vleak + offs, mask=mask, other=0.0)
    v = tl.load(mem0 + b * n_neurons + offs, mask=mask, other=0.0)
    row = b * steps * n_neurons
    prev = spk0 + b * n_neurons
    for _ in range(steps):
        at = row + offs
        leaked = v - leak
        leak_passes = leaked > 0
        i_t = _input(current, at, mask, prev, recurrent, offs, n_neurons, RECURRENT)
        u = tl.where(leak_passes, leaked, 0.0) + i_t * scale
        pre_passes = u > 0
        u = tl.where(pre_passes, u, 0.0)
        fired, v = _fire_and_store(u, vt, pre, spikes, mems, at, mask, RESET, True)
        flag = (
            fired.to(tl.uint8) * _FIRED
            | (v > 0).to(tl.uint8) * _POST_PASSES
            | pre_passes.to(tl.uint8) * _PRE_PASSES
            | leak_passes.to(tl.uint8) * _LEAKED_PASSES
        )
        tl.store(flags + at, flag.to(tl.uint8), mask=mask)
        prev = spikes + row
        row += n_neurons


@triton.jit
def _leak_backward_kernel(
    g_spike, slope, g_mems, flags, recurrent, scale, clamp_grad, g_current, g_mem0, g_spk0, g_vleak, g_vt,
    steps, n_neurons, RESET: tl.constexpr, HAS_G_MEMS: tl.constexpr, NEED_PARAMS: tl.constexpr,
    RECURRENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """A gradient passes a ``max(., 0)`` where its output is > 0 and is scaled by ``clamp_grad`` where it
    clamps; a zero reset passes nothing. ``g_vt`` collects per neuron, the wrapper sums them. ``g_spike``
    and ``slope`` as for ``_lif_backward_kernel``."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_neurons
    scale = tl.load(scale)
    clamp_grad = tl.load(clamp_grad)
    carry = tl.zeros([BLOCK], scale.dtype)
    g_rec = tl.zeros([BLOCK], scale.dtype)
    acc_vleak = tl.zeros([BLOCK], tl.float64)
    acc_vt = tl.zeros([BLOCK], tl.float64)
    row = (b * steps + steps - 1) * n_neurons
    for _ in range(steps):
        at = row + offs
        flag = tl.load(flags + at, mask=mask, other=0)
        g_s = _spike_grad(g_spike, slope, at, mask, g_rec, RECURRENT)
        g_mem = carry
        if HAS_G_MEMS:
            g_mem = tl.load(g_mems + at, mask=mask, other=0.0) + carry
        g_post = tl.where((flag & _POST_PASSES) != 0, g_mem, g_mem * clamp_grad)
        if RESET == _ZERO:
            g_post = tl.where((flag & _FIRED) != 0, 0.0, g_post)
        g_in = g_s + g_post
        g_in = tl.where((flag & _PRE_PASSES) != 0, g_in, g_in * clamp_grad)
        tl.store(g_current + at, g_in * scale, mask=mask)
        carry = tl.where((flag & _LEAKED_PASSES) != 0, g_in, g_in * clamp_grad)
        if NEED_PARAMS:
            acc_vleak -= carry.to(tl.float64)
            acc_vt += _threshold_grad(g_s, g_post, (flag & _FIRED) != 0, RESET)
        g_rec = _recurrent_grad(g_current + row, recurrent, offs, mask, n_neurons, g_rec, RECURRENT)
        row -= n_neurons
    tl.store(g_mem0 + b * n_neurons + offs, carry, mask=mask)
    if RECURRENT:
        tl.store(g_spk0 + b * n_neurons + offs, g_rec, mask=mask)
    if NEED_PARAMS:
        tl.store(g_vleak + b * n_neurons + offs, acc_vleak, mask=mask)
        tl.store(g_vt + b * n_neurons + offs, acc_vt, mask=mask)


INTERPRETED = not isinstance(_lif_forward_kernel, triton.JITFunction)
NAME = "Triton interpreter" if INTERPRETED else "triton"


# ---------------------------------------------------------------------------------------------------------
# Launchers: the contract of ``cpu.py``
# ---------------------------------------------------------------------------------------------------------
def _launch(kernel, shape, *args, RECURRENT: bool, **constexprs):
    """Run ``kernel`` over ``[B, T, N] = shape``: programs ``(B, ceil(N / BLOCK))``, one per batch row when
    ``RECURRENT``, on the device of the tensors (Triton launches on the current CUDA device, which need not
    be theirs)."""
    batch, steps, n_neurons = shape
    if batch * n_neurons == 0:
        return
    block = max(32, triton.next_power_of_2(n_neurons))
    block = block if RECURRENT else min(_MAX_BLOCK, block)
    device = args[0].device
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        kernel[(batch, triton.cdiv(n_neurons, block))](
            *args, steps, n_neurons, **constexprs, RECURRENT=RECURRENT, BLOCK=block,
            num_warps=min(block // 32, _MAX_WARPS), enable_fp_fusion=False,
        )  # fmt: skip


def _c(*tensors):
    return [t.detach().contiguous() for t in tensors]


def _partials(like: torch.Tensor, need_params: bool):
    """Two ``[B, N]`` float64 buffers for the per-program parameter-gradient sums, or stand-ins never
    written (Triton needs a pointer either way)."""
    batch, _, n_neurons = like.shape
    if need_params:
        return like.new_empty(2, batch, n_neurons, dtype=torch.float64)
    return like.new_empty(2, 1, dtype=torch.float64)


def _recurrence(like: torch.Tensor, recurrent, other):
    """``recurrent`` and a ``[B, N]`` companion (the initial spikes, or the slope) as the kernels take them;
    a feed-forward layer's stand-ins (``like``) are never read."""
    if recurrent is None:
        return like, like
    return _c(recurrent, other)


def lif_forward(current, mem0, decay, threshold, reset, recurrent=None, spk0=None):
    """``(spikes, membranes after reset, membranes before reset)``, each ``[B, T, N]``; ``recurrent`` and
    ``spk0`` as in ``cpu.py``."""
    current, mem0, decay, threshold = _c(current, mem0, decay, threshold)
    recurrent_c, spk0 = _recurrence(current, recurrent, spk0)
    spikes, mems, pre = (torch.empty_like(current) for _ in range(3))
    _launch(
        _lif_forward_kernel, current.shape, current, mem0, spk0, recurrent_c, decay, threshold, spikes, mems,
        pre, RESET=codes.RESET_CODES[reset], RECURRENT=recurrent is not None,
    )  # fmt: skip
    return spikes, mems, pre


def lif_backward(g_spike, g_mems, spikes, mems, mem0, decay, reset, need_params, recurrent=None, slope=None):
    """``(dL/dcurrent, dL/dmem0, dL/ddecay [N], dL/dthreshold [N], dL/dspk0)`` as in ``cpu.py``."""
    g_spike, spikes, mems, mem0, decay = _c(g_spike, spikes, mems, mem0, decay)
    g_mems_c = g_spike if g_mems is None else g_mems.detach().contiguous()
    recurrent_c, slope = _recurrence(g_spike, recurrent, slope)
    g_current, g_mem0, g_spk0 = torch.empty_like(g_spike), torch.empty_like(mem0), torch.empty_like(mem0)
    acc = _partials(g_spike, need_params)
    _launch(
        _lif_backward_kernel, g_spike.shape, g_spike, slope, g_mems_c, spikes, mems, mem0, recurrent_c, decay,
        g_current, g_mem0, g_spk0, acc[0], acc[1], RESET=codes.RESET_CODES[reset],
        HAS_G_MEMS=g_mems is not None, NEED_PARAMS=need_params, RECURRENT=recurrent is not None,
    )  # fmt: skip
    g_spk0 = None if recurrent is None else g_spk0
    if not need_params:
        return g_current, g_mem0, None, None, g_spk0
    g_decay, g_threshold = acc.sum(1).to(g_spike.dtype)
    return g_current, g_mem0, g_decay, g_threshold, g_spk0


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a one-element tensor of ``like``'s dtype and device: torch rounds a Python scale to the
    tensor's dtype before multiplying, and so does this."""
    return torch.full((1,), value, dtype=like.dtype, device=like.device)


def leak_forward(current, mem0, vleak, vt, scale, reset, recurrent=None, spk0=None):
    """``(spikes, membranes after reset and clamp, membranes before reset, flags)``, each ``[B, T, N]``.

    ``vt`` is a 0-d tensor; ``scale`` multiplies the input (volts per unit of input), the recurrent part
    included; ``recurrent`` and ``spk0`` as in ``cpu.py``."""
    current, mem0, vleak, vt = _c(current, mem0, vleak, vt)
    recurrent_c, spk0 = _recurrence(current, recurrent, spk0)
    spikes, mems, pre = (torch.empty_like(current) for _ in range(3))
    flags = torch.empty(current.shape, dtype=torch.uint8, device=current.device)
    _launch(
        _leak_forward_kernel, current.shape, current, mem0, spk0, recurrent_c, vleak, vt,
        _scalar(scale, current), spikes, mems, pre, flags, RESET=codes.RESET_CODES[reset],
        RECURRENT=recurrent is not None,
    )  # fmt: skip
    return spikes, mems, pre, flags


def leak_backward(
    g_spike, g_mems, flags, scale, clamp_grad, reset, need_params, recurrent=None, slope=None
):  # fmt: skip
    """``(dL/dcurrent, dL/dmem0, dL/dvleak [N], dL/dvt [], dL/dspk0)`` as in ``cpu.py``."""
    g_spike, flags = _c(g_spike, flags)
    g_mems_c = g_spike if g_mems is None else g_mems.detach().contiguous()
    recurrent_c, slope = _recurrence(g_spike, recurrent, slope)
    batch, _, n_neurons = g_spike.shape
    g_current = torch.empty_like(g_spike)
    g_mem0, g_spk0 = (g_spike.new_empty(batch, n_neurons) for _ in range(2))
    acc = _partials(g_spike, need_params)
    _launch(
        _leak_backward_kernel, g_spike.shape, g_spike, slope, g_mems_c, flags, recurrent_c,
        _scalar(scale, g_spike), _scalar(clamp_grad, g_spike), g_current, g_mem0, g_spk0, acc[0], acc[1],
        RESET=codes.RESET_CODES[reset], HAS_G_MEMS=g_mems is not None, NEED_PARAMS=need_params,
        RECURRENT=recurrent is not None,
    )  # fmt: skip
    g_spk0 = None if recurrent is None else g_spk0
    if not need_params:
        return g_current, g_mem0, None, None, g_spk0
    return g_current, g_mem0, acc[0].sum(0).to(g_spike.dtype), acc[1].sum().to(g_spike.dtype), g_spk0


def probe(device: torch.device) -> None:
    """Compile and run all four kernels, feed-forward and with a recurrence (a zero ``[1, 1]`` matrix), on
    a three-step sequence on ``device``; raise if any fails or the spikes are not the ones the recursion
    gives (0.6, 0.9, 1.05 against a threshold of 1)."""
    current = torch.full((1, 3, 1), 0.6, device=device)
    mem0, one = current.new_zeros(1, 1), current.new_ones(1)
    for rc in (None, mem0):
        spikes, mems, _ = lif_forward(current, mem0, 0.5 * one, one, "subtraction", rc, mem0)
        g = torch.ones_like(current)
        lif_backward(g, mems, spikes, mems, mem0, 0.5 * one, "subtraction", True, rc, g)
        _, _, _, flags = leak_forward(current, mem0, 0.1 * one, one[0], 1.0, "subtraction", rc, mem0)
        leak_backward(g, mems, flags, 1.0, 0.0, "subtraction", True, rc, g)
        if spikes.flatten().tolist() != [0.0, 0.0, 1.0]:
            raise RuntimeError(f"the probe's LIF spikes are {spikes.flatten().tolist()}, not [0, 0, 1]")
