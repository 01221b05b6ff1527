"""Golden numbers of the vendor tutorials, checked on the modules directly."""

import math
import warnings

import pytest
import torch
from torch import nn

from nwtrain.chips import h1v1, h1v2
from nwtrain.layers import (
    H1v1Frontend,
    H1v1Layer,
    H1v1Synapse,
    H1v2Layer,
    H1v2Synapse,
    LIFLayer,
    LIFSynapse,
    prepare_net,
)


def tutorial_input():
    torch.manual_seed(0)
    return (torch.rand(1, 50, 1) < 0.30).float()


def lif_rate(tau=20e-3, threshold=1.0, reset="subtraction", w=0.5):
    syn = LIFSynapse(1, 1, init=lambda p: nn.init.constant_(p, w))
    lif = LIFLayer(1, taus=tau, thresholds=threshold, dt=1e-3, reset_mechanism=reset)
    prepare_net(nn.Sequential(syn, lif))
    spk, mem = lif(syn(tutorial_input()))
    return spk.mean().item(), mem


@pytest.mark.parametrize("tau,rate", [(5e-3, 0.10), (10e-3, 0.14), (20e-3, 0.16), (50e-3, 0.18)])
def test_lif_rate_vs_tau(tau, rate):
    assert math.isclose(lif_rate(tau=tau)[0], rate, abs_tol=1e-6)


@pytest.mark.parametrize("threshold,rate", [(0.3, 0.58), (0.6, 0.28), (1.0, 0.16), (2.0, 0.06)])
def test_lif_rate_vs_threshold(threshold, rate):
    assert math.isclose(lif_rate(threshold=threshold)[0], rate, abs_tol=1e-6)


@pytest.mark.parametrize("reset,rate", [("subtraction", 0.16), ("zero", 0.12), ("none", 0.76)])
def test_lif_rate_vs_reset(reset, rate):
    assert math.isclose(lif_rate(reset=reset)[0], rate, abs_tol=1e-6)


def test_lif_inhibitory_minimum():
    _, mem = lif_rate(w=-0.8)
    torch.testing.assert_close(mem.min(), torch.tensor(-7.0221), atol=5e-5, rtol=0)


def test_h1v1_inhibitory_membrane_stays_zero():
    syn = H1v1Synapse(1, 1, init=lambda p: nn.init.constant_(p, -0.8))
    layer = H1v1Layer(1, taus=20e-3, dt=1e-3)
    prepare_net(nn.Sequential(syn, layer))
    _, mem = layer(syn(tutorial_input()))
    assert mem.abs().max().item() == 0.0


@pytest.mark.parametrize("tau", [5e-3, 10e-3, 20e-3, 50e-3, 64e-3])
def test_h1v1_threshold_is_chip_wide(tau):
    torch.testing.assert_close(H1v1Layer(3, taus=tau, dt=1e-3)._vt, torch.tensor(0.2040))


def test_h1v1_leak_and_drain_time():
    layer = H1v1Layer(1, taus=10e-3, dt=1e-3)
    vleak = layer.Vleak.mean().item()
    assert math.isclose(vleak, 0.013600, abs_tol=5e-7)
    assert math.isclose(layer._vt.item() / vleak * 1e-3 * 1e3, 15.0, abs_tol=0.05)
    assert math.isclose(layer.taus.item(), 15e-3, rel_tol=1e-6)
    assert list(layer.parameters()) == []


def test_h1v1_leak_scales_with_dt():
    """The drain time is a property of the chip, not of the simulation step."""
    for dt in (1e-3, 8e-3):
        layer = H1v1Layer(1, taus=10e-3, dt=dt)
        assert math.isclose(layer._vt.item() / layer.Vleak.item() * dt, 15e-3, rel_tol=1e-5)


def single_spike_response(syn_cls, layer_cls):
    x = torch.zeros(1, 20, 1)
    x[:, 5] = 1.0
    syn = syn_cls(1, 1, init=lambda p: nn.init.constant_(p, 0.9))
    layer = (
        layer_cls(n_neurons=1, taus=10e-3, dt=1e-3)
        if layer_cls is not LIFLayer
        else layer_cls(1, taus=10e-3, thresholds=1.0, dt=1e-3)
    )
    prepare_net(nn.Sequential(syn, layer))
    cur = syn(x)
    spk, mem = layer(cur)
    return cur.max().item(), mem.max().item(), spk.sum().item()


@pytest.mark.parametrize(
    "syn_cls,layer_cls,peak_cur,peak_mem",
    [
        (LIFSynapse, LIFLayer, 0.9000, 0.9000),
        (H1v1Synapse, H1v1Layer, 19.7304, 0.1973),
        (H1v2Synapse, H1v2Layer, 0.0786, 0.0786),
    ],
)
def test_single_spike(syn_cls, layer_cls, peak_cur, peak_mem):
    cur, mem, n_spikes = single_spike_response(syn_cls, layer_cls)
    assert math.isclose(cur, peak_cur, abs_tol=5e-5)
    assert math.isclose(mem, peak_mem, abs_tol=5e-5)
    assert n_spikes == 0


@pytest.mark.parametrize("syn_cls,current", [(H1v1Synapse, 21.3811), (H1v2Synapse, 0.0873)])
def test_current_at_unit_weight(syn_cls, current):
    syn = prepare_net(syn_cls(1, 1, init=lambda p: nn.init.constant_(p, 1.0)))
    assert math.isclose(syn(torch.ones(1, 1)).item(), current, abs_tol=5e-5)


def test_h1v2_threshold_and_tau_snapping():
    layer = H1v2Layer(1, taus=17e-3, dt=1e-3)
    torch.testing.assert_close(layer._vt, torch.tensor(0.3226))
    assert math.isclose(layer.taus.item() * 1e3, 13.820, abs_tol=5e-4)
    assert list(layer.parameters()) == []


def test_h1v2_rejects_thresholds_and_stddev():
    with pytest.raises(TypeError, match="thresholds"):
        H1v2Layer(n_neurons=1, taus=20e-3, dt=1e-3, thresholds=0.25)
    with pytest.raises(TypeError, match="stddev"):
        H1v2Synapse(nb_inputs=1, nb_outputs=1, stddev=0.02)


def test_h1v2_subtraction_reset_and_clamp():
    syn = H1v2Synapse(1, 1, init=lambda p: nn.init.constant_(p, 1.66))
    layer = H1v2Layer(1, taus=442e-3, dt=1e-3)
    prepare_net(nn.Sequential(syn, layer))
    spk, mem = layer(syn(torch.ones(1, 10, 1)))
    assert spk.sum() > 0
    # With subtraction the charge above threshold survives the spike.
    first = int(spk[0, :, 0].nonzero()[0])
    assert mem[0, first, 0] > 0


def test_taus_snap_to_documented_profiles():
    for cls, table in ((H1v1Layer, h1v1.TAU_PROFILES_S), (H1v2Layer, h1v2.TAU_PROFILES_S)):
        taus = cls(4, taus=[3e-3, 20e-3, 64e-3, 1.0], dt=1e-3).taus
        assert all(any(math.isclose(t, p, rel_tol=1e-6) for p in table) for t in taus.tolist())


def test_frontend_warns_on_channel_count():
    msg = (
        "Frontend on chip uses 16 filters. Using a different amount of neurons 13 is allowed but not "
        "respecting the chip constraints."
    )
    with pytest.warns(UserWarning, match=msg.replace(".", r"\.")):
        H1v1Frontend(nb_inputs=13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H1v1Frontend(nb_inputs=16)


def test_frontend_is_per_channel():
    fe = prepare_net(H1v1Frontend(nb_inputs=16, init=lambda p: p.copy_(torch.linspace(-0.9, 0.9, 16))))
    x = torch.rand(2, 7, 16)
    expected = x * H1v1Synapse(1, 1).transfer(fe.weight.detach())
    torch.testing.assert_close(fe(x), expected)
    assert [n for n, _ in fe.named_parameters()] == ["weight"]


def test_weights_are_inputs_by_outputs():
    assert H1v1Synapse(13, 64).weight.shape == (13, 64)
    assert H1v2Synapse(64, 2).weight.shape == (64, 2)


def test_lif_learnable_taus_and_thresholds_train():
    lif = LIFLayer(5, taus=20e-3, thresholds=1.0, dt=1e-3, learn_taus=True, learn_thresholds=True)
    syn = LIFSynapse(3, 5, init=lambda p: nn.init.constant_(p, 0.4))
    prepare_net(nn.Sequential(syn, lif))
    spk, _ = lif(syn(torch.ones(2, 30, 3)))
    spk.sum().backward()
    assert lif._d_taus.grad.abs().sum() > 0 and lif.thresholds.grad.abs().sum() > 0
    torch.testing.assert_close(lif.taus, torch.full((5,), 20e-3))


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match="reset_mechanism"):
        LIFLayer(1, reset_mechanism="soft")
    with pytest.raises(ValueError, match="dt"):
        H1v1Layer(1, taus=10e-3, dt=0.0)
    with pytest.raises(ValueError, match="taus"):
        H1v1Layer(1, taus=-1.0)
    with pytest.raises(ValueError, match="quantization_bit"):
        H1v1Synapse(2, 2, quantization_bit=0)


def test_gpu_device_flag_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        LIFLayer(1, device="gpu")
