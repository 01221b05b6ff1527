"""The SDK's initialisers (nwtrain.init) and the population readout (loss and metric)."""

import math

import pytest
import torch

from nwtrain.core.topology import violating_blocks
from nwtrain.init import auto_init, fluct_init, frontend_firing_init, psp_kernel
from nwtrain.init.hardware import init_weights
from nwtrain.layers import routed_weight
from nwtrain.loss import balanced_population_mse
from nwtrain.metrics import accuracy_population
from nwtrain.models.kws import KWSNet
from nwtrain.optim import SignAnnealing


def _features(seed=0, batch=8):
    """Speech-like features: a few bands loud in bursts, the rest quiet (what the filterbank gives)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.01 * torch.rand(batch, 125, 13, generator=g)
    bursts = torch.rand(batch, 125, 13, generator=g) < 0.15
    return x + 0.08 * bursts * torch.rand(batch, 125, 13, generator=g)


def _net(chip, recurrent=False):
    # A recurrent hidden layer of 100 spans two cores on either chip, so its recurrence is masked.
    hidden = 100 if recurrent else 40
    return KWSNet(
        13, 2, chip=chip, hidden_size=hidden, recurrent=recurrent, input_gain=40.0, out_population=5
    )


CASES = [("lif", False), ("h1v1", False), ("h1v1", True), ("h1v2", True)]


@pytest.mark.parametrize(("chip", "recurrent"), CASES)
def test_fluct_init_leaves_no_neuron_silent_and_lands_xi(chip, recurrent):
    net = _net(chip, recurrent)
    x = _features()
    alpha = 0.8 if recurrent else 1.0
    report = auto_init(net, x, torch.Generator().manual_seed(1), xi_target=1.5, alpha=alpha)
    assert [r.layer for r in report] == ["hidden", "out"]
    for r in report:
        assert r.dead_fraction == 0  # every neuron fired on the batch, on the chip instance of seed 0
        # The bisection lands the feed-forward xi (1.5 / sqrt(alpha)) unless the silent-neuron search had
        # to raise the drive, which only lowers it.
        if r.drive_raised:
            assert r.xi < 1.5 / math.sqrt(alpha)
        else:
            assert r.xi == pytest.approx(1.5 / math.sqrt(alpha), abs=0.1)
    assert (report[0].sigma_rec is not None) == recurrent
    limit = net.syn_hidden.WEIGHT_LIMIT_V
    if limit is not None:
        assert all(routed_weight(m).abs().max() <= limit for m in net.routed_modules().values())
    if recurrent:  # the recurrent weights keep to the cores
        assert (net.hidden.recurrent_weights[~net.hidden.recurrent_mask] == 0).all()


def test_fluct_init_refuses_annealed_weights_and_bad_arguments():
    net = _net("h1v1")
    SignAnnealing(net, total_epochs=3)
    with pytest.raises(ValueError, match="before SignAnnealing"):
        fluct_init(net, _features())
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\]"):
        fluct_init(_net("h1v1"), _features(), alpha=0.0)


def test_the_psp_kernel_of_a_lif_layer_is_its_exponential():
    net = _net("lif")
    eps = psp_kernel(net.hidden, net.syn_hidden, probe=0.1, steps=20)
    decay = float(net.hidden._d_taus[0])
    assert torch.allclose(eps, decay ** torch.arange(20.0), atol=1e-6)


def test_the_psp_kernel_of_an_h1v2_layer_is_its_linear_leak():
    """H1v2: a spike adds fo * w / threshold, which drains linearly by Vleak per step to the clamp at 0."""
    net = _net("h1v2")
    layer, syn = net.hidden, net.syn_hidden
    probe = 1.0
    eps = psp_kernel(layer, syn, probe=probe, steps=10)
    jump = float(syn.transfer(torch.tensor(probe)))
    vleak = float(layer.Vleak[0])
    expected = torch.clamp(jump - vleak * torch.arange(10.0), min=0.0) / probe
    assert torch.allclose(eps, expected, atol=1e-6)


@pytest.mark.parametrize("chip", ["lif", "h1v1", "h1v2"])
def test_frontend_firing_init_sets_each_channel_to_the_target_rate(chip):
    net = _net(chip)
    x = _features()
    rates = frontend_firing_init(net, x, target_rate=0.05)
    reachable = rates > 0  # a channel whose input is too weak keeps the top gain
    assert reachable.sum() >= 10
    assert torch.allclose(rates[reachable], torch.full_like(rates[reachable], 0.05), atol=0.01)
    with pytest.raises(ValueError, match="target_rate"):
        frontend_firing_init(net, x, target_rate=1.5)


@pytest.mark.parametrize(("chip", "recurrent"), [("h1v1", True), ("h1v2", True)])
def test_init_weights_gives_uniform_blocks_in_range(chip, recurrent):
    net = _net(chip, recurrent)
    init_weights(net, bound_fraction=0.5, generator=torch.Generator().manual_seed(3))
    limit = net.syn_hidden.WEIGHT_LIMIT_V
    for name, module in net.routed_modules().items():
        w = routed_weight(module)
        assert len(violating_blocks(w)) == 0, name
        assert w.abs().max() <= 0.5 * limit
        assert (w > 0).any() and (w < 0).any()
    assert (net.hidden.recurrent_weights[~net.hidden.recurrent_mask] == 0).all()


def test_balanced_population_mse_pushes_the_target_population_up_and_the_rest_down():
    # 2 samples, 3 classes x 2 neurons, class-major: neuron j of class c is column c * 2 + j.
    counts = torch.tensor(
        [[9.0, 9.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 9.0, 9.0]], requires_grad=True
    )
    labels = torch.tensor([0, 2])
    assert balanced_population_mse(counts, labels, num_classes=3, high=9.0, low=1.0) == 0
    wrong = torch.tensor([[1.0, 1.0, 9.0, 9.0, 1.0, 1.0]] * 2, requires_grad=True)
    loss = balanced_population_mse(wrong, labels, num_classes=3, high=9.0, low=1.0)
    loss.backward()
    assert loss > 0
    assert (wrong.grad[0, :2] < 0).all() and (wrong.grad[0, 2:4] > 0).all()  # target up, others down
    # Balanced: the target population weighs as much as all other classes together.
    single = torch.zeros(1, 6, requires_grad=True)
    balanced_population_mse(single, torch.tensor([0]), num_classes=3, high=1.0, low=0.0).backward()
    assert single.grad[0, :2].sum() == pytest.approx(-2.0) and single.grad[0, 2:].sum() == 0
    # Spike trains [B, T, N] are counted over time first.
    spikes = torch.zeros(2, 4, 6)
    spikes[0, :, :2] = 1.0
    assert balanced_population_mse(spikes, torch.tensor([0, 0]), 3, high=4.0, low=0.0) == pytest.approx(8.0)


def test_accuracy_population_sums_each_class_population():
    counts = torch.tensor([[3.0, 0.0, 2.0, 2.0], [0.0, 1.0, 0.0, 0.0]])  # class sums: [3, 4], [1, 0]
    assert accuracy_population(counts, torch.tensor([1, 0]), num_classes=2) == 1.0
    assert accuracy_population(counts, torch.tensor([0, 1]), num_classes=2) == 0.0
    spikes = counts[:, None, :].expand(2, 5, 4)
    assert accuracy_population(spikes, torch.tensor([1, 0]), num_classes=2) == 1.0
    with pytest.raises(ValueError, match="4 output neurons are not a multiple of 3 classes"):
        accuracy_population(counts, torch.tensor([0, 1]), num_classes=3)
