"""CPU kernels (numba): the whole time loop of a layer, forward and reverse, in compiled code.

Each kernel walks ``b`` (batch), ``t`` (time), ``n`` (neuron) with ``n`` innermost, so every array is read
in memory order. The state of one sample lives in a local row of ``N`` values and the loop bodies are
branch-free (selects, not ifs): spikes are data-dependent, a mispredicted branch per element cost more
than the arithmetic, and selects let the compiler vectorise over neurons.

The arithmetic follows ``nwtrain.core.dynamics`` operation by operation, in the tensors' dtype, so the forward
pass reproduces the reference bit for bit (no spike flips on rounding) and the gradients agree up to the
summation order of the parameter gradients, which are accumulated in float64 over batch and time.

Reset codes and the flag bits of the linear-leak kernels come from ``codes``.

In-core recurrence (``dynamics.recurrent_current``, a ``[N, N]`` ``recurrent`` matrix; an empty ``[0, 0]``
one means a feed-forward layer) makes the loop non-separable: each step first adds the rows of the
neurons that spiked in the step before, in index order, which is what the reference's float32 matrix
product does with 0/1 spikes, and the reverse loop turns each step's input gradient into the spikes'
gradient of the step before (``dL/ds[t-1] = G @ dL/dI[t]``). The surrogate derivative then cannot be
applied beforehand; the backward receives it (``slope``) and multiplies in the loop.

``_ZERO`` is a float32 literal: an integer or float64 literal would promote float32 arithmetic to float64
in numba (exact zeros either way, and float32 widens losslessly in the float64 kernels).
"""

# `# fmt: skip` below keeps a kernel's long argument lists in their groups (gradients, state, parameters,
# options, outputs) on a line each, as the numba signatures list them: one name per line hides the groups.

from __future__ import annotations

import numpy as np
import torch
from numba import njit, types

from nwtrain.kernels.codes import FIRED, LEAKED_PASSES, POST_PASSES, PRE_PASSES, RESET_CODES

NAME = "numba"
_ZERO = np.float32(0)


def _signatures(*args: str):
    """One signature per real dtype, so both compile (or load from the cache) at import, where a failure
    sends the layers to the reference path. Codes: ``3``/``2``/``1`` a C-contiguous array of that rank,
    ``r`` a scalar of the dtype, ``i`` the reset code, ``b`` a boolean, ``a`` a float64 gradient accumulator,
    ``f`` the uint8 flags of the linear-leak kernels."""
    sigs = []
    for real in (types.float32, types.float64):
        kinds = {
            "3": types.Array(real, 3, "C"),
            "2": types.Array(real, 2, "C"),
            "1": types.Array(real, 1, "C"),
            "r": real,
            "i": types.int64,
            "b": types.boolean,
            "a": types.Array(types.float64, 1, "C"),
            "f": types.Array(types.uint8, 3, "C"),
        }
        sigs.append(types.void(*(kinds[a] for a in args)))
    return sigs


@njit(cache=True, nogil=True)
def _recurrent_input(spk_prev, recurrent, r):
    """``r = spk_prev @ recurrent``, the rows added in index order; rows of silent neurons are skipped
    (adding 0 * row changes no sum), so a step costs what its spikes cost."""
    r[:] = 0
    for i in range(recurrent.shape[0]):
        s = spk_prev[i]
        if s != 0:
            for n in range(r.shape[0]):
                r[n] += s * recurrent[i, n]


@njit(cache=True, nogil=True)
def _recurrent_grad(g_input, recurrent, g_spk):
    """``g_spk = recurrent @ g_input``: the previous step's spikes' gradient through the recurrence."""
    for i in range(recurrent.shape[0]):
        acc = _ZERO * g_input[0]
        for n in range(g_input.shape[0]):
            acc += recurrent[i, n] * g_input[n]
        g_spk[i] = acc


@njit(_signatures("3", "2", "2", "2", "1", "1", "i", "3", "3", "3"), cache=True, nogil=True)
def _lif_forward(current, mem0, spk0, recurrent, decay, threshold, reset, spikes, mems, pre):
    batch, steps, n_neurons = current.shape
    rc = recurrent.shape[0] > 0
    v = np.empty_like(decay)
    r = np.zeros_like(decay)
    for b in range(batch):
        v[:] = mem0[b]
        for t in range(steps):
            if rc:
                _recurrent_input(spikes[b, t - 1] if t > 0 else spk0[b], recurrent, r)
            for n in range(n_neurons):
                u = decay[n] * v[n] + (current[b, t, n] + r[n] if rc else current[b, t, n])
                fired = u >= threshold[n]
                reset_to = u - threshold[n] if reset == 0 else (_ZERO if reset == 1 else u)
                v[n] = reset_to if fired else u
                pre[b, t, n] = u
                spikes[b, t, n] = fired
                mems[b, t, n] = v[n]


@njit(
    _signatures("3", "3", "3", "b", "3", "3", "2", "2", "1", "i", "b", "3", "2", "2", "a", "a"),
    cache=True, nogil=True,
)  # fmt: skip
def _lif_backward(
    g_spike, slope, g_mems, has_g_mems, spikes, mems, mem0, recurrent, decay, reset, need_params,
    g_current, g_mem0, g_spk0, g_decay, g_threshold,
):  # fmt: skip
    """``g_spike`` is dL/ds times the surrogate derivative, i.e. dL/du through the spike alone, for a
    feed-forward layer; for a recurrent one it is dL/ds from outside and ``slope`` the surrogate
    derivative. ``g_mems`` is read only if ``has_g_mems`` (the membranes reached the loss)."""
    batch, steps, n_neurons = g_spike.shape
    rc = recurrent.shape[0] > 0
    carry = np.empty_like(decay)  # dL/dv[t] through v[t+1]
    g_rec = np.zeros_like(decay)  # dL/ds[t] through I[t+1]
    for b in range(batch):
        carry[:] = 0
        g_rec[:] = 0
        for t in range(steps - 1, -1, -1):
            for n in range(n_neurons):
                g_mem = g_mems[b, t, n] + carry[n] if has_g_mems else carry[n]
                fired = spikes[b, t, n] != 0
                g_s = (g_spike[b, t, n] + g_rec[n]) * slope[b, t, n] if rc else g_spike[b, t, n]
                g_u = g_s + (_ZERO if reset == 1 and fired else g_mem)
                g_current[b, t, n] = g_u
                carry[n] = g_u * decay[n]
                if need_params:
                    g_decay[n] += g_u * (mems[b, t - 1, n] if t > 0 else mem0[b, n])
                    g_threshold[n] -= g_s + (g_mem if reset == 0 and fired else _ZERO)
            if rc:
                _recurrent_grad(g_current[b, t], recurrent, g_rec)
        g_mem0[b, :] = carry
        if rc:
            g_spk0[b, :] = g_rec


@njit(_signatures("3", "2", "2", "2", "1", "r", "r", "i", "3", "3", "3", "f"), cache=True, nogil=True)
def _leak_forward(current, mem0, spk0, recurrent, vleak, vt, scale, reset, spikes, mems, pre, flags):
    batch, steps, n_neurons = current.shape
    rc = recurrent.shape[0] > 0
    v = np.empty_like(vleak)
    r = np.zeros_like(vleak)
    for b in range(batch):
        v[:] = mem0[b]
        for t in range(steps):
            if rc:
                _recurrent_input(spikes[b, t - 1] if t > 0 else spk0[b], recurrent, r)
            for n in range(n_neurons):
                leaked = v[n] - vleak[n]
                leak_passes = leaked > 0
                i_n = current[b, t, n] + r[n] if rc else current[b, t, n]
                u = (leaked if leak_passes else _ZERO) + i_n * scale
                pre_passes = u > 0
                u = u if pre_passes else _ZERO
                fired = u >= vt
                above = u - vt
                reset_to = (above if above > 0 else _ZERO) if reset == 0 else (_ZERO if reset == 1 else u)
                v[n] = reset_to if fired else u
                pre[b, t, n] = u
                spikes[b, t, n] = fired
                mems[b, t, n] = v[n]
                flags[b, t, n] = (
                    FIRED * fired
                    | POST_PASSES * (v[n] > 0)
                    | PRE_PASSES * pre_passes
                    | LEAKED_PASSES * leak_passes
                )


@njit(
    _signatures("3", "3", "3", "b", "f", "2", "r", "r", "i", "b", "3", "2", "2", "a", "a"),
    cache=True, nogil=True,
)  # fmt: skip
def _leak_backward(
    g_spike, slope, g_mems, has_g_mems, flags, recurrent, scale, clamp_grad, reset, need_params,
    g_current, g_mem0, g_spk0, g_vleak, g_vt,
):  # fmt: skip
    """Same recursion through the three clamps: a gradient passes a ``max(., 0)`` where its output is > 0
    and is scaled by ``clamp_grad`` where it clamps; a zero reset passes nothing. ``g_vt`` collects per
    neuron. ``g_spike`` and ``slope`` as for ``_lif_backward``."""
    batch, steps, n_neurons = g_spike.shape
    rc = recurrent.shape[0] > 0
    carry = np.empty(n_neurons, g_spike.dtype)
    g_rec = np.zeros(n_neurons, g_spike.dtype)
    for b in range(batch):
        carry[:] = 0
        g_rec[:] = 0
        for t in range(steps - 1, -1, -1):
            for n in range(n_neurons):
                flag = flags[b, t, n]
                g_mem = g_mems[b, t, n] + carry[n] if has_g_mems else carry[n]
                zero_reset = reset == 1 and flag & FIRED
                g_post = _ZERO if zero_reset else (g_mem if flag & POST_PASSES else g_mem * clamp_grad)
                g_s = (g_spike[b, t, n] + g_rec[n]) * slope[b, t, n] if rc else g_spike[b, t, n]
                g_in = g_s + g_post
                g_in = g_in if flag & PRE_PASSES else g_in * clamp_grad
                g_current[b, t, n] = g_in * scale
                carry[n] = g_in if flag & LEAKED_PASSES else g_in * clamp_grad
                if need_params:
                    g_vleak[n] -= carry[n]
                    g_vt[n] -= g_s + (g_post if reset == 0 and flag & FIRED else _ZERO)
            if rc:
                _recurrent_grad(g_current[b, t], recurrent, g_rec)
        g_mem0[b, :] = carry
        if rc:
            g_spk0[b, :] = g_rec


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _like(t: torch.Tensor, count: int):
    return [torch.empty(t.shape, dtype=t.dtype) for _ in range(count)]


def _optional(g_mems, g_spike: np.ndarray):
    """``(array, present)``: a None gradient is passed as any array of the right type, never read."""
    return (g_spike, False) if g_mems is None else (_np(g_mems), True)


def _vectors(accumulators, need_params: bool, dtype):
    return [torch.from_numpy(a).to(dtype) if need_params else None for a in accumulators]


def _matrix(like: torch.Tensor, recurrent) -> np.ndarray:
    """``recurrent`` as the kernels take it; a feed-forward layer's stand-in is empty."""
    return np.empty((0, 0), _np(like).dtype) if recurrent is None else _np(recurrent)


def _recurrence(like: torch.Tensor, recurrent, spk0):
    """``(spk0, recurrent)`` as the kernels take them (``spk0`` an empty stand-in when feed-forward)."""
    spk0 = np.empty((like.shape[0], 0), _np(like).dtype) if recurrent is None else _np(spk0)
    return spk0, _matrix(like, recurrent)


def _spk0_grad(g_mem0: torch.Tensor, recurrent):
    """The buffer the backward kernels write ``dL/dspk0`` into; a stand-in never written when feed-forward."""
    return g_mem0[:, :0] if recurrent is None else torch.empty_like(g_mem0)


def lif_forward(current, mem0, decay, threshold, reset, recurrent=None, spk0=None):
    """``(spikes, membranes after reset, membranes before reset)``, each ``[B, T, N]``. With ``recurrent``
    (``G [N, N]``) each step adds the previous step's spikes ``@ G`` to its input, ``spk0 [B, N]`` before
    the first."""
    spikes, mems, pre = _like(current, 3)
    _lif_forward(
        _np(current), _np(mem0), *_recurrence(current, recurrent, spk0), _np(decay), _np(threshold),
        RESET_CODES[reset], spikes.numpy(), mems.numpy(), pre.numpy(),
    )  # fmt: skip
    return spikes, mems, pre


def lif_backward(g_spike, g_mems, spikes, mems, mem0, decay, reset, need_params, recurrent=None, slope=None):
    """``(dL/dcurrent, dL/dmem0, dL/ddecay [N], dL/dthreshold [N], dL/dspk0)``, the parameters' None unless
    ``need_params``, the last None unless ``recurrent``; ``g_mems`` may be None. Feed-forward: ``g_spike``
    is dL/du through the spike; recurrent: dL/ds, and ``slope`` the surrogate derivative at each step."""
    g_spike_np = _np(g_spike)
    (g_current,), (g_mem0,) = _like(g_spike, 1), _like(mem0, 1)
    g_spk0 = _spk0_grad(g_mem0, recurrent)
    acc = np.zeros((2, decay.shape[0]))
    _lif_backward(
        g_spike_np, g_spike_np if slope is None else _np(slope), *_optional(g_mems, g_spike_np),
        _np(spikes), _np(mems), _np(mem0), _matrix(g_spike, recurrent), _np(decay),
        RESET_CODES[reset], need_params, g_current.numpy(), g_mem0.numpy(), g_spk0.numpy(), acc[0], acc[1],
    )  # fmt: skip
    g_spk0 = None if recurrent is None else g_spk0
    return g_current, g_mem0, *_vectors(acc, need_params, g_spike.dtype), g_spk0


def leak_forward(current, mem0, vleak, vt, scale, reset, recurrent=None, spk0=None):
    """``(spikes, membranes after reset and clamp, membranes before reset, flags)``, each ``[B, T, N]``.

    ``vt`` is a 0-d tensor; ``scale`` multiplies the input (volts per unit of input), the recurrent part
    included; ``recurrent`` and ``spk0`` as for ``lif_forward``."""
    spikes, mems, pre = _like(current, 3)
    flags = torch.empty(current.shape, dtype=torch.uint8)
    real = _np(vt).dtype.type
    _leak_forward(
        _np(current), _np(mem0), *_recurrence(current, recurrent, spk0), _np(vleak), real(vt.item()),
        real(scale), RESET_CODES[reset], spikes.numpy(), mems.numpy(), pre.numpy(), flags.numpy(),
    )  # fmt: skip
    return spikes, mems, pre, flags


def leak_backward(
    g_spike, g_mems, flags, scale, clamp_grad, reset, need_params, recurrent=None, slope=None
):  # fmt: skip
    """``(dL/dcurrent, dL/dmem0, dL/dvleak [N], dL/dvt [], dL/dspk0)`` as for ``lif_backward``;
    ``clamp_grad`` is the backward slope of the clamps where they clamp."""
    batch, _, n_neurons = g_spike.shape
    g_spike_np = _np(g_spike)
    (g_current,), g_mem0 = _like(g_spike, 1), g_spike.new_empty(batch, n_neurons)
    g_spk0 = _spk0_grad(g_mem0, recurrent)
    acc = np.zeros((2, n_neurons))
    _leak_backward(
        g_spike_np, g_spike_np if slope is None else _np(slope), *_optional(g_mems, g_spike_np), _np(flags),
        _matrix(g_spike, recurrent), g_spike_np.dtype.type(scale),
        g_spike_np.dtype.type(clamp_grad), RESET_CODES[reset], need_params, g_current.numpy(),
        g_mem0.numpy(), g_spk0.numpy(), acc[0], acc[1],
    )  # fmt: skip
    g_vleak, g_vt = _vectors(acc, need_params, g_spike.dtype)
    g_spk0 = None if recurrent is None else g_spk0
    return g_current, g_mem0, g_vleak, None if g_vt is None else g_vt.sum(), g_spk0
