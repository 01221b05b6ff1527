"""The keyword-spotting network of vendor tutorial 4, built for any registered chip (``nwtrain.chips``).

    input [B, T, C] -> frontend -> frontend_layer -> syn_hidden -> hidden -> syn_out -> out -> spikes

With ``recurrent=True`` every hidden layer is an in-core recurrent layer (the SDK's
``layer_topology="RC"``): its own spikes return one step later through ``recurrent_weights``, within the
cores the chip's placement (``nwtrain.chips.placement``) puts its neurons on.

The LIF baseline may put a ``DelayLine`` (``frontend_delays_s``) between ``frontend_layer`` and
``syn_hidden``: the hidden synapse then sees every front-end spike train at several delays.

Deeper and wider variants keep the chain: ``hidden_size=[256, 128]`` inserts ``syn_hidden2 -> hidden2``
after ``hidden``, a layer's tau may be a list (heterogeneous time constants, one per neuron, cycled), and
``out_population=P`` gives each class P output neurons whose spike counts are summed (the decision is the
class with the most spikes).

The topology, time constants, surrogate and the split of the mismatch (dense synapses and the hidden and
output leaks; none in the front end) are the tutorial's. Each layer runs the whole sequence in one call,
which gives the tutorial's per-step loop bit for bit at a fraction of its Python overhead.

The chip's spec supplies the parts (``ChipSpec.parts``), checks the options (``ChipSpec.check``) and the
core budget (``nwtrain.chips.placement``): the hidden layers and the output population must fit the
chip's cores.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from nwtrain.chips import get_chip
from nwtrain.chips.placement import place
from nwtrain.core.layers import DelayLine, SpikingLayer, prepare_net, recurrent_layers
from nwtrain.core.quant import Quantizer
from nwtrain.core.surrogate import Surrogate, fast_sigmoid
from nwtrain.core.topology import core_block_mask


def layer_names(n_hidden: int) -> tuple[str, ...]:
    """The spiking layers of a KWSNet with ``n_hidden`` hidden layers: frontend, hidden, hidden2, ..., out."""
    return ("frontend", *("hidden" if i == 0 else f"hidden{i + 1}" for i in range(n_hidden)), "out")


def hidden_sizes(hidden_size: int | Sequence[int]) -> list[int]:
    """``hidden_size`` as a list of widths (one int: one hidden layer)."""
    sizes = [hidden_size] if isinstance(hidden_size, int) else list(hidden_size)
    if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
        raise ValueError(
            f"hidden_size must be a positive int or a non-empty list of them, got {hidden_size!r}"
        )
    return sizes


def neuron_taus(tau: float | Sequence[float], n: int) -> float | list[float]:
    """One layer's time constants: a number for every neuron, or a list cycled over the ``n`` neurons
    (``[15e-3, 45e-3]`` gives 15, 45, 15, 45, ... ms)."""
    if isinstance(tau, (int, float)):
        return float(tau)
    values = [float(t) for t in tau]
    if not values:
        raise ValueError("a layer's taus list is empty")
    return [values[i % len(values)] for i in range(n)]


def recurrence(core_ids: torch.Tensor, quantization_bit: int | None, stddev: float) -> dict:
    """An RC layer's options: its connections kept within the cores ``core_ids`` (per neuron) names, its
    recurrent weights on the dense synapses' grid and with their mismatch (a chip without either ignores
    them, as its dense synapses do)."""
    mask = core_block_mask(core_ids) if len(set(core_ids.tolist())) > 1 else None
    return {
        "layer_topology": "RC",
        "recurrent_mask": mask,
        "quantization_bit": quantization_bit,
        "stddev": stddev,
    }


def check_options(
    spec, sizes, taus, out_population, clamp_grad, frontend_delays_s, recurrent, adaptation_taus_s, stddev,
    ileak_mismatch, dropout,
) -> None:  # fmt: skip
    """ValueError (or the chip's ``DesignRuleError``) for options ``KWSNet`` cannot build on ``spec``."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    if len(taus) != len(sizes) + 2:
        raise ValueError(
            f"taus needs {len(sizes) + 2} entries (frontend, {len(sizes)} hidden, out), got {list(taus)}"
        )
    if out_population < 1:
        raise ValueError(f"out_population must be >= 1, got {out_population}")
    if adaptation_taus_s is not None:
        values = torch.as_tensor(adaptation_taus_s, dtype=torch.float64).flatten()
        if values.numel() == 0 or bool((values <= 0).any()):
            raise ValueError(f"adaptation_taus_s must be > 0 s (one or a list), got {adaptation_taus_s!r}")
    spec.check(
        stddev=stddev,
        ileak_mismatch=ileak_mismatch,
        clamp_grad=clamp_grad,
        frontend_delays_s=list(frontend_delays_s),
        recurrent=recurrent,
        adaptation_taus_s=adaptation_taus_s,
    )


def place_layers(spec, names, sizes, fit_chip: bool):
    """The layers ``names`` of ``sizes`` neurons on ``spec``'s cores; one that does not fit raises
    ValueError naming the budget, or with ``fit_chip`` False warns (a plain model, not deployable)."""
    placement = place(spec, dict(zip(names, sizes)))
    if not placement.fits:
        if fit_chip:
            raise ValueError(placement.message())
        warnings.warn(f"{placement.message()}: it will not deploy", UserWarning, stacklevel=3)
    return placement


def quantize_routed(model: KWSNet, quantizer: Quantizer | None, quantization_bit: int | None) -> None:
    """``quantizer`` (if any) on the weights the chip routes (dense synapses and recurrent weights), in place
    of the chip grid of ``quantization_bit``; the front-end gains keep theirs."""
    if quantizer is None:
        return
    if quantization_bit is not None:
        raise ValueError(
            f"quantizer={quantizer!r} and quantization_bit={quantization_bit} both quantise the weights"
        )
    for module in model.routed_modules().values():
        if isinstance(module, SpikingLayer):
            module.recurrent_quantizer = quantizer
        else:
            module.quantizer = quantizer


def neuron_builder(parts, dt: float, spike_grad: Surrogate, clamp_grad: float, device):
    """``layer(n, tau, ileak_mismatch, rc=None, adaptation_taus_s=None)``: a spiking layer of ``n`` neurons
    from the chip's ``parts``, its taus and adaptation taus cycled over them (``neuron_taus``)."""

    def layer(n, tau, ileak_mismatch, rc=None, adaptation_taus_s=None):
        adapt = None if adaptation_taus_s is None else neuron_taus(adaptation_taus_s, n)
        taus = neuron_taus(tau, n)
        return parts.neurons(n, taus, dt, ileak_mismatch, spike_grad, clamp_grad, device, rc, adapt)

    return layer


def drop_spikes(spikes: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Dropout on a spike train, for training: each spike kept with probability ``1 - p`` and scaled by
    ``1 / (1 - p)``, so the synapse's mean drive is the one it gets at evaluation, where nothing is
    dropped. The mask is drawn from ``generator`` (None: torch's global one) on its device."""
    generator = generator if generator is not None else torch.default_generator
    keep = torch.rand(spikes.shape, generator=generator, device=generator.device) >= p
    return spikes * keep.to(spikes.device) / (1.0 - p)


def uniform_init(bound: float):
    """Uniform(-bound, bound), the dense weights' init when ``dense_init_bound`` is set."""
    return lambda w: nn.init.uniform_(w, -bound, bound)


class KWSNet(nn.Module):
    """Tutorial 4's yes/no network (``H1v1YesNoNet`` / ``H1v1YesNoNetMismatch``) for ``chip`` (a name in
    ``nwtrain.chips.CHIPS``), with any number of hidden layers.

    ``hidden_size`` is one width or a list (one hidden layer each). ``taus`` are the membrane time
    constants in s of the front end, each hidden layer and the output, in that order; each is one value
    or a list cycled over the layer's neurons (``neuron_taus``). ``dt`` is the simulation step (the data's
    time bin). ``quantization_bit`` fake-quantises every synapse, front end included, to the chip's range
    (LIF: ``[-1, 1]``). ``stddev`` is the per-chip-instance weight offset of the dense synapses (H1v1 only:
    H1v2 has no synaptic mismatch model, LIF none at all) and ``ileak_mismatch`` the leak variability of
    the hidden and output neurons (chips only); the front end is always mismatch-free, as in the
    tutorial, for stability. ``out_population`` output neurons per class: the class's spike count is
    their sum. ``clamp_grad`` is the chip layers' backward slope of the membrane clamp (a training aid,
    ``dynamics.clamp_at_zero``).

    ``input_gain`` is a fixed scale from the data's filterbank features to the front-end input. The
    features (``nwtrain.data``) are mean rectified band outputs of a peak-normalised clip, in [0, ~0.4] for
    speech (mean ~0.02, 95th percentile ~0.1), while a front-end neuron at its default gain needs an input
    near 1 to outrun its leak; the gain stands for the filterbank's output level, which the features do not
    model (``conf/model/kws.yaml``: 40, so speech bins drive the front end and silence does not).
    ``frontend_delays_s`` (LIF only; empty: none) are the delays in s, multiples of ``dt``, at which
    the front-end spikes reach the first hidden synapse (``nwtrain.core.layers.DelayLine``): one weight per
    front-end neuron and delay, i.e. per-delay weights over the last ``max(frontend_delays_s)``.
    ``dense_init_bound`` sets a uniform init of the dense weights (None: torch's 1/sqrt(fan_in)); H1v2's
    weak linear synapse needs a larger one to wake its hidden layer.

    ``quantizer`` (``nwtrain.core.quant``: fixed point, ternary, binary) quantises the routed weights instead
    of the chip grid (``quantization_bit`` must then be None): the seeds' QAT schemes, not deployable as such.

    ``recurrent`` makes every hidden layer recurrent (``layer_topology="RC"``), its recurrent weights on the
    dense synapses' grid and with their mismatch (``quantization_bit``, ``stddev``), its connections only
    between neurons the placement puts on one core (``topology.core_block_mask``; a layer may span cores).

    ``adaptation_taus_s`` (LIF only; None: none) gives every hidden neuron an adaptation current of these
    time constants in s (``AdLIFLayer``, adLIF), one value or a list cycled over the layer's neurons.

    ``dropout`` (training only; 0: none) drops each spike entering a routed synapse, the hidden and output
    layers' inputs, with this probability (``drop_spikes``), a regulariser for a network that fits its
    training set; the deployed network is the same.

    ``placement`` is the network on the chip's cores (``nwtrain.chips.placement.place``). A network that
    does not fit raises ValueError naming the budget, unless ``fit_chip`` is False (a plain, not
    deployable model), which warns instead.

    ``forward(x, generator)`` resets the membranes, draws this batch's chip instance from ``generator``
    (a ``torch.Generator``; None: torch's global one) and returns each class's output spikes per step
    ``[B, T, n_classes]`` (summed over its population). The spikes of every layer stay in ``self.traces``
    (with their graph), by ``layer_names``, for the firing-rate loss.
    """

    def __init__(
        self,
        n_channels: int,
        n_classes: int,
        chip: str = "h1v1",
        hidden_size: int | Sequence[int] = 64,
        taus: Sequence[float | Sequence[float]] = (10e-3, 64e-3, 64e-3),
        dt: float = 8e-3,
        quantization_bit: int | None = None,
        stddev: float = 0.0,
        ileak_mismatch: bool = False,
        surrogate: Surrogate | None = None,
        frontend_gain: float | None = None,
        input_gain: float = 1.0,
        dense_init_bound: float | None = None,
        out_population: int = 1,
        clamp_grad: float = 0.0,
        frontend_delays_s: Sequence[float] = (),
        recurrent: bool = False,
        adaptation_taus_s: float | Sequence[float] | None = None,
        quantizer: Quantizer | None = None,
        dropout: float = 0.0,
        fit_chip: bool = True,
        device=None,
    ):
        super().__init__()
        spec = get_chip(chip)
        sizes = hidden_sizes(hidden_size)
        check_options(
            spec, sizes, taus, out_population, clamp_grad, frontend_delays_s, recurrent, adaptation_taus_s,
            stddev, ileak_mismatch, dropout,
        )  # fmt: skip
        self.chip, self.recurrent = chip, bool(recurrent)
        self.n_channels, self.n_classes = int(n_channels), int(n_classes)
        self.hidden_size, self.out_population = (sizes[0] if len(sizes) == 1 else sizes), int(out_population)
        self.dt, self.input_gain, self.dropout = float(dt), float(input_gain), float(dropout)
        self.layer_names = layer_names(len(sizes))
        self.placement = place_layers(
            spec, self.layer_names[1:], [*sizes, n_classes * out_population], fit_chip
        )
        parts = spec.parts()
        layer = neuron_builder(parts, dt, surrogate or fast_sigmoid(slope=25.0), clamp_grad, device)
        gain = spec.frontend_gain if frontend_gain is None else float(frontend_gain)
        self.frontend = parts.frontend(n_channels, gain, quantization_bit, device)
        self.frontend_layer = layer(n_channels, taus[0], False)
        self.delays = DelayLine(n_channels, frontend_delays_s, dt) if len(frontend_delays_s) else None
        # Each stage a routed synapse and its layer, registered in the chain's order (export walks it so).
        init = None if dense_init_bound is None else uniform_init(dense_init_bound)
        n_first = n_channels if self.delays is None else self.delays.n_outputs
        widths = [n_first, *sizes, n_classes * out_population]
        for i, name in enumerate(self.layer_names[1:]):
            rc = recurrence(self.placement.core_ids(name), quantization_bit, stddev) if recurrent else None
            self.add_module(
                f"syn_{name}", parts.dense(widths[i], widths[i + 1], init, quantization_bit, stddev, device)
            )
            hidden = (rc, adaptation_taus_s) if i < len(sizes) else ()  # the output neither recurs nor adapts
            self.add_module(name, layer(widths[i + 1], taus[i + 1], ileak_mismatch, *hidden))
        quantize_routed(self, quantizer, quantization_bit)
        self.traces: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        prepare_net(self, generator=generator)
        spk, _ = self.frontend_layer(self.frontend(x * self.input_gain))
        self.traces = {"frontend": spk}
        if self.delays is not None:
            spk = self.delays(spk)
        for name in self.layer_names[1:]:
            if self.training and self.dropout:
                spk = drop_spikes(spk, self.dropout, generator)
            spk, _ = getattr(self, name)(getattr(self, f"syn_{name}")(spk))
            self.traces[name] = spk
        if self.out_population == 1:
            return spk
        return spk.unflatten(-1, (self.n_classes, self.out_population)).sum(-1)

    def dense_synapses(self) -> tuple[nn.Module, ...]:
        """The routed synapses the sign-topology loss applies to (tutorial 4: hidden and output)."""
        return tuple(getattr(self, f"syn_{name}") for name in self.layer_names[1:])

    def routed_modules(self) -> dict[str, nn.Module]:
        """Every module whose weights the chip routes in sign blocks, by name: the dense synapses, then the
        recurrent layers (``layers.routed_weight`` gives their matrices)."""
        routed = {f"syn_{name}": getattr(self, f"syn_{name}") for name in self.layer_names[1:]}
        return routed | {n: m for n, m in self.named_children() if m in recurrent_layers(self)}

    def param_groups(self, lr_frontend: float, lr_core: float) -> list[dict]:
        """Tutorial 4's two Adam groups: the few front-end gains learn 100x slower than the core."""
        front = [*self.frontend.parameters(), *self.frontend_layer.parameters()]
        front_ids = {id(p) for p in front}
        core = [p for p in self.parameters() if id(p) not in front_ids]
        return [
            {"params": front, "lr": lr_frontend, "name": "frontend"},
            {"params": core, "lr": lr_core, "name": "core"},
        ]
