"""A whole sequence [B, T, N] in one call equals T single-step calls, forward and backward, with mismatch
and quantisation on."""

import pytest
import torch
from torch import nn

from nwtrain.core.quant import TernaryQuantizer
from nwtrain.layers import (
    AdLIFLayer,
    H1v1Frontend,
    H1v1Layer,
    H1v1Synapse,
    H1v2Layer,
    H1v2Synapse,
    LIFLayer,
    LIFSynapse,
    prepare_net,
)


def build(kind):
    torch.manual_seed(1)
    if kind.startswith("lif"):
        reset = kind.split("-")[1]
        return nn.ModuleList(
            [
                LIFSynapse(6, 10, quantizer=TernaryQuantizer(0.7), use_bias=True),
                LIFLayer(
                    10,
                    taus=8e-3,
                    thresholds=0.3,
                    reset_mechanism=reset,
                    dt=1e-3,
                    learn_taus=True,
                    learn_thresholds=True,
                ),
            ]
        )
    if kind == "adlif":
        return nn.ModuleList(
            [
                LIFSynapse(6, 10),
                AdLIFLayer(10, adaptation_taus=[20e-3, 50e-3] * 5, taus=8e-3, thresholds=0.3, dt=1e-3),
            ]
        )
    if kind == "h1v1":
        return nn.ModuleList(
            [
                H1v1Frontend(
                    6, quantization_bit=5, stddev=0.02, init=lambda w: nn.init.uniform_(w, 0.2, 0.9)
                ),
                H1v1Layer(6, taus=10e-3, dt=8e-3, ileak_mismatch=True),
                H1v1Synapse(6, 10, quantization_bit=5, stddev=0.02),
                H1v1Layer(10, taus=64e-3, dt=8e-3, ileak_mismatch=True),
            ]
        )
    return nn.ModuleList(
        [
            H1v2Synapse(6, 10, quantization_bit=5, init=lambda w: nn.init.uniform_(w, -0.5, 1.66)),
            H1v2Layer(10, taus=20e-3, dt=1e-3, ileak_mismatch=True),
        ]
    )


def run(net, x, sequence: bool):
    prepare_net(net, generator=torch.Generator().manual_seed(5))
    h = x
    spikes, mems = None, None
    if sequence:
        for m in net:
            h = m(h)
            if isinstance(h, tuple):
                h, mems = h
        spikes = h
    else:
        outs = []
        for t in range(x.shape[1]):
            h = x[:, t]
            for m in net:
                h = m(h)
                if isinstance(h, tuple):
                    h, mem = h
            outs.append((h, mem))
        spikes = torch.stack([o[0] for o in outs], 1)
        mems = torch.stack([o[1] for o in outs], 1)
    return spikes, mems


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["lif-subtraction", "lif-zero", "lif-none", "adlif", "h1v1", "h1v2"])
def test_sequence_equals_steps(kind, dtype):
    """Float64 shows the two paths compute the same function (to 1e-10); in float32 the weight gradient
    sums B*T products in a different order, so it agrees to float32 rounding (1e-6 abs + 1e-5 rel)."""
    net = build(kind).to(dtype)
    x = (torch.rand(3, 40, 6, generator=torch.Generator().manual_seed(2)) < 0.4).to(dtype)
    if kind == "h1v1":
        x = 3 * torch.rand(3, 40, 6, generator=torch.Generator().manual_seed(2), dtype=dtype)  # envelope
    tol = dict(atol=1e-10, rtol=0) if dtype == torch.float64 else dict(atol=1e-6, rtol=0)
    grad_tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-6, rtol=1e-5)
    results = []
    for sequence in (False, True):
        xi = x.clone().requires_grad_(True)
        net.zero_grad()
        spikes, mems = run(net, xi, sequence)
        loss = (spikes * torch.linspace(0.5, 1.5, spikes.shape[-1], dtype=dtype)).sum() + 0.1 * mems.pow(
            2
        ).sum()
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters()] + [xi.grad.clone()]
        results.append((spikes.detach(), mems.detach(), grads))
    (s0, m0, g0), (s1, m1, g1) = results
    assert s0.sum() > 0, "the test must exercise spikes"
    torch.testing.assert_close(s1, s0, **tol)
    torch.testing.assert_close(m1, m0, **tol)
    for a, b in zip(g1, g0):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **grad_tol)
    assert any(g.abs().sum() > 0 for g in g0[:-1])


def test_state_carries_across_calls():
    """Two half-sequences after one prepare_net equal the full sequence."""
    net = build("h1v1")
    x = 3 * torch.rand(2, 30, 6, generator=torch.Generator().manual_seed(3))
    full, _ = run(net, x, sequence=True)
    prepare_net(net, generator=torch.Generator().manual_seed(5))
    halves = []
    for part in (x[:, :13], x[:, 13:]):
        h = part
        for m in net:
            h = m(h)
            h = h[0] if isinstance(h, tuple) else h
        halves.append(h)
    torch.testing.assert_close(torch.cat(halves, 1), full)
