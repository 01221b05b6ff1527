"""The fused sequence kernels equal the reference time loop (``dynamics.run_sequence``), forward and
backward, for every layer type and reset, with mismatch and quantisation on; their backward is the true
derivative of their forward (gradcheck in float64); the reference runs where no kernel applies.

The equality tests run for each backend (``backend`` fixture): numba on CPU tensors, and Triton where it can
run in this process: on CUDA tensors, or on CPU tensors when the process started with ``TRITON_INTERPRET=1``
(``test_kernels_triton.py`` starts such a process on machines without a GPU)."""

import importlib.util
import logging
import os
import warnings
from typing import NamedTuple

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from nwtrain import kernels
from nwtrain.core.quant import TernaryQuantizer
from nwtrain.kernels import cpu
from nwtrain.kernels.autograd import LIFSequence, LinearLeakSequence
from nwtrain.layers import (
    H1v1Frontend,
    H1v1Layer,
    H1v1Synapse,
    H1v2Layer,
    H1v2Synapse,
    LIFLayer,
    LIFSynapse,
    prepare_net,
    spiking_layers,
)
from nwtrain.models.kws import KWSNet
from nwtrain.surrogate import fast_sigmoid, triangle

KINDS = ["lif-subtraction", "lif-zero", "lif-none", "h1v1", "h1v2", "h1v1-clamp_grad", "h1v2-clamp_grad"]
# The backward slope of the membrane clamps of the "-clamp_grad" kinds (0 elsewhere: the exact derivative).
CLAMP_GRAD = 0.3

# Triton's interpreter (numpy on CPU tensors) replaces its compiler in a process started with this set.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


class Backend(NamedTuple):
    path: str  # NWTRAIN_KERNELS
    device: str

    @property
    def interpreted(self) -> bool:
        """Triton's interpreter runs each kernel step as numpy calls: the full gradcheck (a backward per
        output element) takes 30 to 50 s a test there, so it checks random projections of the Jacobian
        instead (``gradcheck(fast_mode=True)``)."""
        return self.path == "triton" and INTERPRETED

    def module(self):
        """The kernel module ``kernels`` picks for this backend's tensors (asserting it picks one)."""
        x = torch.zeros(1, 1, 1, dtype=torch.float64, device=self.device)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(kernels.ENV_VAR, self.path)
            module = kernels._backend(x)
        assert module is not None, f"no kernel for {self}"
        return module


NUMBA = Backend("auto", "cpu")
TRITON = Backend("triton", "cpu" if INTERPRETED else "cuda")
HAS_TRITON = importlib.util.find_spec("triton") is not None  # torch's CUDA builds bring it on Linux
needs_triton = pytest.mark.skipif(
    not (HAS_TRITON and (INTERPRETED or torch.cuda.is_available())),
    reason="no Triton or no GPU: test_kernels_triton.py runs these under Triton's interpreter",
)


@pytest.fixture(params=[NUMBA, pytest.param(TRITON, marks=needs_triton)], ids=["numba", "triton"])
def backend(request) -> Backend:
    return request.param


def build(kind):
    torch.manual_seed(1)
    if kind.startswith("lif"):
        reset = kind.split("-")[1]
        lif = dict(dt=1e-3, reset_mechanism=reset, learn_taus=True, learn_thresholds=True)
        return nn.ModuleList(
            [
                LIFSynapse(6, 10, quantizer=TernaryQuantizer(0.7), use_bias=True),
                LIFLayer(10, taus=torch.linspace(4e-3, 30e-3, 10), thresholds=0.3, **lif),
                LIFSynapse(10, 5, use_bias=False),
                LIFLayer(
                    5, taus=12e-3, thresholds=torch.linspace(0.2, 0.5, 5), spike_grad=triangle(0.3), **lif
                ),
            ]
        )
    chip, _, option = kind.partition("-")
    clamp = {"clamp_grad": CLAMP_GRAD if option == "clamp_grad" else 0.0}
    if chip == "h1v1":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            frontend = H1v1Frontend(
                6, quantization_bit=5, stddev=0.02, init=lambda w: nn.init.uniform_(w, 0.2, 0.9)
            )
        return nn.ModuleList(
            [
                frontend,
                H1v1Layer(6, taus=10e-3, dt=8e-3, ileak_mismatch=True, **clamp),
                H1v1Synapse(6, 12, quantization_bit=5, stddev=0.02),
                H1v1Layer(12, taus=64e-3, dt=8e-3, ileak_mismatch=True, **clamp),
            ]
        )
    return nn.ModuleList(
        [
            H1v2Synapse(6, 10, quantization_bit=5, init=lambda w: nn.init.uniform_(w, -0.5, 1.66)),
            H1v2Layer(10, taus=20e-3, dt=1e-3, ileak_mismatch=True, **clamp),
        ]
    )


def inputs(kind, dtype):
    g = torch.Generator().manual_seed(2)
    if kind.startswith("h1v1"):
        return 3 * torch.rand(4, 50, 6, generator=g, dtype=dtype)  # filterbank envelopes
    return (torch.rand(4, 50, 6, generator=g) < 0.4).to(dtype)


def run(net, x, path, monkeypatch, loss_on=("spikes", "membranes")):
    """Spikes and membranes of every layer, and the gradients of a loss on them (``loss_on``) with respect
    to the parameters, the input and each layer's initial membrane; ``net`` and ``x`` on one device."""
    monkeypatch.setenv(kernels.ENV_VAR, path)
    prepare_net(net, generator=torch.Generator().manual_seed(5))
    net.zero_grad()
    x = x.clone().requires_grad_(True)
    mem0s = []
    for layer in spiking_layers(net):
        g = torch.Generator().manual_seed(layer.n_neurons)
        mem0 = 0.2 * torch.rand(x.shape[0], layer.n_neurons, generator=g, dtype=x.dtype)
        layer.mem = mem0.to(x.device).requires_grad_()
        mem0s.append(layer.mem)
    h, outs = x, []
    for m in net:
        h = m(h)
        if isinstance(h, tuple):
            outs.extend(h)
            h = h[0]
    loss = 0.0
    if "spikes" in loss_on:
        loss = loss + sum((o * ramp(o)).sum() for o in outs[0::2])
    if "membranes" in loss_on:
        loss = loss + sum(0.1 * o.pow(2).sum() for o in outs[1::2])
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()] + [x.grad] + [m.grad for m in mem0s]
    return [o.detach() for o in outs], grads


def ramp(o):
    """Per-neuron loss weights, so that no two neurons' gradients are alike."""
    return torch.linspace(0.5, 1.5, o.shape[-1], dtype=o.dtype, device=o.device)


def assert_fused_equals_reference(net, x, backend, monkeypatch, exact_forward=True, **kw):
    """Forward is bit-identical (same operations in the same order, so no spike flips on rounding);
    gradients agree to 1e-5 in float32, where only the order of the parameter-gradient sums differs.
    ``exact_forward=False``: the membranes too agree to that tolerance only, the spikes still exactly (a
    flipped spike is off by 1)."""
    net, x = net.to(backend.device), x.to(backend.device)
    ref_out, ref_grads = run(net, x, "reference", monkeypatch, **kw)
    out, grads = run(net, x, backend.path, monkeypatch, **kw)
    assert all(s.sum() > 0 for s in ref_out[0::2]), "every layer must spike"
    tol = dict(atol=1e-5, rtol=1e-5) if x.dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, **(dict(atol=0, rtol=0) if exact_forward else tol))
    for a, b in zip(grads, ref_grads):
        assert torch.isfinite(a).all() and b.abs().sum() > 0
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_equals_reference(kind, dtype, backend, monkeypatch):
    assert_fused_equals_reference(build(kind).to(dtype), inputs(kind, dtype), backend, monkeypatch)


@pytest.mark.parametrize("loss_on", ["spikes", "membranes"])
@pytest.mark.parametrize("kind", ["lif-subtraction", "h1v1"])
def test_fused_equals_reference_when_one_output_is_unused(kind, loss_on, backend, monkeypatch):
    x = inputs(kind, torch.float32)
    assert_fused_equals_reference(build(kind), x, backend, monkeypatch, loss_on=(loss_on,))


def test_fused_equals_reference_for_wide_layers(backend, monkeypatch):
    """More neurons than one Triton program holds (128): several programs per batch row, the last one
    partly masked."""
    torch.manual_seed(1)
    net = nn.ModuleList(
        [
            LIFSynapse(6, 200, init=lambda w: nn.init.uniform_(w, -0.2, 0.6)),
            LIFLayer(200, taus=20e-3, thresholds=0.5, learn_taus=True, learn_thresholds=True),
            H1v2Synapse(200, 130, quantization_bit=5, init=lambda w: nn.init.uniform_(w, -0.5, 1.66)),
            H1v2Layer(130, taus=20e-3, dt=1e-3, ileak_mismatch=True),
        ]
    )
    assert_fused_equals_reference(net, inputs("lif", torch.float32), backend, monkeypatch)


def test_tutorial4_network_equals_reference(backend, monkeypatch):
    """Tutorial 4's H1v1 network as the mismatch-aware experiment trains it (5-bit QAT, synaptic offsets of
    stddev 0.02, leak mismatch), at its sizes but on shorter clips."""
    torch.manual_seed(3)
    # Dense weights over the chip's whole range: the output layer fires within the 40 steps.
    net = KWSNet(
        13, 2, chip="h1v1", quantization_bit=5, stddev=0.02, ileak_mismatch=True, dense_init_bound=0.9
    )
    # KWSNet.forward's chain (input gain 1), as a list so that ``run`` sees every layer's outputs
    chain = nn.ModuleList(
        [net.frontend, net.frontend_layer, net.syn_hidden, net.hidden, net.syn_out, net.out]
    )
    x = 3 * torch.rand(3, 40, 13, generator=torch.Generator().manual_seed(4))
    assert_fused_equals_reference(chain, x, backend, monkeypatch)


@pytest.mark.parametrize("kind", KINDS)
def test_state_carries_across_calls_with_gradients(kind, backend, monkeypatch):
    """Two half-sequences after one prepare_net: the second starts from the first's final membrane, and
    gradients flow back through it."""
    net = build(kind).to(backend.device)
    x = inputs(kind, torch.float32).to(backend.device)
    results = []
    for path in ("reference", backend.path):
        monkeypatch.setenv(kernels.ENV_VAR, path)
        prepare_net(net, generator=torch.Generator().manual_seed(5))
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        spikes = []
        for part in (xi[:, :23], xi[:, 23:]):
            h = part
            for m in net:
                h = m(h)
                h = h[0] if isinstance(h, tuple) else h
            spikes.append(h)
        out = torch.cat(spikes, 1)
        (out * ramp(out)).sum().backward()
        results.append([out.detach(), xi.grad] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_double_backward_is_refused(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    x = torch.rand(2, 5, 3, requires_grad=True)
    spk, _ = prepare_net(H1v2Layer(3))(x)
    (g,) = torch.autograd.grad(spk.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        g.sum().backward()


def test_fused_path_runs_by_default(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    layer = prepare_net(H1v1Layer(3))
    spk, _ = layer(torch.rand(2, 5, 3))
    assert spk.grad_fn is None  # no parameter needs a gradient: nothing recorded either way
    spk, _ = prepare_net(H1v1Layer(3))(torch.rand(2, 5, 3, requires_grad=True))
    assert type(spk.grad_fn).__name__ == "LinearLeakSequenceBackward"


# -------------------------------------------------------------------------------------------------------
# gradcheck: inputs chosen so that no pre-reset membrane lies within 1e-3 of the threshold and no clamp
# input within 1e-3 of 0, where the functions are smooth; the surrogate then plays no part in the
# membrane output, which is what finite differences can check.
# -------------------------------------------------------------------------------------------------------
MARGIN = 1e-3


def lif_args(seed, device):
    g = torch.Generator().manual_seed(seed)
    current = 0.6 * torch.rand(2, 20, 4, generator=g, dtype=torch.float64)
    mem0 = 0.3 * torch.rand(2, 4, generator=g, dtype=torch.float64)
    decay = torch.tensor([0.5, 0.7, 0.85, 0.95], dtype=torch.float64)
    threshold = torch.tensor([0.6, 0.8, 1.0, 1.2], dtype=torch.float64)
    return [t.to(device).requires_grad_() for t in (current, mem0, decay, threshold)]


@pytest.mark.parametrize("reset", ["subtraction", "zero", "none"])
def test_gradcheck_lif(reset, backend):
    current, mem0, decay, threshold = lif_args(seed=0, device=backend.device)
    module = backend.module()
    spikes, _, pre = module.lif_forward(current, mem0, decay, threshold, reset)
    assert spikes.sum() > 5 and ((pre - threshold).abs() > MARGIN).all()

    def mems(*args):
        return LIFSequence.apply(*args, reset, fast_sigmoid(25.0), module)[1]

    assert gradcheck(mems, (current, mem0, decay, threshold), fast_mode=backend.interpreted)


def leak_args(seed, scale, device):
    g = torch.Generator().manual_seed(seed)
    current = (0.25 * torch.rand(2, 20, 4, generator=g, dtype=torch.float64) - 0.05) / scale
    mem0 = 0.1 * torch.rand(2, 4, generator=g, dtype=torch.float64)
    vleak = torch.tensor([0.01, 0.03, 0.05, 0.08], dtype=torch.float64)
    vt = torch.tensor(0.3, dtype=torch.float64)
    return [t.to(device).requires_grad_() for t in (current, mem0, vleak, vt)]


@pytest.mark.parametrize("reset,scale", [("zero", 0.01), ("subtraction", 1.0)])
def test_gradcheck_linear_leak(reset, scale, backend):
    current, mem0, vleak, vt = leak_args(seed=3, scale=scale, device=backend.device)
    module = backend.module()
    spikes, mems, pre, _ = module.leak_forward(current, mem0, vleak, vt, scale, reset)
    prev = torch.cat([mem0[:, None], mems[:, :-1]], 1)
    leaked = prev - vleak
    clamp_inputs = [leaked[prev > 0], pre[pre != 0], (leaked.clamp_min(0) + scale * current)[pre == 0]]
    assert spikes.sum() > 5 and (pre == 0).any() and ((pre - vt).abs() > MARGIN).all()
    assert all((c.abs() > MARGIN).all() for c in clamp_inputs)

    def membranes(*args):
        return LinearLeakSequence.apply(*args, scale, reset, fast_sigmoid(25.0), module)[1]

    assert gradcheck(membranes, (current, mem0, vleak, vt), fast_mode=backend.interpreted)


# -------------------------------------------------------------------------------------------------------
# Dispatch and fallback
# -------------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_log(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "_announced", set())
    caplog.set_level(logging.INFO, logger=kernels.__name__)
    return caplog


def test_reference_forced_by_env(monkeypatch, fresh_log):
    monkeypatch.setenv(kernels.ENV_VAR, "reference")
    layer = prepare_net(LIFLayer(3, learn_taus=True))
    spk, _ = layer(torch.rand(2, 5, 3))
    assert type(spk.grad_fn).__name__ != "LIFSequenceBackward"
    assert f"reference torch loop: {kernels.ENV_VAR}=reference" in fresh_log.text


def test_log_names_the_path_once(monkeypatch, fresh_log):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    for _ in range(3):
        prepare_net(H1v2Layer(3))(torch.rand(2, 5, 3))
    assert fresh_log.text.count("fused CPU kernel (numba)") == 1


def test_falls_back_when_kernels_cannot_load(monkeypatch, fresh_log):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.setattr(kernels, "_load_cpu", lambda: (None, "numba kernels unavailable (test)"))
    x = torch.rand(2, 5, 3)
    layer = prepare_net(H1v1Layer(3))
    spk, mem = layer(x)
    monkeypatch.setattr(kernels, "_load_cpu", lambda: (cpu, None))
    spk_fused, mem_fused = prepare_net(layer)(x)
    torch.testing.assert_close(spk, spk_fused)
    torch.testing.assert_close(mem, mem_fused)
    assert "reference torch loop: numba kernels unavailable (test)" in fresh_log.text


def test_unknown_mode_is_an_error(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="NWTRAIN_KERNELS must be one of auto, reference, triton .* 'fast'"):
        prepare_net(H1v2Layer(3))(torch.rand(2, 5, 3))


@pytest.mark.parametrize(
    "tensors,reason",
    [
        ((torch.zeros(1, 2, 3, device="meta"),), "no fused kernel for meta tensors"),
        ((torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.float64)), "float32 or float64 tensors of one"),
        ((torch.zeros(1, 2, 3, dtype=torch.float16),), "float32 or float64 tensors of one"),
    ],
)
def test_no_kernel_for_other_devices_and_dtypes(tensors, reason, monkeypatch, fresh_log):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels._backend(*tensors) is None
    assert reason in fresh_log.text
