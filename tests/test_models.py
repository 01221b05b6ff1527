"""KWSNet: tutorial 4's topology for every chip, the sequence path against the tutorial's per-step loop,
parameter groups, quantisation and the mismatch split."""

import warnings

import pytest
import torch

from nwtrain.chips import CHIPS, h1v1, h1v2
from nwtrain.chips.placement import OFF_CHIP, place
from nwtrain.layers import (
    DelayLine,
    H1v1Frontend,
    H1v1Layer,
    H1v1Synapse,
    H1v2Layer,
    LIFLayer,
    prepare_net,
    synapses,
)
from nwtrain.models.kws import KWSNet

warnings.filterwarnings("ignore", "Frontend on chip uses 16 filters")

MISMATCH = {"h1v1": dict(stddev=0.02, ileak_mismatch=True), "h1v2": dict(ileak_mismatch=True), "lif": {}}


def make(chip_name, **kw):
    torch.manual_seed(0)
    return KWSNet(13, 2, chip=chip_name, hidden_size=10, **kw)


def features(batch=3, steps=20, seed=1):
    return 0.2 * torch.rand(batch, steps, 13, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chip_name", CHIPS)
def test_sequence_forward_equals_the_tutorials_step_loop(chip_name):
    net = make(chip_name, quantization_bit=5, **MISMATCH[chip_name])
    x = features()
    out = net(x, torch.Generator().manual_seed(3))
    traces = dict(net.traces)

    prepare_net(net, generator=torch.Generator().manual_seed(3))
    steps = {"frontend": [], "hidden": [], "out": []}
    for t in range(x.shape[1]):
        spk0, _ = net.frontend_layer(net.frontend(x[:, t] * net.input_gain))
        spk1, _ = net.hidden(net.syn_hidden(spk0))
        spk2, _ = net.out(net.syn_out(spk1))
        for name, spk in zip(steps, (spk0, spk1, spk2)):
            steps[name].append(spk)
    assert out.shape == (3, 20, 2)
    for name, spk in steps.items():
        torch.testing.assert_close(traces[name], torch.stack(spk, dim=1), rtol=0, atol=0)


def test_topology_and_classes_follow_the_chip():
    layer_cls = {"h1v1": H1v1Layer, "h1v2": H1v2Layer, "lif": LIFLayer}
    for name in CHIPS:
        net = make(name)
        assert all(isinstance(m, layer_cls[name]) for m in (net.frontend_layer, net.hidden, net.out))
        assert net.syn_hidden.weight.shape == (13, 10) and net.syn_out.weight.shape == (10, 2)
        assert net.frontend.weight.numel() == 13
    assert isinstance(make("h1v1").frontend, H1v1Frontend)
    assert isinstance(make("h1v1").syn_hidden, H1v1Synapse)
    assert make("h1v1").hidden.taus.tolist() == pytest.approx([45e-3] * 10)  # 64 ms snaps to 45 ms on H1v1


@pytest.mark.parametrize("chip_name", ["lif", "h1v2"])
def test_diagonal_front_ends_keep_channels_apart(chip_name):
    net = make(chip_name)
    x = torch.zeros(1, 13)
    x[0, 4] = 1.0
    prepare_net(net)
    y = net.frontend(x)
    assert y[0, 4] > 0 and torch.count_nonzero(y) == 1


def test_param_groups_split_front_end_from_core_and_cover_every_parameter():
    net = make("h1v1")
    front, core = net.param_groups(1e-5, 1e-3)
    assert (front["lr"], core["lr"]) == (1e-5, 1e-3)
    assert [id(p) for p in front["params"]] == [id(net.frontend.weight)]
    assert {id(p) for p in core["params"]} == {id(net.syn_hidden.weight), id(net.syn_out.weight)}
    assert len(front["params"]) + len(core["params"]) == len(list(net.parameters()))


@pytest.mark.parametrize("chip_name", CHIPS)
def test_quantization_puts_every_synapse_on_the_chip_grid(chip_name):
    net = make(chip_name, quantization_bit=5)
    limit = CHIPS[chip_name].weight_limit
    step = 2 * limit / 31
    for syn in synapses(net):
        w = syn.effective_weight().detach()
        codes = (w + limit) / step
        torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
        assert w.abs().max() <= limit + 1e-6


def test_mismatch_only_where_the_tutorial_puts_it():
    net = make("h1v1", quantization_bit=5, stddev=0.02, ileak_mismatch=True)
    assert net.frontend.stddev == 0 and not net.frontend_layer.ileak_mismatch
    assert net.syn_hidden.stddev == net.syn_out.stddev == 0.02
    assert net.hidden.ileak_mismatch and net.out.ileak_mismatch
    x = features()
    a = net(x, torch.Generator().manual_seed(1)).detach()
    w1 = net.syn_hidden.effective_weight().detach()
    net(x, torch.Generator().manual_seed(2))
    assert not torch.equal(net.syn_hidden.effective_weight().detach(), w1)  # a new chip instance
    assert torch.equal(net(x, torch.Generator().manual_seed(1)).detach(), a)  # the same chip again
    plain = make("h1v1")
    first = plain(x, torch.Generator().manual_seed(1)).detach()
    assert torch.equal(plain(x, torch.Generator().manual_seed(2)).detach(), first)


def test_weight_limits_are_the_chip_ranges():
    assert CHIPS["h1v1"].weight_limit == h1v1.WEIGHT_LIMIT_V
    assert CHIPS["h1v2"].weight_limit == h1v2.WEIGHT_LIMIT_V
    assert CHIPS["lif"].weight_limit == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(chip="h3"), "unknown chip 'h3'; choose one of lif, h1v1, h1v2"),
        (
            dict(chip="h1v2", stddev=0.02),
            "stddev=0.02: H1v2 has no synaptic mismatch model; stddev is an option of H1v1",
        ),
        (dict(chip="lif", ileak_mismatch=True), "no leak mismatch"),
        (dict(taus=(1e-2, 1e-2)), "taus needs 3"),
        (
            dict(chip="h1v2", frontend_delays_s=[0.0, 8e-3]),
            r"frontend_delays_s=\[0.0, 0.008\]: H1v2 has no synaptic delays",
        ),
        (dict(dropout=1.0), r"dropout must be a probability in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"dropout must be a probability in \[0, 1\), got -0.1"),
        (dict(dropout="0.2"), r"dropout must be a probability in \[0, 1\), got '0.2'"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KWSNet(13, 2, **kwargs)


def test_input_gain_scales_the_front_end_drive():
    x = features()
    quiet = make("h1v1", input_gain=1.0)
    loud = make("h1v1", input_gain=40.0)
    quiet(x)
    loud(x)
    assert quiet.traces["frontend"].sum() < loud.traces["frontend"].sum()


@pytest.mark.parametrize("chip_name", CHIPS)
def test_deeper_network_with_heterogeneous_taus_and_an_output_population(chip_name):
    torch.manual_seed(0)
    taus = [10e-3, [15e-3, 45e-3, 135e-3], 405e-3, 135e-3]
    net = KWSNet(
        13, 3, chip=chip_name, hidden_size=[12, 7], taus=taus, out_population=4, **MISMATCH[chip_name]
    )
    assert net.layer_names == ("frontend", "hidden", "hidden2", "out")
    assert [n for n, _ in net.named_children()] == [
        "frontend",
        "frontend_layer",
        "syn_hidden",
        "hidden",
        "syn_hidden2",
        "hidden2",
        "syn_out",
        "out",
    ]
    assert net.syn_hidden2.weight.shape == (12, 7) and net.syn_out.weight.shape == (7, 12)
    effective = {"h1v1": [15e-3, 45e-3, 135e-3], "h1v2": [13.82e-3, 55.28e-3, 110.56e-3]}.get(chip_name)
    assert net.hidden.taus[:6].tolist() == pytest.approx((effective or [15e-3, 45e-3, 135e-3]) * 2, rel=1e-6)
    out = net(features(), torch.Generator().manual_seed(3))
    assert out.shape == (3, 20, 3) and set(net.traces) == set(net.layer_names)
    raw = net.traces["out"]
    assert raw.shape == (3, 20, 12)
    torch.testing.assert_close(out, raw.view(3, 20, 3, 4).sum(-1))
    groups = net.param_groups(1e-5, 1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(net.dense_synapses()) == 3


@pytest.mark.parametrize("chip_name", CHIPS)
def test_dropout_thins_the_spikes_into_each_routed_synapse_in_training_only(chip_name):
    net = make(chip_name, recurrent=True, input_gain=40.0, dropout=0.25)
    x = features(batch=16, steps=60)
    plain = make(chip_name, recurrent=True, input_gain=40.0)
    plain.eval()
    net.eval()
    torch.testing.assert_close(
        net(x, torch.Generator().manual_seed(3)), plain(x, torch.Generator().manual_seed(3))
    )

    net.train()
    seen = {}
    for name in ("hidden", "out"):
        synapse = getattr(net, f"syn_{name}")
        synapse.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, args[0].detach())
        )
    net(x, torch.Generator().manual_seed(5))
    spikes = {"hidden": net.traces["frontend"].detach(), "out": net.traces["hidden"].detach()}
    for name, into in seen.items():
        fired = spikes[name] > 0
        assert fired.sum() > 200, name
        values = into[fired]
        assert bool(((values == 0) | torch.isclose(values, torch.tensor(1 / 0.75))).all()), name
        kept = (values > 0).float().mean().item()
        assert kept == pytest.approx(0.75, abs=0.05), name
        assert bool((into[~fired] == 0).all()), name
    first = dict(seen)
    again = net(x, torch.Generator().manual_seed(5))
    assert all(torch.equal(first[n], seen[n]) for n in first)  # the generator alone decides the mask
    again.sum().backward()
    assert net.syn_hidden.weight.grad is not None and net.syn_hidden.weight.grad.abs().sum() > 0


def test_model_options_are_checked():
    with pytest.raises(ValueError, match="taus needs 4 entries"):
        KWSNet(13, 2, hidden_size=[8, 8], taus=[10e-3, 64e-3, 64e-3])
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        KWSNet(13, 2, hidden_size=[8, 0], taus=[10e-3, 64e-3, 64e-3, 64e-3])
    with pytest.raises(ValueError, match="out_population must be >= 1"):
        KWSNet(13, 2, out_population=0)
    with pytest.raises(ValueError, match="no membrane clamp"):
        KWSNet(13, 2, chip="lif", clamp_grad=0.3)


def test_a_delay_line_repeats_its_inputs_whole_steps_later_in_sequence_and_step_mode():
    line = DelayLine(3, [0.0, 16e-3, 8e-3], dt=8e-3)
    x = torch.arange(1.0, 13.0).view(1, 4, 3)
    y = line(x)
    zero = torch.zeros(1, 3)
    expected = [
        torch.cat([x[:, t], x[:, t - 2] if t >= 2 else zero, x[:, t - 1] if t >= 1 else zero], dim=1)
        for t in range(4)
    ]
    torch.testing.assert_close(y, torch.stack(expected, dim=1))
    prepare_net(line)
    torch.testing.assert_close(torch.stack([line(x[:, t]) for t in range(4)], dim=1), y)
    prepare_net(line)  # a new batch starts from silence
    torch.testing.assert_close(line(x[:, :2]), y[:, :2])
    torch.testing.assert_close(line(x[:, 2:]), y[:, 2:])  # a sequence continues across calls


@pytest.mark.parametrize(
    ("delays", "message"),
    [
        ([0.0, 10e-3], "0.01 s is not a multiple >= 0 of dt = 0.008 s"),
        ([-8e-3], "-0.008 s is not a multiple >= 0"),
        ([], "non-empty"),
        ([0.0, 0.0], "repeats"),
    ],
)
def test_a_delay_line_names_bad_delays(delays, message):
    with pytest.raises(ValueError, match=message):
        DelayLine(3, delays, dt=8e-3)


def test_frontend_delays_give_the_hidden_synapse_one_weight_per_input_and_delay():
    torch.manual_seed(0)
    net = KWSNet(13, 2, chip="lif", hidden_size=10, input_gain=40.0, frontend_delays_s=[0.0, 24e-3, 48e-3])
    assert net.syn_hidden.weight.shape == (39, 10)
    x = features(steps=30)
    out = net(x)
    assert [n for n, _ in net.named_children()][:4] == ["frontend", "frontend_layer", "delays", "syn_hidden"]
    out.sum().backward()
    grad = net.syn_hidden.weight.grad.view(3, 13, 10)
    assert all(bool(grad[k].abs().sum() > 0) for k in range(3))  # every delay learns
    assert sum(len(g["params"]) for g in net.param_groups(1e-3, 1e-3)) == len(list(net.parameters()))


# ---------------------------------------------------------------------------------------------------------
# Chips as specs, and the core map
# ---------------------------------------------------------------------------------------------------------
def test_a_chip_is_one_module_that_registers_its_spec(monkeypatch):
    """What docs/chip_model.md asks of a new chip: a module that registers a ChipSpec (here H1v2's parts on
    two cores of 8), after which a KWSNet builds on it by name and is placed on its cores."""
    from nwtrain.chips import ChipSpec, register
    from nwtrain.chips import h1v2 as h1v2_module

    monkeypatch.setattr("nwtrain.chips.CHIPS", dict(CHIPS))
    toy = register(
        ChipSpec(
            name="toy",
            label="Toy",
            parts=h1v2_module.SPEC.parts,
            weight_limit=1.0,
            weight_bits=4,
            frontend_gain=0.5,
            core_sizes=(8, 8),
            sign_blocks=True,
        )
    )
    net = KWSNet(13, 2, chip="toy", hidden_size=10, out_population=3)
    assert net(features()).shape == (3, 20, 2)
    assert net.placement.core_ids("hidden").tolist() == [0] * 8 + [1] * 2
    assert net.placement.core_ids("out").tolist() == [1] * 6
    with pytest.raises(
        ValueError, match=r"^Toy has 16 neurons in 2 cores of 8; this model needs 17 \(hidden 11, out 6\)$"
    ):
        KWSNet(13, 2, chip="toy", hidden_size=11, out_population=3)
    with pytest.raises(ValueError, match="ileak_mismatch=True: Toy has no leak mismatch model"):
        KWSNet(13, 2, chip="toy", ileak_mismatch=True)
    assert toy.budget() == "Toy has 16 neurons in 2 cores of 8"


def test_placement_fills_the_cores_greedily_and_a_layer_spans_them():
    placement = place(CHIPS["h1v2"], {"hidden": 120, "hidden2": 30, "out": 50})
    assert placement.fits and placement.needed == 200
    ids = torch.cat([placement.core_ids(n) for n in ("hidden", "hidden2", "out")])
    assert ids.dtype == torch.long and torch.bincount(ids).tolist() == [50, 50, 100]
    assert placement.segments["hidden"] == [(0, 0, 50), (1, 50, 100), (2, 100, 120)]
    assert placement.to_json()["layers"][2] == {"name": "out", "neurons": 50, "cores": [[2, 0, 50]]}
    over = place(CHIPS["h1v1"], {"hidden": 1024, "out": 100})
    assert not over.fits and over.core_ids("out").tolist() == [OFF_CHIP] * 100
    assert (
        over.message()
        == "H1v1 has 256 neurons in 4 cores of 64; this model needs 1124 (hidden 1024, out 100)"
    )
    assert place(CHIPS["lif"], {"hidden": 5000, "out": 10}).fits  # no chip, no budget


def test_a_network_over_the_budget_is_refused_unless_it_need_not_deploy():
    with pytest.raises(ValueError, match=r"this model needs 276 \(hidden 256, out 20\)"):
        KWSNet(13, 2, chip="h1v2", hidden_size=256, out_population=10)
    with pytest.warns(UserWarning, match=r"H1v2 has 200 neurons .*: it will not deploy"):
        net = KWSNet(13, 2, chip="h1v2", hidden_size=256, out_population=10, fit_chip=False)
    assert not net.placement.fits


def test_the_h1v1_front_end_starts_at_the_specs_gain():
    from nwtrain.layers import H1v1Frontend

    assert torch.all(H1v1Frontend().weight == CHIPS["h1v1"].frontend_gain)


@pytest.mark.parametrize("chip", ["lif", "h1v2"])
def test_a_front_end_stored_as_one_row_loads_as_its_channels(chip):
    """Checkpoints of 0.1 hold the LIF and H1v2 front-end gains as ``[1, C]``; every front end is now
    ``[C]`` (``nwtrain.core.layers.Diagonal``), and those checkpoints load into it unchanged in value."""
    net = KWSNet(13, 2, chip=chip, hidden_size=8)
    with torch.no_grad():
        net.frontend.weight.copy_(torch.linspace(0.1, 0.9, 13))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["frontend.weight"] = state["frontend.weight"].reshape(1, -1)
    other = KWSNet(13, 2, chip=chip, hidden_size=8)
    other.load_state_dict(state)
    assert other.frontend.weight.shape == (13,)
    assert torch.equal(other.frontend.weight, net.frontend.weight)
