"""Fused sequence kernels: a layer's whole time loop, forward and backward, in one compiled call.

``lif_sequence`` and ``linear_leak_sequence`` return ``(spikes, membranes, final membrane)`` exactly as
``dynamics.run_sequence`` does with the matching step function, or None when no kernel serves these
tensors, and the layer then runs that reference loop. The path taken is logged once per process and
reason (logger ``nwtrain.kernels``, level INFO).

Backends, each a module with the four functions ``lif_forward``, ``lif_backward``, ``leak_forward`` and
``leak_backward`` (contract in ``cpu.py``), loaded on first use; one that fails to import or, for Triton,
to compile and run a probe leaves the reference loop in its place, with the reason logged:

* CPU tensors: numba (``cpu.py``).
* CUDA tensors: Triton (``cuda.py``).

``NWTRAIN_KERNELS`` (read at every call) chooses: unset or ``auto`` as above; ``reference`` forces the
reference loop; ``triton`` is ``auto`` on CUDA and sends CPU tensors to the Triton kernels too, provided
Triton runs its interpreter (``TRITON_INTERPRET=1`` in the environment before the Triton backend is first
loaded), which is how the Triton kernels are tested on machines without a GPU; any other value is an
error. docs/kernels.md has the details.
"""

# `# fmt: skip` below keeps a kernel's long argument lists in their groups (gradients, state, parameters,
# options, outputs) on a line each, as the numba signatures list them: one name per line hides the groups.

from __future__ import annotations

import functools
import logging
import os

import torch

from nwtrain.kernels.autograd import LIFSequence, LinearLeakSequence

log = logging.getLogger(__name__)

ENV_VAR = "NWTRAIN_KERNELS"
MODES = ("auto", "reference", "triton")
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
        from nwtrain.kernels import cpu
    except Exception as err:  # noqa: BLE001 - any import or compile failure means "use the reference"
        return None, f"numba kernels unavailable ({type(err).__name__}: {err})"
    return cpu, None


@functools.cache
def _load_triton(device: torch.device):
    """The Triton backend, or the reason it cannot be used on ``device``. Triton compiles a kernel on its
    first launch, so a tiny run of all four here turns a missing toolchain or an unsupported GPU into a
    fallback rather than an error in the middle of training."""
    try:
        from nwtrain.kernels import cuda

        if device.type == "cpu" and not cuda.INTERPRETED:
            return None, f"{ENV_VAR}=triton on CPU tensors needs Triton's interpreter (TRITON_INTERPRET=1)"
        cuda.probe(device)
    except Exception as err:  # noqa: BLE001 - as for numba
        return None, f"Triton kernels unavailable on {device} ({type(err).__name__}: {err})"
    return cuda, None


def _mode() -> str:
    mode = os.environ.get(ENV_VAR, "").lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)} (or unset), got {mode!r}")
    return mode


def _backend(current: torch.Tensor, *others: torch.Tensor):
    mode = _mode()
    device = current.device
    if mode == "reference":
        reason = f"{ENV_VAR}=reference"
    elif current.dtype not in _DTYPES or any(t.dtype != current.dtype or t.device != device for t in others):
        reason = "fused kernels need float32 or float64 tensors of one dtype and device"
    elif device.type == "cpu" and mode != "triton":
        backend, reason = _load_cpu()
        if backend is not None:
            _announce(f"fused CPU kernel ({backend.NAME})")
            return backend
    elif device.type in ("cpu", "cuda"):
        backend, reason = _load_triton(device)
        if backend is not None:
            _announce(f"fused {device.type.upper()} kernel ({backend.NAME})")
            return backend
    else:
        reason = f"no fused kernel for {device.type} tensors"
    _announce(f"reference torch loop: {reason}")
    return None


def unfused(reason: str) -> None:
    """For a layer that no backend serves: announces the reference loop (once per reason), returns None."""
    _announce(f"reference torch loop: {reason}")


def _vector(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape == (n,) else x.expand(n)


def _recurrence(recurrent, spk) -> list:
    """The tensors of the in-core recurrence that a backend must take alike, none when feed-forward."""
    return [] if recurrent is None else [recurrent, spk]


def lif_sequence(current, mem, decay, threshold, reset: str, spike_fn, recurrent=None, spk=None):
    """``run_sequence(lif_step-with-options, mem, current, decay, threshold, recurrent=recurrent,
    spk=spk)`` fused, or None."""
    backend = _backend(current, mem, decay, threshold, *_recurrence(recurrent, spk))
    if backend is None:
        return None
    n = current.shape[-1]
    spikes, mems = LIFSequence.apply(
        current, mem, _vector(decay, n), _vector(threshold, n), reset, spike_fn, backend, recurrent, spk
    )
    return spikes, mems, mems[:, -1]


def linear_leak_sequence(
    current, mem, vleak, vt, reset: str, spike_fn, scale: float = 1.0, clamp_grad: float = 0.0,
    recurrent=None, spk=None,
):  # fmt: skip
    """``run_sequence(linear_leak_step-with-options, mem, scale * current, vleak, vt, recurrent=recurrent,
    spk=spk)`` fused (the recurrent current scaled too), or None; ``vt`` is one threshold for the layer."""
    backend = _backend(current, mem, vleak, vt, *_recurrence(recurrent, spk))
    if backend is None:
        return None
    spikes, mems = LinearLeakSequence.apply(
        current, mem, _vector(vleak, current.shape[-1]), vt.reshape(()), scale, reset, spike_fn, backend,
        clamp_grad, recurrent, spk,
    )  # fmt: skip
    return spikes, mems, mems[:, -1]
