"""Loss stack, metrics and SignAnnealing."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nwtrain.chips import h1v1, h1v2
from nwtrain.core.topology import violating_blocks
from nwtrain.layers import H1v1Frontend, H1v1Synapse, H1v2Synapse, LIFSynapse, prepare_net
from nwtrain.loss import firing_rate_target_mse_loss, topology_loss, weight_magnitude_loss
from nwtrain.metrics import accuracy
from nwtrain.models.kws import KWSNet
from nwtrain.optim import SignAnnealing, SignBlocks, bake_sign_blocks
from nwtrain.training.annealing import exposed_parameters, load_annealed_state
from nwtrain.training.objectives import Classification


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


def test_label_smoothing_trains_towards_the_smoothed_label_distribution():
    spikes = torch.rand(3, 20, 4).round().requires_grad_()
    labels = torch.tensor([0, 2, 3])
    counts = spikes.sum(dim=1)
    target = torch.full((3, 4), 0.1 / 4).scatter_add(1, labels[:, None], torch.full((3, 1), 0.9))
    expected = -(target * counts.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(Classification(label_smoothing=0.1).loss(spikes, labels), expected)
    plain = -counts.log_softmax(dim=1).gather(1, labels[:, None]).mean()
    torch.testing.assert_close(Classification().loss(spikes, labels), plain)
    x = torch.rand(2, 6, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: Classification(label_smoothing=0.2).loss(s, labels[:2]), (x,))


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_label_smoothing_outside_zero_to_one_is_refused(smoothing):
    with pytest.raises(ValueError, match=rf"label_smoothing must be in \[0, 1\), got {smoothing}"):
        Classification(label_smoothing=smoothing)


TUTORIAL2 = Path(__file__).parent / "tutorials" / "tutorial2_h1v2.py"


def tutorial2_section7() -> str:
    """Tutorial 2 section 7's code as the tutorial file holds it (verbatim but for the imports), from its
    SignAnnealing import to the weights it plots."""
    source = TUTORIAL2.read_text()
    start = source.index("from nwtrain.optim import SignAnnealing")
    return source[start : source.index("\n", source.index("W_final = "))]


def test_tutorial2_section7_run_verbatim_ends_with_every_block_uniform():
    code = tutorial2_section7()
    # The SDK's order and rate: anneal, forward, backward, Adam step at lr 5e-2, 10 epochs.
    assert "for epoch in range(1, epochs + 1):\n    sign_annealer.step(net, epoch)\n    pred = net(" in code
    assert "lr=5e-2" in code and "epochs = 10" in code
    torch.manual_seed(0)
    scope = {"torch": torch, "nn": nn, "H1v2Synapse": H1v2Synapse, "prepare_net": prepare_net}
    exec(compile(code, str(TUTORIAL2), "exec"), scope)
    before, after = scope["W_unconstrained"], scope["W_final"]
    assert after.shape == (12, 25)  # 12 input rows x 5 blocks: 60 sign blocks
    assert len(violating_blocks(before)) > 50 and violating_blocks(after) == []
    assert after.abs().max() <= h1v2.WEIGHT_LIMIT_V and (after != 0).all()
    assert parametrize.is_parametrized(scope["net"].syn, "weight")
    assert scope["loss_hist"][-1] < scope["loss_hist"][0]


class TinyRecurrent(nn.Module):
    """A recurrent layer in the SDK's RC form: feed-forward ``weight [I, N]`` and ``recurrent_weights
    [N, N]``, the latter acting one step later."""

    SIGN_BLOCKS = True
    WEIGHT_LIMIT_V = h1v2.WEIGHT_LIMIT_V

    def __init__(self, n_in: int, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n).uniform_(-1.0, 1.0))
        self.recurrent_weights = nn.Parameter(torch.empty(n, n).uniform_(-1.0, 1.0))

    def forward(self, x):
        w, r = self.weight, self.recurrent_weights
        h, out = x.new_zeros(x.shape[0], w.shape[1]), []
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ w + h @ r)
            out.append(h)
        return torch.stack(out, dim=1)


def test_recurrent_weights_are_parametrised_and_end_sign_uniform_whatever_the_optimiser_does():
    torch.manual_seed(0)
    net = nn.Sequential(TinyRecurrent(4, 12))
    x, y = torch.randn(2, 20, 4), torch.randn(2, 20, 12)
    assert len(violating_blocks(net[0].recurrent_weights)) > 12
    annealer = SignAnnealing(net, total_epochs=10)  # before the optimiser
    assert parametrize.is_parametrized(net[0], "weight") and parametrize.is_parametrized(
        net[0], "recurrent_weights"
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-2)
    for epoch in range(1, 11):
        annealer.step(net, epoch)
        loss = nn.functional.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Past the schedule's end, steps of any size keep the exposed weights sign-uniform and in range.
    wild = torch.optim.SGD(net.parameters(), lr=100.0)
    for _ in range(3):
        wild.zero_grad()
        net(x).sum().backward()
        wild.step()
        for w in (net[0].weight, net[0].recurrent_weights):
            assert violating_blocks(w) == [] and w.abs().max() <= h1v2.WEIGHT_LIMIT_V


def test_sign_blocks_follow_their_equation():
    theta = torch.tensor([[0.3, -0.1, 0.2, 0.4, -0.2, 0.5, -0.7]], dtype=torch.float64)
    blocks = SignBlocks(limit=None, alpha=2.0).double()
    z = torch.tensor([0.6 / 1.2] * 5 + [-0.2 / 1.2] * 2, dtype=torch.float64)
    torch.testing.assert_close(blocks(theta), theta.abs() * torch.tanh(2.0 * z) / math.tanh(2.0))
    blocks.hard.fill_(True)
    torch.testing.assert_close(blocks(theta), theta.abs() * torch.tensor([1.0] * 5 + [-1.0] * 2).double())
    # A block that agrees already is exposed as it is, at any alpha; the bound inverts exactly.
    bounded = SignBlocks(limit=0.9, alpha=0.5).double()
    agreeing = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.89], [-0.5, -0.1, -0.9, -0.3, -0.2]], dtype=torch.float64)
    torch.testing.assert_close(bounded(bounded.right_inverse(agreeing)), agreeing.clamp(-0.8991, 0.8991))
    soft = SignBlocks(limit=0.9, alpha=3.0).double()
    assert torch.autograd.gradcheck(soft, torch.randn(3, 7, dtype=torch.float64, requires_grad=True))


def test_annealing_schedule_ends_hard_in_zero_and_one_based_loops():
    net = nn.Sequential(H1v2Synapse(12, 25))
    annealer = SignAnnealing(net, total_epochs=10)
    block = net[0].parametrizations.weight[0]
    assert (annealer.alpha_at(0), annealer.alpha_at(9), annealer.alpha_at(20)) == (0.5, 20.0, 20.0)
    assert annealer.step(net, 4) == pytest.approx(math.tanh(annealer.alpha_at(4)))
    assert block.alpha.item() == pytest.approx(annealer.alpha_at(4)) and not block.hard
    for last in (9, 10):
        assert annealer.step(net, last) == 1.0 and block.hard
    with pytest.raises(ValueError, match="not the network"):
        annealer.step(nn.Sequential(H1v2Synapse(12, 25)), 0)


def test_annealing_skips_the_front_end_and_bounds_the_range():
    net = KWSNet(13, 2, chip="h1v1", hidden_size=16)
    SignAnnealing(net, total_epochs=3)
    assert not parametrize.is_parametrized(net.frontend)
    assert all(parametrize.is_parametrized(s, "weight") for s in net.dense_synapses())
    with torch.no_grad():
        net.syn_hidden.parametrizations.weight.original.mul_(100.0)
    assert net.syn_hidden.weight.abs().max() <= h1v1.WEIGHT_LIMIT_V


def test_annealed_states_round_trip_and_plain_ones_still_load():
    torch.manual_seed(0)
    net = KWSNet(13, 2, chip="h1v2", hidden_size=16)
    SignAnnealing(net, total_epochs=10).step(net, 3)
    state = net.state_dict()
    assert {"syn_out.parametrizations.weight.original", "syn_out.parametrizations.weight.0.alpha"} <= set(
        state
    )
    fresh = KWSNet(13, 2, chip="h1v2", hidden_size=16)
    load_annealed_state(fresh, state)
    torch.testing.assert_close(fresh.syn_out.weight, net.syn_out.weight)
    plain = KWSNet(13, 2, chip="h1v2", hidden_size=16).state_dict()
    load_annealed_state(KWSNet(13, 2, chip="h1v2", hidden_size=16), plain)
    with pytest.raises(ValueError, match="weights are plain"):
        load_annealed_state(fresh, plain)
    names = dict(exposed_parameters(fresh))
    assert "syn_out.weight" in names and not any("parametrizations" in n for n in names)
    assert torch.equal(names["syn_out.weight"], fresh.syn_out.weight)
    exposed = fresh.syn_out.weight.detach().clone()
    bake_sign_blocks(fresh)
    assert not parametrize.is_parametrized(fresh) and isinstance(fresh.syn_out.weight, nn.Parameter)
    assert torch.equal(fresh.syn_out.weight, exposed) and violating_blocks(exposed) == []


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
