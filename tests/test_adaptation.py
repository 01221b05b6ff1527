"""The adaptive LIF neuron (adLIF), the LIF baseline's research option: its equations, its stability
bound, its gradients, and where a network gets it (the hidden layers, on the LIF baseline only)."""

import pytest
import torch
from cli_helpers import compose_config
from hydra.utils import instantiate
from torch.autograd import gradcheck

from nwtrain.chips import DesignRuleError
from nwtrain.core.dynamics import adlif_step, lif_step, run_sequence
from nwtrain.core.surrogate import fast_sigmoid, triangle
from nwtrain.layers import AdLIFLayer, LIFLayer, prepare_net
from nwtrain.models import KWSNet

SG = fast_sigmoid(5.0)


def state(v, w):
    return torch.stack((torch.as_tensor(v), torch.as_tensor(w)), dim=-2)


def run_adlif(current, alpha, threshold, beta, a, b, reset="subtraction", spike_fn=SG, state0=None):
    n = current.shape[-1]
    s0 = torch.zeros(current.shape[0], 2, n, dtype=current.dtype) if state0 is None else state0
    return run_sequence(
        lambda s, i: adlif_step(s, i, alpha, threshold, beta, a, b, reset, spike_fn), s0, current
    )


def test_one_step_is_the_documented_equation():
    v, w = torch.tensor([[0.4, 0.9]]), torch.tensor([[0.2, -0.1]])
    current = torch.tensor([[0.3, 0.5]])
    alpha, beta = torch.tensor([0.9, 0.8]), torch.tensor([0.95, 0.99])
    a, b = torch.tensor([0.5, -0.5]), torch.tensor([1.0, 2.0])
    spk, new = adlif_step(state(v, w), current, alpha, 1.0, beta, a, b, "subtraction", SG)
    pre = alpha * v + current - (1 - alpha) * w  # 0.64 and 1.24: the second neuron fires
    torch.testing.assert_close(spk, torch.tensor([[0.0, 1.0]]))
    v1 = pre - spk
    torch.testing.assert_close(new, state(v1, beta * w + (1 - beta) * (a * v1 + b * spk)))


def test_without_adaptation_it_is_lif():
    current = torch.rand(3, 50, 4, generator=torch.Generator().manual_seed(0))
    alpha, zero = torch.tensor([0.5, 0.8, 0.9, 0.99]), torch.zeros(4)
    spikes, mems, _ = run_adlif(current, alpha, 1.0, torch.full((4,), 0.9), zero, zero)
    ref_spikes, ref_mems, _ = run_sequence(
        lambda m, i: lif_step(m, i, alpha, 1.0, "subtraction", SG), torch.zeros(3, 4), current
    )
    assert ref_spikes.sum() > 10
    torch.testing.assert_close(spikes, ref_spikes)
    torch.testing.assert_close(mems[..., 0, :], ref_mems)
    assert mems[..., 1, :].abs().max() == 0


@pytest.mark.parametrize("a", [0.5, 0.0, -0.5, -0.9])
def test_subthreshold_coupling_scales_the_membrane_gain_by_one_over_one_plus_a(a):
    current = torch.full((1, 8000, 1), 0.02, dtype=torch.float64)
    alpha, beta = torch.tensor([0.9], dtype=torch.float64), torch.tensor([0.95], dtype=torch.float64)
    coupling, zero = torch.tensor([a], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    _, mems, _ = run_adlif(current, alpha, 1e9, beta, coupling, zero, reset="none")
    v, w = mems[0, -1]
    assert v.item() == pytest.approx(0.02 / (1 - 0.9) / (1 + a), rel=1e-9)
    assert w.item() == pytest.approx(a * v.item(), rel=1e-9, abs=1e-12)


def test_a_spike_adds_b_thresholds_of_adaptation_spread_over_tau_w():
    current = torch.zeros(1, 4000, 1, dtype=torch.float64)
    current[0, 0] = 1.0  # one spike at step 0 that resets the membrane to 0, then no input
    beta = torch.tensor([0.99], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    spikes, mems, _ = run_adlif(current, 0.9 * one, 1.0, beta, zero, 1.7 * one)
    assert spikes.sum().item() == 1 and spikes[0, 0, 0] == 1
    w = mems[0, :, 1, 0]
    assert w[0].item() == pytest.approx(0.01 * 1.7) and w.sum().item() == pytest.approx(1.7, rel=1e-9)
    assert (mems[0, 1:, 0, 0] < 0).all()  # the adaptation pulls the membrane below rest after the spike


def test_the_layer_clamps_a_and_b_to_their_stable_ranges():
    x = torch.rand(2, 60, 5, generator=torch.Generator().manual_seed(1))
    outs = []
    for a, b in ((-5.0, 7.0), (-1.0, 2.0)):
        layer = AdLIFLayer(5, adaptation_taus=0.1, taus=0.05, dt=8e-3)
        with torch.no_grad():
            layer.a.fill_(a)
            layer.b.fill_(b)
        prepare_net(layer)
        outs.append(layer(x))
    torch.testing.assert_close(outs[0], outs[1])


class _Recorded:
    """A spike function that keeps how close each step came to the threshold."""

    def __init__(self, fn):
        self.fn, self.closest = fn, float("inf")

    def __call__(self, x):
        self.closest = min(self.closest, x.detach().abs().min().item())
        return self.fn(x)


def test_gradcheck_through_membrane_and_adaptation():
    """The surrogate is 0 at every step (narrower than any distance to the threshold), so the analytic
    gradient is the true derivative of the piecewise-smooth forward: through both state variables, the
    decays and the coupling ``a`` and ``b`` (``b`` through the reset spikes' adaptation)."""
    g = torch.Generator().manual_seed(4)
    current = 0.7 * torch.rand(2, 25, 3, generator=g, dtype=torch.float64)
    state0 = 0.3 * torch.rand(2, 2, 3, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.6, 0.8, 0.9], dtype=torch.float64)
    beta = torch.tensor([0.9, 0.95, 0.99], dtype=torch.float64)
    a = torch.tensor([0.5, -0.4, 0.1], dtype=torch.float64)
    b = torch.tensor([1.0, 0.3, 1.8], dtype=torch.float64)
    args = tuple(t.requires_grad_() for t in (current, state0, alpha, beta, a, b))
    spike_fn = _Recorded(triangle(1e-4))
    spikes, _, _ = run_adlif(current, alpha, 1.0, beta, a, b, spike_fn=spike_fn, state0=state0)
    assert spikes.sum() > 5 and spike_fn.closest > 1e-4

    def mems(c, s0, al, be, aa, bb):
        return run_adlif(c, al, 1.0, be, aa, bb, spike_fn=spike_fn, state0=s0)[1]

    assert gradcheck(mems, args)


def test_the_surrogate_gradient_reaches_a_and_b_in_a_recurrent_layer():
    torch.manual_seed(0)
    layer = AdLIFLayer(8, adaptation_taus=[0.05, 0.2] * 4, taus=0.05, dt=8e-3, layer_topology="RC")
    prepare_net(layer)
    spk, mem = layer(torch.rand(4, 80, 8) * 0.5)
    assert mem.shape == spk.shape == (4, 80, 8) and layer.mem.shape == (4, 2, 8)
    assert spk.sum() > 0
    spk.sum().backward()
    for p in (layer.a, layer.b, layer.recurrent_weights):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert layer.adaptation_taus.tolist() == pytest.approx([0.05, 0.2] * 4, rel=1e-5)


def test_a_lif_network_adapts_its_hidden_layers_only():
    torch.manual_seed(0)
    net = KWSNet(
        13, 2, chip="lif", hidden_size=[6, 4], taus=[10e-3, 45e-3, 45e-3, 135e-3],
        adaptation_taus_s=[30e-3, 350e-3],
    )  # fmt: skip
    kinds = {name: type(getattr(net, name)) for name in ("frontend_layer", "hidden", "hidden2", "out")}
    assert kinds == {"frontend_layer": LIFLayer, "hidden": AdLIFLayer, "hidden2": AdLIFLayer, "out": LIFLayer}
    assert net.hidden.adaptation_taus.tolist() == pytest.approx([30e-3, 350e-3] * 3, rel=1e-5)
    assert net(torch.rand(3, 20, 13)).shape == (3, 20, 2)


@pytest.mark.parametrize("chip", ["h1v1", "h1v2"])
def test_the_chips_refuse_adaptation(chip):
    with pytest.raises(DesignRuleError, match="has no neuron adaptation .the vendor documents none."):
        KWSNet(13, 2, chip=chip, adaptation_taus_s=0.2)


@pytest.mark.parametrize("taus", [0.0, [0.1, -0.2], []])
def test_bad_adaptation_taus_are_named(taus):
    with pytest.raises(ValueError, match="adaptation_taus_s must be > 0 s"):
        KWSNet(13, 2, chip="lif", adaptation_taus_s=taus)


def test_the_config_option_builds_an_adaptive_baseline():
    cfg = compose_config(
        ["experiment=words_sc_lif", "model.adaptation_taus_s=[0.03,0.1,0.35]", "paths.output_dir=unused"]
    )
    model = instantiate(cfg.model, n_channels=38, n_classes=10, device="cpu")
    assert isinstance(model.hidden, AdLIFLayer) and model.hidden.layer_topology == "RC"
    assert model.hidden.adaptation_taus[:3].tolist() == pytest.approx([0.03, 0.1, 0.35], rel=1e-5)
