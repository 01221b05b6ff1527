"""Loss stack, metrics and SignAnnealing."""

import pytest
import torch
from torch import nn

from nwtrain.layers import H1v1Frontend, H1v1Synapse, H1v2Synapse, LIFSynapse, prepare_net
from nwtrain.loss import firing_rate_target_mse_loss, topology_loss, weight_magnitude_loss
from nwtrain.metrics import accuracy
from nwtrain.optim import SignAnnealing
from nwtrain.topology import block_signs, violating_blocks


def synapse_with(w):
    syn = H1v1Synapse(*w.shape)
    with torch.no_grad():
        syn.weight.copy_(w)
    return syn


def test_topology_loss_counts_minority_magnitude_per_block():
    w = torch.tensor([[0.1, 0.2, -0.3, 0.4, 0.5, -0.1, -0.2], [0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.2]])
    # Row 0: block [0:5) minority 0.3, block [5:7) uniform. Row 1: uniform.
    loss = topology_loss(synapse_with(w), lam=0.05)
    torch.testing.assert_close(loss, torch.tensor(0.05 * 0.3))
    loss.backward()


def test_topology_loss_zero_iff_sign_uniform():
    w = torch.randn(13, 64).abs() * torch.tensor([1.0, -1.0]).repeat_interleave(5).repeat(7)[:64]
    assert topology_loss(synapse_with(w), lam=1.0).item() == 0.0
    assert violating_blocks(w) == []
    w[3, 7] *= -1
    assert topology_loss(synapse_with(w), lam=1.0).item() > 0
    assert violating_blocks(w) == [(3, 1)]


def test_weight_magnitude_loss():
    net = nn.ModuleList([synapse_with(torch.tensor([[1.0, -0.5], [-1.2, 0.9]])), H1v1Frontend(16)])
    torch.testing.assert_close(weight_magnitude_loss(net, limit=0.9), torch.tensor(0.1**2 + 0.3**2))
    with pytest.raises(ValueError, match="no synapse"):
        weight_magnitude_loss(nn.Linear(2, 2), limit=0.9)


def test_firing_rate_target_mse_loss():
    spikes = torch.zeros(2, 10, 3)
    spikes[0, :5, 0] = 1  # rate 0.5 for one neuron of one sample, 0 elsewhere
    expected = 10.0 * ((0.5 - 0.15) ** 2 + 5 * 0.15**2) / 6
    loss = firing_rate_target_mse_loss(spikes_list=[spikes], offsets=[0.15], multipliers=[10.0])
    torch.testing.assert_close(loss, torch.tensor(expected))
    with pytest.raises(ValueError, match="length"):
        firing_rate_target_mse_loss([spikes], [0.1, 0.2], [1.0])


def test_accuracy_from_spike_counts():
    spikes = torch.zeros(4, 5, 2)
    spikes[0, :, 0] = 1
    spikes[1, :2, 1] = 1
    spikes[2, :3, 0] = 1
    spikes[3, :, 1] = 1
    assert accuracy(spikes, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)


class ToyNet(nn.Module):
    def __init__(self, cls, n_in=12, n_out=25):
        super().__init__()
        self.syn = cls(n_in, n_out)

    def forward(self, x):
        prepare_net(self)
        return self.syn(x)


def test_tutorial1_sign_annealing_makes_every_block_uniform():
    torch.manual_seed(42)
    net = ToyNet(H1v1Synapse)
    x, y = torch.randn(1, 128, 12), torch.randn(1, 128, 25)
    assert violating_blocks(net.syn.weight) != []
    annealer = SignAnnealing(net, total_epochs=10, alpha_start=0.5, alpha_end=12.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(10):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        annealer.step(net, epoch)
    assert violating_blocks(net.syn.weight) == []
    assert (net.syn.weight != 0).all()


def test_annealing_schedule_and_projection():
    net = ToyNet(H1v2Synapse)
    annealer = SignAnnealing(net, total_epochs=10, alpha_start=0.5, alpha_end=12.0)
    assert annealer.alpha_at(0) == pytest.approx(0.5) and annealer.alpha_at(9) == pytest.approx(12.0)
    assert annealer.alpha_at(20) == pytest.approx(12.0)
    w0 = net.syn.weight.detach().clone()
    signs = block_signs(w0)
    h = annealer.step(net, 0)
    agree = torch.sign(w0) == signs
    torch.testing.assert_close(net.syn.weight[agree], w0[agree])
    torch.testing.assert_close(net.syn.weight[~agree], ((1 - h) * w0 + h * signs * w0.abs())[~agree])
    assert annealer.step(net, 9) == 1.0
    assert violating_blocks(net.syn.weight) == []


def test_annealing_needs_chip_synapses():
    with pytest.raises(ValueError, match="sign blocks"):
        SignAnnealing(nn.Sequential(LIFSynapse(3, 5)), total_epochs=3)


def test_cosine_schedule_is_a_function_of_the_epoch():
    from nwtrain.optim import CosineSchedule

    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam([{"params": params, "lr": 1e-3}, {"params": [], "lr": 4e-3}])
    schedule = CosineSchedule(optimizer, total_epochs=4)
    rates = []
    for epoch in (0, 1, 2, 3, 4, 2):
        schedule.set_epoch(epoch)
        rates.append([g["lr"] for g in optimizer.param_groups])
    assert rates[0] == [1e-3, 4e-3] and rates[4] == [0.0, 0.0] and rates[5] == rates[2]
    assert rates[2] == pytest.approx([0.5e-3, 2e-3]) and rates[1][0] == pytest.approx(
        1e-3 * (1 + 2**-0.5) / 2
    )
    with pytest.raises(ValueError, match="total_epochs"):
        CosineSchedule(optimizer, 0)
