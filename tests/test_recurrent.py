"""In-core recurrence (the SDK's ``layer_topology="RC"``) on the LIF, H1v1 and H1v2 layers: the recurrent
synapse is the chip's feed-forward synapse one step late (the tutorials' single-spike golden numbers); core
masks hold exactly 0 in training, in the exposed weight, in export and in chipsim; the fused kernels equal
the reference loop and their backward is the true derivative; mismatch comes from the explicit generator;
SignAnnealing leaves no recurrent block mixed (tutorial 2, section 7); a recurrent hardware-aware H1v1 run
exports with no violation and its artefact agrees with the model on every clip."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import compose_config, tiny_cache, tiny_overrides
from hydra.utils import instantiate
from test_kernels import HAS_TRITON, INTERPRETED, MARGIN, assert_fused_equals_reference, ramp
from test_kernels import backend as kernel_backend
from torch import nn
from torch.autograd import gradcheck
from torch.nn.utils import parametrize

from nwtrain import kernels
from nwtrain.chips import get_chip
from nwtrain.chips.placement import place
from nwtrain.cli.export import export_checkpoint
from nwtrain.core.dynamics import recurrent_current
from nwtrain.core.quant import RangeQuantizer, TernaryQuantizer
from nwtrain.core.topology import core_block_mask, violating_blocks
from nwtrain.deploy import chipsim
from nwtrain.deploy.export import export_model, network_stages, programmed_weights
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
    routed_weight,
)
from nwtrain.loss import topology_loss, weight_magnitude_loss
from nwtrain.models.kws import KWSNet
from nwtrain.optim import SignAnnealing
from nwtrain.runs import train
from nwtrain.surrogate import triangle

ROOT = Path(__file__).resolve().parents[1]
CHIPS = ["lif", "h1v1", "h1v2"]
backend = kernel_backend  # test_kernels' fixture: numba, and Triton where it runs


def rc_layer(kind, n, **kw):
    """An RC layer of ``kind`` at tutorial 2's settings (dt 1 ms, tau 10 ms)."""
    if kind == "lif":
        return LIFLayer(n, taus=10e-3, thresholds=1.0, dt=1e-3, layer_topology="RC", **kw)
    return {"h1v1": H1v1Layer, "h1v2": H1v2Layer}[kind](n, taus=10e-3, dt=1e-3, layer_topology="RC", **kw)


# -------------------------------------------------------------------------------------------------------
# The layer and its equation
# -------------------------------------------------------------------------------------------------------
def test_layer_topology_is_ff_or_rc():
    assert not hasattr(H1v1Layer(4), "recurrent_weights") and H1v1Layer(4).layer_topology == "FF"
    for kind in CHIPS:
        layer = rc_layer(kind, 4)
        assert isinstance(layer.recurrent_weights, nn.Parameter) and layer.recurrent_weights.shape == (4, 4)
        assert layer.recurrent_mask is None
    with pytest.raises(ValueError, match="layer_topology must be one of"):
        H1v2Layer(4, layer_topology="rc")
    with pytest.raises(ValueError, match="belong to layer_topology='RC'"):
        LIFLayer(4, recurrent_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool \[4, 4\]"):
        rc_layer("h1v1", 4, recurrent_mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no synaptic mismatch"):
        rc_layer("h1v2", 4, stddev=0.02)


@pytest.mark.parametrize("kind,peak", [("lif", 0.9000), ("h1v1", 0.1973), ("h1v2", 0.0786)])
@pytest.mark.parametrize("mode", ["sequence", "steps"])
def test_a_spike_reaches_its_core_one_step_later_through_the_chips_synapse(kind, peak, mode, monkeypatch):
    """Neuron 0 fires at step 5; neuron 1, with no input of its own, sees it through recurrent weight 0.9
    at step 6 exactly as tutorial 2's lone spike through a feed-forward synapse of weight 0.9 (LIF 0.9,
    H1v1 19.7304 nA = 0.1973 V, H1v2 0.0786 V)."""
    monkeypatch.setenv(kernels.ENV_VAR, "auto")
    layer = rc_layer(kind, 2)
    with torch.no_grad():
        layer.recurrent_weights.copy_(torch.tensor([[0.0, 0.9], [0.0, 0.0]]))
    x = torch.zeros(1, 12, 2)
    x[0, 5, 0] = {"lif": 1.5, "h1v1": 25.0, "h1v2": 0.5}[kind]  # one input step that makes neuron 0 fire
    prepare_net(layer)
    if mode == "sequence":
        spk, mem = layer(x)
    else:
        spk, mem = (torch.stack(o, 1) for o in zip(*(layer(x[:, t]) for t in range(12))))
    assert spk[0, :, 0].nonzero().flatten().tolist() == [5] and spk[0, :, 1].sum() == 0
    assert mem[0, :6, 1].abs().max() == 0
    assert mem[0, 6, 1].item() == pytest.approx(peak, abs=5e-5)


def test_recurrent_current_is_the_previous_spikes_through_g():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = recurrent_current(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]), g)
    torch.testing.assert_close(out, torch.tensor([[3.5, 4.5]]))


# -------------------------------------------------------------------------------------------------------
# Cores and masks
# -------------------------------------------------------------------------------------------------------
def test_core_block_mask_and_placement_in_order():
    mask = core_block_mask(torch.tensor([0, 0, 1, 1, 1]))
    assert mask.dtype == torch.bool and mask.tolist() == [
        [True, True, False, False, False],
        [True, True, False, False, False],
        [False, False, True, True, True],
        [False, False, True, True, True],
        [False, False, True, True, True],
    ]
    # H1v2's cores hold 50, 50 and 100: a hidden layer of 60 spans the first two, the output goes on
    ids = place(get_chip("h1v2"), {"hidden": 60, "out": 2}).core_ids("hidden")
    assert ids.tolist() == [0] * 50 + [1] * 10


def test_kwsnet_places_its_recurrent_hidden_layer_on_cores():
    net = KWSNet(16, 2, chip="h1v2", hidden_size=60, recurrent=True)
    expected = core_block_mask(torch.tensor([0] * 50 + [1] * 10))  # the layer spans two cores
    assert torch.equal(net.hidden.recurrent_mask, expected) and net.hidden.layer_topology == "RC"
    assert net.out.layer_topology == "FF" and net.frontend_layer.layer_topology == "FF"
    assert list(net.routed_modules()) == ["syn_hidden", "syn_out", "hidden"]
    assert KWSNet(16, 2, chip="lif", hidden_size=6, recurrent=True).hidden.recurrent_mask is None
    assert KWSNet(16, 2, chip="h1v1", hidden_size=12, recurrent=True).hidden.recurrent_mask is None  # 1 core


def masked_h1v1_net():
    torch.manual_seed(0)
    net = KWSNet(
        16,
        2,
        chip="h1v1",
        hidden_size=70,
        recurrent=True,
        quantization_bit=5,
        stddev=0.02,
        dense_init_bound=0.9,
        dt=8e-3,
    )
    with torch.no_grad():  # connections over the whole range, so the hidden layer talks to itself
        net.hidden.recurrent_weights.uniform_(-0.9, 0.9).mul_(net.hidden.recurrent_mask)
    return net


def test_masked_connections_are_exactly_zero_in_training_and_the_exposed_weight():
    net = masked_h1v1_net()
    cut = ~net.hidden.recurrent_mask
    annealer = SignAnnealing(net, total_epochs=4)
    assert parametrize.is_parametrized(net.hidden, "recurrent_weights")
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-2)
    x = 3 * torch.rand(4, 30, 16, generator=torch.Generator().manual_seed(1))
    for epoch in range(4):
        annealer.step(net, epoch)
        out = net(x, torch.Generator().manual_seed(epoch))
        assert net.hidden._recurrent_offset[cut].abs().sum() > 0  # mismatch is drawn everywhere...
        assert (net.hidden.effective_recurrent_weights()[cut] == 0).all()  # ...and cut with the connection
        loss = (out.sum() - 20) ** 2 + net.traces["hidden"].mean() + topology_loss(net.hidden, 0.05)
        loss = loss + weight_magnitude_loss(net, limit=0.9)
        optimizer.zero_grad()
        loss.backward()
        original = net.hidden.parametrizations.recurrent_weights.original
        assert (original.grad[cut] == 0).all() and original.grad[~cut].abs().sum() > 0
        optimizer.step()
    w = net.hidden.recurrent_weights
    assert (w[cut] == 0).all() and (w[~cut] != 0).all() and violating_blocks(w) == []


def test_masked_connections_are_absent_from_the_artefact_and_chipsim(tmp_path):
    net = masked_h1v1_net()
    SignAnnealing(net, total_epochs=1).step(net, 0)
    net.hidden.stddev = net.syn_hidden.stddev = net.syn_out.stddev = 0.0  # a nominal chip exports
    meta, dep = export_model(net, tmp_path, classes=["a", "b"], features={})
    rec = meta["stages"][1]["layer"]["recurrent"]
    assert meta["version"] == chipsim.VERSION == 2 and dep.violations == []
    assert rec["kind"] == "recurrent" and rec["delay_steps"] == 1 and rec["connections"] == 64 * 64 + 6 * 6
    assert rec["sign_blocks"]["mixed"] == 0
    art = chipsim.load_artefact(tmp_path)
    mask = art.array(rec["mask"])
    assert np.array_equal(mask, net.hidden.recurrent_mask.numpy())
    g = chipsim.recurrent_matrix(art, meta["stages"][1]["layer"])
    assert (g[~mask] == 0).all() and (g[mask] != 0).all()
    assert (net.hidden.recurrent_weights[~net.hidden.recurrent_mask] == 0).all()  # programmed as 0
    weights = programmed_weights(network_stages(net))["hidden.recurrent_weights"]
    assert torch.equal(weights, net.hidden.recurrent_weights.detach())


# -------------------------------------------------------------------------------------------------------
# Fused kernels
# -------------------------------------------------------------------------------------------------------
def build(kind, mask=True):
    """A synapse and an RC layer with mismatch and quantisation (H1v1: synaptic offsets and leaks; H1v2:
    leaks; LIF: a ternary quantiser, learnt taus and thresholds), masked to cores of 4 and 6."""
    torch.manual_seed(1)
    core = core_block_mask(torch.tensor([0] * 4 + [1] * 6)) if mask else None
    if kind == "lif":
        q = TernaryQuantizer(0.7)
        layer = LIFLayer(
            10,
            taus=torch.linspace(4e-3, 30e-3, 10),
            thresholds=0.3,
            learn_taus=True,
            learn_thresholds=True,
            layer_topology="RC",
            recurrent_mask=core,
            quantizer=q,
        )
        return nn.ModuleList([LIFSynapse(6, 10, quantizer=q), layer])
    if kind == "h1v1":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            frontend = H1v1Frontend(6, quantization_bit=5, init=lambda w: nn.init.uniform_(w, 0.2, 0.9))
        layer = H1v1Layer(
            10,
            taus=64e-3,
            dt=8e-3,
            ileak_mismatch=True,
            layer_topology="RC",
            recurrent_mask=core,
            quantization_bit=5,
            stddev=0.02,
        )
        with torch.no_grad():
            layer.recurrent_weights.uniform_(-0.5, 0.9)
        synapse = H1v1Synapse(6, 10, quantization_bit=5, stddev=0.02)
        return nn.ModuleList([frontend, H1v1Layer(6, taus=10e-3, dt=8e-3), synapse, layer])
    layer = H1v2Layer(
        10,
        taus=20e-3,
        dt=1e-3,
        ileak_mismatch=True,
        layer_topology="RC",
        recurrent_mask=core,
        quantization_bit=5,
    )
    with torch.no_grad():
        layer.recurrent_weights.uniform_(-1.0, 1.66)
    synapse = H1v2Synapse(6, 10, quantization_bit=5, init=lambda w: nn.init.uniform_(w, -0.5, 1.66))
    return nn.ModuleList([synapse, layer])


def inputs(kind, dtype, steps=50):
    g = torch.Generator().manual_seed(2)
    if kind == "h1v1":
        return 3 * torch.rand(4, steps, 6, generator=g, dtype=dtype)
    return (torch.rand(4, steps, 6, generator=g) < 0.4).to(dtype)


def exact_forward(backend) -> bool:
    """Whether the fused recurrent forward can equal the reference bit for bit. On the GPU the reference's
    recurrent input ``s[t-1] @ G`` is a cuBLAS product, which sums the rows in its own order, while the
    Triton kernel adds them in index order: on an H200 the membranes differed by up to 6.5e-5 in float32
    (on a membrane of 33, 2e-6 of it) and 7.8e-16 in float64 (docs/kernels.md, "On a GPU"). On the CPU both
    add in index order."""
    return backend.device != "cuda"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", CHIPS)
def test_fused_equals_reference(kind, dtype, backend, monkeypatch):
    """Forward bit for bit (to rounding on the GPU: see ``exact_forward``), gradients (recurrent weights
    included) to 1e-5 in float32."""
    net, x = build(kind).to(dtype), inputs(kind, dtype)
    assert_fused_equals_reference(net, x, backend, monkeypatch, exact_forward=exact_forward(backend))


def test_fused_equals_reference_all_to_all_and_wide(backend, monkeypatch):
    """No mask, and more neurons than a feed-forward Triton program holds (128): one program per row."""
    torch.manual_seed(1)
    layer = H1v2Layer(130, taus=20e-3, dt=1e-3, ileak_mismatch=True, layer_topology="RC", quantization_bit=5)
    with torch.no_grad():
        layer.recurrent_weights.uniform_(-0.3, 0.5)
    synapse = H1v2Synapse(6, 130, quantization_bit=5, init=lambda w: nn.init.uniform_(w, -0.5, 1.66))
    steps = 12 if backend.interpreted else 50
    x = inputs("h1v2", torch.float32, steps)
    net = nn.ModuleList([synapse, layer])
    assert_fused_equals_reference(net, x, backend, monkeypatch, exact_forward=exact_forward(backend))


@pytest.mark.parametrize("kind", CHIPS)
def test_state_carries_across_calls_with_gradients(kind, backend, monkeypatch):
    """Two half-sequences and one step at a time after one prepare_net: the spikes of the last step reach
    the next call through the recurrence, and gradients flow back through them."""
    net = build(kind).to(backend.device)
    x = inputs(kind, torch.float32, steps=20).to(backend.device)
    results = []
    runs = [("reference", [x]), (backend.path, [x[:, :9], x[:, 9:]]), (backend.path, list(x.unbind(1)))]
    for path, parts in runs:
        monkeypatch.setenv(kernels.ENV_VAR, path)
        prepare_net(net, generator=torch.Generator().manual_seed(5))
        net.zero_grad()
        spikes = []
        for part in parts:
            h = part
            for m in net:
                h = m(h)
                h = h[0] if isinstance(h, tuple) else h
            spikes.append(h if h.dim() == 3 else h[:, None])
        out = torch.cat(spikes, 1)
        (out * ramp(out)).sum().backward()
        results.append([out.detach()] + [p.grad.clone() for p in net.parameters()])
    assert results[0][0].sum() > 0
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def rc_args(seed, device, n=4, steps=15):
    g = torch.Generator().manual_seed(seed)
    recurrent = 0.4 * torch.rand(n, n, generator=g, dtype=torch.float64) - 0.1
    spk0 = (torch.rand(2, n, generator=g) < 0.5).double()
    return g, [t.to(device) for t in (recurrent, spk0)]


# The surrogate's derivative is 0 at every step (a triangle narrower than any distance to the threshold),
# so the analytic gradient is the true derivative of the piecewise-smooth forward: through the membranes,
# the recurrent weights and the initial spikes. The surrogate path is checked against the reference above.
NO_SLOPE = triangle(MARGIN / 2)


def test_gradcheck_lif_recurrent(backend):
    g, (recurrent, spk0) = rc_args(0, backend.device)
    current = 0.6 * torch.rand(2, 15, 4, generator=g, dtype=torch.float64)
    mem0 = 0.3 * torch.rand(2, 4, generator=g, dtype=torch.float64)
    decay = torch.tensor([0.5, 0.7, 0.85, 0.95], dtype=torch.float64)
    threshold = torch.tensor([0.6, 0.8, 1.0, 1.2], dtype=torch.float64)
    args = [t.to(backend.device).requires_grad_() for t in (current, mem0, decay, threshold, recurrent, spk0)]
    module = backend.module()
    spikes, _, pre = module.lif_forward(*args[:4], "subtraction", *args[4:])
    assert spikes.sum() > 5 and ((pre - args[3]).abs() > MARGIN).all()

    def mems(c, m, d, th, r, s):
        return LIFSequence.apply(c, m, d, th, "subtraction", NO_SLOPE, module, r, s)[1]

    assert gradcheck(mems, tuple(args), fast_mode=backend.interpreted)


@pytest.mark.parametrize("reset,scale", [("zero", 0.01), ("subtraction", 1.0)])
def test_gradcheck_linear_leak_recurrent(reset, scale, backend):
    g, (recurrent, spk0) = rc_args(3, backend.device)
    recurrent = recurrent / scale
    current = (0.25 * torch.rand(2, 15, 4, generator=g, dtype=torch.float64) - 0.08) / scale
    mem0 = 0.1 * torch.rand(2, 4, generator=g, dtype=torch.float64)
    vleak = torch.tensor([0.01, 0.03, 0.05, 0.08], dtype=torch.float64)
    vt = torch.tensor(0.3, dtype=torch.float64)
    args = [t.to(backend.device).requires_grad_() for t in (current, mem0, vleak, vt, recurrent, spk0)]
    module = backend.module()
    spikes, mems, pre, _ = module.leak_forward(*args[:4], scale, reset, *args[4:])
    prev = torch.cat([args[1][:, None], mems[:, :-1]], 1)
    total = args[0] + torch.cat([args[5][:, None], spikes[:, :-1]], 1) @ args[4]
    leaked = prev - args[2]
    clamp_inputs = [leaked[prev > 0], pre[pre != 0], (leaked.clamp_min(0) + scale * total)[pre == 0]]
    assert spikes.sum() > 5 and (pre == 0).any() and ((pre - args[3]).abs() > MARGIN).all()
    assert all((c.abs() > MARGIN).all() for c in clamp_inputs)

    def membranes(c, m, vl, v, r, s):
        return LinearLeakSequence.apply(c, m, vl, v, scale, reset, NO_SLOPE, module, 0.0, r, s)[1]

    assert gradcheck(membranes, tuple(args), fast_mode=backend.interpreted)


@pytest.mark.skipif(not HAS_TRITON or INTERPRETED, reason="runs the Triton cases in a subprocess")
@pytest.mark.slow
def test_triton_cases_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(kernels.ENV_VAR, None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton", __file__]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert " passed" in proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not HAS_TRITON or INTERPRETED, reason="needs Triton's compiler")
def test_recurrent_triton_kernels_compile_without_fma(monkeypatch, tmp_path):
    """The recurrent variants compile for an H100 and hold no fused multiply-add (the bit-for-bit forward
    rests on it, as for the feed-forward ones in test_kernels_triton.py)."""
    import triton
    from test_kernels_triton import _compile_instead_of_launch

    from nwtrain.kernels import cuda

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this Triton has no NVIDIA backend")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    compiled = {}
    for name in ("lif_forward", "lif_backward", "leak_forward", "leak_backward"):
        kernel = getattr(cuda, f"_{name}_kernel")
        monkeypatch.setattr(kernel, "run", _compile_instead_of_launch(kernel, 90, compiled))
    seq, mem0, vec, rec = (torch.zeros(s) for s in ((2, 3, 5), (2, 5), (5,), (5, 5)))
    spikes, mems, _ = cuda.lif_forward(seq, mem0, vec, vec, "subtraction", rec, mem0)
    *_, flags = cuda.leak_forward(seq, mem0, vec, vec[0], 0.01, "subtraction", rec, mem0)
    cuda.lif_backward(seq, seq, spikes, mems, mem0, vec, "subtraction", True, rec, seq)
    cuda.leak_backward(seq, seq, flags, 0.01, 0.0, "subtraction", True, rec, seq)
    assert len(compiled) == 4 and all(dict(key[2])["RECURRENT"] for key in compiled)
    for key, asm in compiled.items():
        assert not re.search(r"\bfma\.", asm["ptx"]), f"fused multiply-add in the PTX of {key}"


# -------------------------------------------------------------------------------------------------------
# Mismatch and quantisation
# -------------------------------------------------------------------------------------------------------
def test_recurrent_mismatch_and_quantisation_are_the_feed_forward_ones():
    layer = rc_layer("h1v1", 10, quantization_bit=5, stddev=0.02)
    quantizer = layer.recurrent_quantizer
    assert isinstance(quantizer, RangeQuantizer) and (quantizer.bits, quantizer.limit) == (5, 0.9)
    state = torch.random.get_rng_state()
    draws = []
    for seed in (7, 7, 8):
        prepare_net(layer, generator=torch.Generator().manual_seed(seed))
        draws.append(layer.effective_recurrent_weights().detach())
    assert torch.equal(torch.random.get_rng_state(), state)  # the explicit generator only
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    offsets = draws[0] - quantizer(layer.recurrent_weights).detach()
    assert 0.015 < offsets.std().item() < 0.025
    assert rc_layer("h1v2", 10, quantization_bit=5).recurrent_quantizer.limit == get_chip("h1v2").weight_limit
    net = KWSNet(16, 2, chip="h1v1", hidden_size=8, recurrent=True, quantization_bit=5, stddev=0.02)
    assert net.hidden.stddev == net.syn_hidden.stddev == 0.02
    assert net.hidden.recurrent_quantizer.bits == 5
    assert routed_weight(net.hidden, programmed=True).unique().numel() <= 32


# -------------------------------------------------------------------------------------------------------
# SignAnnealing: tutorial 2, section 7, for an RC layer
# -------------------------------------------------------------------------------------------------------
class ToyH2RCNet(nn.Module):
    """Tutorial 2's ToyH2Net with an RC layer behind its synapse: the membranes follow the targets."""

    def __init__(self, n_in, n_out=2):
        super().__init__()
        self.syn = H1v2Synapse(n_in, n_out, init=lambda w: nn.init.uniform_(w, -1.66, 1.66))
        self.rc = H1v2Layer(n_out, taus=20e-3, dt=1e-3, layer_topology="RC")
        with torch.no_grad():
            self.rc.recurrent_weights.uniform_(-1.66, 1.66)

    def forward(self, x):
        prepare_net(self)
        return self.rc(self.syn(x))[1]


def test_tutorial2_section7_for_recurrent_weights_ends_with_every_block_uniform():
    torch.manual_seed(0)
    n_in, n_out = 12, 25
    x_fake = 2 * torch.rand(1, 128, n_in)  # the tutorial's random data, as non-negative currents
    y_fake = 0.1 * torch.rand(1, 128, n_out)
    net = ToyH2RCNet(n_in, n_out)
    W_unconstrained = net.rc.recurrent_weights.detach().clone()
    epochs = 10
    sign_annealer = SignAnnealing(net, total_epochs=epochs, alpha_start=0.5, alpha_end=12.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-2)
    loss_hist = []
    for epoch in range(1, epochs + 1):
        sign_annealer.step(net, epoch)
        pred = net(x_fake)
        loss = torch.mean((pred - y_fake) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_hist.append(float(loss.item()))
    W_final = net.rc.recurrent_weights.detach()
    assert W_final.shape == (25, 25)  # 25 rows x 5 blocks: 125 sign blocks
    assert len(violating_blocks(W_unconstrained)) > 100 and violating_blocks(W_final) == []
    assert W_final.abs().max() <= get_chip("h1v2").weight_limit and (W_final != 0).all()
    assert parametrize.is_parametrized(net.rc, "recurrent_weights")
    assert net.rc.parametrizations.recurrent_weights.original.grad.abs().sum() > 0  # the spikes fed back
    assert loss_hist[-1] < loss_hist[0]


# -------------------------------------------------------------------------------------------------------
# Configuration and export of a trained recurrent network
# -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


def test_kws_speech_rc_config_builds_a_recurrent_network_on_cores(cache):
    cfg = compose_config(
        [*tiny_overrides(cache), "model=kws_speech_rc", "model.hidden_size=192", "paths.output_dir=unused"]
    )
    model = instantiate(cfg.model, n_channels=13, n_classes=2, device="cpu")
    assert model.hidden.layer_topology == "RC" and model.hidden.n_neurons == 192
    # three cores of H1v1 hold the hidden layer, the fourth the output population
    assert model.hidden.recurrent_mask.sum().item() == 3 * 64 * 64
    assert model.hidden.recurrent_quantizer.bits == cfg.model.quantization_bit


def test_a_recurrent_hardware_aware_h1v1_run_exports_clean_and_chipsim_agrees(cache, tmp_path):
    overrides = [
        "experiment=yesno_h1v1_hw",
        "model.dense_init_bound=0.9",
        "model.hidden_size=70",
        "trainer.epochs=10",
        "optim.lr_core=1e-2",
        "model.recurrent=true",
        "logger=jsonl",
    ]
    run = tmp_path / "run"
    train(compose_config(tiny_overrides(cache, f"paths.output_dir={run}", *overrides)))
    from test_deploy import export_cfg

    out = tmp_path / "export"
    result = export_checkpoint(export_cfg(run / "checkpoints" / "last.ckpt", out, cache))
    meta = json.loads((out / chipsim.EXPORT_JSON).read_text())
    rec = meta["stages"][1]["layer"]["recurrent"]
    assert meta["constraints"]["violations_found"] == 0 and not meta["constraints"]["projected"]
    assert rec["sign_blocks"]["mixed"] == 0 and rec["connections"] == 64 * 64 + 6 * 6  # cores of 64 and 6
    assert result["class_agreement"] == 1.0 and result["identical_spike_trains"]
    assert result["spike_counts"]["hidden"]["model"] > 0
