"""Fused sequence kernels: a layer's whole time loop, forward and backward, in one compiled call.

``lif_sequence`` and ``linear_leak_sequence`` return ``(spikes, membranes, final membrane)`` exactly as
``dynamics.run_sequence`` does with the matching step function, or None when no kernel serves these
tensors, and the layer then runs that reference loop. The path taken is logged once per process and
reason. ``NWTRAIN_KERNELS=reference`` forces the reference loop.

Kernels exist for CPU tensors (numba, ``cpu.py``). A CUDA backend plugs in at ``_backend``: a module with
the four functions of ``cpu.py`` taking and returning tensors on the device.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .autograd import LIFSequence, LinearLeakSequence

log = logging.getLogger(__name__)

ENV_VAR = "NWTRAIN_KERNELS"
_DTYPES = (torch.float32, torch.float64)
_announced: set[str] = set()


def _announce(path: str) -> None:
    if path not in _announced:
        _announced.add(path)
        log.info("spiking layers, sequence mode: %s", path)


@functools.cache
def _load_cpu():
    """The numba backend, or the reason it cannot be used (its kernels compile, or load from numba's
    cache, when the module is imported)."""
    try:
        from . import cpu
    except Exception as err:  # noqa: BLE001 - any import or compile failure means "use the reference"
        return None, f"numba kernels unavailable ({type(err).__name__}: {err})"
    return cpu, None


def _backend(current: torch.Tensor, *others: torch.Tensor):
    if os.environ.get(ENV_VAR, "").lower() == "reference":
        reason = f"{ENV_VAR}=reference"
    elif current.device.type != "cpu":
        reason = f"no fused kernel for {current.device.type} tensors yet"
    elif current.dtype not in _DTYPES or any(
        t.dtype != current.dtype or t.device != current.device for t in others
    ):
        reason = "fused kernels need float32 or float64 tensors of one dtype and device"
    else:
        backend, reason = _load_cpu()
        if backend is not None:
            _announce(f"fused CPU kernel ({backend.NAME})")
            return backend
    _announce(f"reference torch loop: {reason}")
    return None


def _vector(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape == (n,) else x.expand(n)


def lif_sequence(current, mem, decay, threshold, reset: str, spike_fn):
    """``run_sequence(lif_step-with-options, mem, current, decay, threshold)`` fused, or None."""
    backend = _backend(current, mem, decay, threshold)
    if backend is None:
        return None
    n = current.shape[-1]
    spikes, mems = LIFSequence.apply(
        current, mem, _vector(decay, n), _vector(threshold, n), reset, spike_fn, backend
    )
    return spikes, mems, mems[:, -1]


def linear_leak_sequence(current, mem, vleak, vt, reset: str, spike_fn, scale: float = 1.0):
    """``run_sequence(linear_leak_step-with-options, mem, scale * current, vleak, vt)`` fused, or None;
    ``vt`` is one threshold for the layer."""
    backend = _backend(current, mem, vleak, vt)
    if backend is None:
        return None
    spikes, mems = LinearLeakSequence.apply(
        current, mem, _vector(vleak, current.shape[-1]), vt.reshape(()), scale, reset, spike_fn, backend
    )
    return spikes, mems, mems[:, -1]
