"""Mismatch: synaptic offsets and leak variability, redrawn by every prepare_net from an explicit
generator."""

import math

import torch
from torch import nn

from nwtrain.chips import h1v1, h1v2
from nwtrain.layers import H1v1Frontend, H1v1Layer, H1v1Synapse, H1v2Layer, prepare_net


def test_synapse_offsets_are_gaussian_with_stddev():
    syn = H1v1Synapse(200, 100, quantization_bit=5, stddev=0.02)
    prepare_net(syn, generator=torch.Generator().manual_seed(0))
    offset = syn.effective_weight() - syn.quantizer(syn.weight)
    assert abs(offset.std().item() - 0.02) < 0.001
    assert abs(offset.mean().item()) < 0.001


def test_offsets_resampled_each_prepare_and_seeded():
    syn = H1v1Synapse(4, 5, stddev=0.02)
    g = torch.Generator().manual_seed(11)
    prepare_net(syn, generator=g)
    a = syn.effective_weight().detach().clone()
    prepare_net(syn, generator=g)
    b = syn.effective_weight().detach().clone()
    assert not torch.equal(a, b)
    prepare_net(syn, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(syn.effective_weight().detach(), a, atol=0, rtol=0)


def test_no_mismatch_when_disabled():
    syn = prepare_net(H1v1Synapse(4, 5, stddev=0.0))
    torch.testing.assert_close(syn.effective_weight(), syn.weight)
    fe = prepare_net(H1v1Frontend(16, stddev=0))
    torch.testing.assert_close(fe.effective_weight(), fe.weight)
    layer = prepare_net(H1v1Layer(7, taus=10e-3, dt=1e-3, ileak_mismatch=False))
    torch.testing.assert_close(layer.Vleak, torch.full((7,), 0.0136))


def test_leak_mismatch_is_lognormal_with_documented_sigma():
    for cls, sigma in (
        (H1v1Layer, h1v1.LEAK_LOGNORMAL_SIGMA),
        (H1v2Layer, h1v2.LEAK_LOGNORMAL_SIGMA),
    ):
        layer = cls(20000, taus=20e-3, dt=1e-3, ileak_mismatch=True)
        nominal = layer.Vleak.clone()
        prepare_net(layer, generator=torch.Generator().manual_seed(1))
        log_factor = (layer.Vleak / nominal).log()
        assert abs(log_factor.std().item() - sigma) < 0.01 * sigma + 0.002
        assert abs(log_factor.mean().item()) < 0.005
    assert math.isclose(h1v1.LEAK_LOGNORMAL_SIGMA, 0.1488, abs_tol=1e-3)


def test_mismatch_follows_global_seed_by_default():
    def draw():
        torch.manual_seed(7)
        layer = H1v1Layer(5, taus=20e-3, dt=1e-3, ileak_mismatch=True)
        prepare_net(nn.Sequential(layer))
        return layer.Vleak.clone()

    torch.testing.assert_close(draw(), draw(), atol=0, rtol=0)
