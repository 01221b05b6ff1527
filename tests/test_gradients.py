"""Gradients through surrogates and the straight-through estimator: finite, non-zero, and exact where a
true derivative exists (gradcheck in float64)."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from nwtrain.core import surrogate
from nwtrain.core.quant import BinaryQuantizer, FixedPointQuantizer, RangeQuantizer, TernaryQuantizer
from nwtrain.layers import (
    H1v1Frontend,
    H1v1Layer,
    H1v1Synapse,
    H1v2Synapse,
    LIFLayer,
    LIFSynapse,
    prepare_net,
)

SURROGATES = [
    surrogate.fast_sigmoid(25.0),
    surrogate.sigmoid(10.0),
    surrogate.atan(2.0),
    surrogate.triangle(0.5),
    surrogate.straight_through(),
]


@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_surrogate_forward_is_heaviside_backward_is_its_grad(sg):
    x = torch.linspace(-1, 1, 101, dtype=torch.float64, requires_grad=True)
    y = sg(x)
    torch.testing.assert_close(y, (x >= 0).double())
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, sg.grad(x.detach()))
    assert torch.isfinite(x.grad).all() and x.grad.max() > 0


def test_fast_sigmoid_formula():
    x = torch.tensor([0.0, 0.04, -0.2])
    torch.testing.assert_close(surrogate.fast_sigmoid(25.0).grad(x), 1 / (1 + 25 * x.abs()) ** 2)


def test_surrogate_grads_are_derivatives_of_their_smooth_functions():
    """Each ``grad`` is the derivative of a known smooth step: check by autograd in float64."""
    x = torch.linspace(-0.9, 0.9, 37, dtype=torch.float64, requires_grad=True)
    smooth = {
        "fast_sigmoid": lambda v: v / (1 + 25 * v.abs()),
        "sigmoid": lambda v: torch.sigmoid(10 * v),
        "atan": lambda v: torch.atan(torch.pi / 2 * 2 * v) / torch.pi,
    }
    grads = {"fast_sigmoid": SURROGATES[0], "sigmoid": SURROGATES[1], "atan": SURROGATES[2]}
    for name, fn in smooth.items():
        (g,) = torch.autograd.grad(fn(x).sum(), x)
        torch.testing.assert_close(g, grads[name].grad(x.detach()))


@pytest.mark.parametrize(
    "q",
    [RangeQuantizer(5, 0.9), FixedPointQuantizer(8, 4), TernaryQuantizer(0.7), BinaryQuantizer()],
    ids=repr,
)
def test_ste_passes_gradient(q):
    w = torch.tensor([-2.0, -0.5, -0.01, 0.0, 0.3, 0.89, 5.0], requires_grad=True)
    q(w).backward(torch.arange(1.0, 8.0))
    expected = torch.arange(1.0, 8.0) * q.pass_mask(w.detach())
    torch.testing.assert_close(w.grad, expected)


def test_range_ste_blocks_gradient_beyond_clamp():
    w = torch.tensor([-1.2, -0.9, 0.0, 0.9, 1.2], requires_grad=True)
    RangeQuantizer(5, 0.9)(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("cls", [H1v1Synapse, H1v2Synapse, LIFSynapse])
def test_gradcheck_synapse_transfer(cls):
    syn = prepare_net(cls(4, 6).double())
    x = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda inp, w: inp @ syn.transfer(w), (x, syn.weight))


def test_gradcheck_frontend():
    fe = prepare_net(H1v1Frontend(16).double())
    x = torch.rand(2, 5, 16, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda inp, w: inp * fe.transfer(w), (x, fe.weight))


def test_gradcheck_lif_membrane_path():
    """With reset 'none' the membrane is a smooth function of the input and the decay."""
    layer = LIFLayer(3, taus=[5e-3, 20e-3, 50e-3], reset_mechanism="none").double()

    def mem(x, decay):
        prepare_net(layer)
        layer._d_taus = decay
        return layer(x)[1]

    x = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    decay = layer._d_taus.clone().requires_grad_(True)
    assert gradcheck(mem, (x, decay))


def test_gradcheck_h1v1_membrane_above_clamp():
    """Away from the clamp at 0 and below threshold the H1v1 membrane is linear in the current."""
    layer = H1v1Layer(3, taus=405e-3, dt=1e-3).double()

    def mem(cur):
        prepare_net(layer)
        return layer(cur)[1]

    cur = torch.full((2, 6, 3), 2.0, dtype=torch.float64) + 0.1 * torch.rand(2, 6, 3, dtype=torch.float64)
    cur.requires_grad_(True)
    assert gradcheck(mem, (cur,))


@pytest.mark.parametrize("quantized", [False, True])
def test_gradients_reach_every_parameter_through_spikes(quantized):
    torch.manual_seed(0)
    bits = 5 if quantized else None
    fe = H1v1Frontend(8, quantization_bit=bits, init=lambda w: nn.init.constant_(w, 0.9))
    net = nn.ModuleList(
        [
            fe,
            H1v1Layer(8, taus=10e-3, dt=8e-3),
            H1v1Synapse(8, 10, quantization_bit=bits, stddev=0.02),
            H1v1Layer(10, taus=64e-3, dt=8e-3, ileak_mismatch=True),
        ]
    )
    prepare_net(net)
    h = 3 * torch.rand(4, 30, 8)
    for m in net:
        h = m(h)
        h = h[0] if isinstance(h, tuple) else h
    assert h.sum() > 0
    (h * torch.linspace(1, 2, 10)).sum().backward()
    for p in net.parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel_path", ["reference", "auto"])
def test_clamp_grad_reaches_a_silenced_chip_neuron(kernel_path, monkeypatch):
    """A membrane held at 0 by inhibition passes no gradient with the exact clamp derivative; with
    ``clamp_grad`` it passes that fraction, and the forward values do not change."""
    monkeypatch.setenv("NWTRAIN_KERNELS", kernel_path)
    current = torch.full((1, 6, 2), -5.0)  # nA: both neurons pinned at 0
    current[0, 3, 1] = 25.0  # neuron 1 fires once at step 3, then is inhibited again
    results = {}
    for clamp_grad in (0.0, 0.25):
        x = current.clone().requires_grad_()
        spk, mem = prepare_net(H1v1Layer(2, taus=10e-3, dt=1e-3, clamp_grad=clamp_grad))(x)
        spk.sum().backward()
        results[clamp_grad] = spk.detach(), mem.detach(), x.grad
    (spk0, mem0, g0), (spk1, mem1, g1) = results[0.0], results[0.25]
    assert torch.equal(spk0, spk1) and torch.equal(mem0, mem1)
    assert spk0[0, :, 1].tolist() == [0, 0, 0, 1, 0, 0]
    assert (g0[0, :, 0] == 0).all() and (g1[0, :, 0] > 0).all()
    assert g1[0, 3, 1] == g0[0, 3, 1] > 0  # where the membrane is not clamped, the slopes agree


def test_clamp_grad_out_of_range_is_refused():
    with pytest.raises(ValueError, match="clamp_grad must lie in"):
        H1v1Layer(2, clamp_grad=1.5)
