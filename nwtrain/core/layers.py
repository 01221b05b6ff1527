"""Synapses and neuron layers: the LIF baseline's and the generic chip neuron and synapse the chip modules
(``nwtrain.chips.h1v1``, ``nwtrain.chips.h1v2``) specialise with their constants and transfer.

Public names and constructor arguments mirror the vendor SDK of the tutorials, so their code runs with
only ``nwavesdk`` replaced by ``nwtrain`` in the imports.

Every synapse and layer takes one time step ``[B, N]`` (stateful, as in the tutorials' loops) or a whole
sequence ``[B, T, N]`` in one call, with identical results. ``prepare_net`` must run before each batch:
it clears the membranes and draws a new chip instance (mismatch) when mismatch is enabled.

Tensors are parameters (trained), buffers (constants such as thresholds and leaks) or state (membranes
and mismatch draws, renewed by ``prepare_net``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nwtrain import kernels
from nwtrain.core.dynamics import (
    RESET_MECHANISMS,
    adlif_step,
    lif_step,
    linear_leak_step,
    recurrent_current,
    run_sequence,
)
from nwtrain.core.quant import Quantizer, RangeQuantizer
from nwtrain.core.surrogate import Surrogate, fast_sigmoid

log = logging.getLogger(__name__)

DEFAULT_SURROGATE_SLOPE = 25.0  # tutorial 4 uses fast_sigmoid(slope=25) on every layer
# The SDK's layer_topology: feed-forward, or recurrent within the layer's core ("RC").
TOPOLOGIES = ("FF", "RC")


def resolve_device(device) -> torch.device:
    """``'cpu'``, ``'gpu'`` (the SDK's name for CUDA), ``'cuda[:i]'``, ``'auto'`` (CUDA when present, else
    the CPU) or a ``torch.device``; None is the CPU. ValueError for another name or device type,
    RuntimeError for CUDA on a machine without it."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.lower() in ("gpu", "auto"):
        device = "cuda" if device.lower() == "gpu" or torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:<i>") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {str(device)!r}; use auto, cpu, cuda or cuda:<i>")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!s} was requested but CUDA is not available on this machine")
    return device


def _per_neuron(value, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} values for {n} neurons")
    return t.clone()


def profile_ids(taus_s: torch.Tensor, profiles_s: Sequence[float]) -> torch.Tensor:
    """The index of the hardware leak profile nearest each tau, nearest by ratio (in log time)."""
    if bool((taus_s <= 0).any()):
        raise ValueError(f"taus must be > 0 s, got {taus_s.tolist()}")
    table = torch.tensor(profiles_s, dtype=torch.float64)
    return (taus_s.double().log()[:, None] - table.log()[None, :]).abs().argmin(dim=1)


def snap_tau(taus_s: torch.Tensor, profiles_s: Sequence[float]) -> torch.Tensor:
    """Nearest hardware profile to each requested tau (``profile_ids``), in s."""
    return torch.tensor(profiles_s, dtype=torch.float64)[profile_ids(taus_s, profiles_s)].float()


def _default_init(fan_in: int):
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's nn.Linear default."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return lambda w: nn.init.uniform_(w, -bound, bound)


def _draw_offset(stddev: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """A chip instance's programming error of the weights ``like``: Gaussian of ``stddev``, or None."""
    if stddev <= 0:
        return None
    z = torch.randn(like.shape, generator=generator, device=generator.device)
    return (stddev * z).to(like)


def _programmed(w: torch.Tensor, quantizer: Quantizer | None, offset: torch.Tensor | None) -> torch.Tensor:
    """``quantizer(w) + offset``: what the chip's memory holds plus this chip instance's error."""
    w = w if quantizer is None else quantizer(w)
    return w if offset is None else w + offset


def _check_stddev(stddev) -> float:
    if stddev is not None and stddev < 0:
        raise ValueError(f"stddev must be >= 0, got {stddev}")
    if stddev:
        # The SDK's own words: tutorial 4 prints this line for every synapse it builds.
        log.info("Synapse mismatch at stddev = %s has now been enabled", stddev)
    return float(stddev or 0.0)


# -------------------------------------------------------------------------------------------------------
# Neuron layers
# -------------------------------------------------------------------------------------------------------
class SpikingLayer(nn.Module):
    """Holds the membrane state and runs one step or a whole sequence through ``_step``.

    ``layer_topology="RC"`` adds in-core recurrence (``dynamics.recurrent_current``): the parameter
    ``recurrent_weights [N, N]`` (row: the neuron that spiked) reaches the layer's own input one step later
    through the chip's synapse (``transfer``), quantised by ``quantizer`` and offset by this chip
    instance's mismatch of ``stddev`` as a feed-forward synapse of the chip is. ``recurrent_mask`` (bool
    ``[N, N]``, a buffer; None: all-to-all) keeps only the connections the core placement allows
    (``topology.core_block_mask``): the others are exactly 0 in the weight, its gradient and the current.
    State: the spikes of the last step ``spk``, cleared by ``prepare_net``.
    """

    SIGN_BLOCKS = False  # the chip layers route their recurrent weights in sign blocks
    STATE_SHAPE: tuple[int, ...] = ()  # state variables per neuron beyond the membrane (adLIF: (2,))
    WEIGHT_LIMIT_V: float | None = None

    def __init__(
        self,
        n_neurons: int,
        dt: float,
        spike_grad: Surrogate | None,
        device,
        layer_topology: str = "FF",
        recurrent_mask: torch.Tensor | None = None,
        quantizer: Quantizer | None = None,
        stddev: float = 0.0,
    ):
        super().__init__()
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        if layer_topology not in TOPOLOGIES:
            raise ValueError(
                f"layer_topology must be one of {TOPOLOGIES} (feed-forward or in-core recurrent), "
                f"got {layer_topology!r}"
            )
        self.n_neurons = int(n_neurons)
        self.dt = float(dt)
        self.spike_grad = spike_grad if spike_grad is not None else fast_sigmoid(DEFAULT_SURROGATE_SLOPE)
        self.device_ = resolve_device(device)
        self.layer_topology = layer_topology
        self.mem: torch.Tensor | None = None
        self.spk: torch.Tensor | None = None
        self.collect_metrics = False
        self.spike_count: torch.Tensor | None = None
        self.sample_steps = 0
        self.stddev = _check_stddev(stddev)
        if not self.recurrent:
            if recurrent_mask is not None or quantizer is not None or self.stddev:
                raise ValueError(
                    "recurrent_mask, the recurrent quantisation and stddev belong to layer_topology='RC'"
                )
            return
        n = self.n_neurons
        if recurrent_mask is not None:
            recurrent_mask = torch.as_tensor(recurrent_mask, device=self.device_)
            if recurrent_mask.dtype != torch.bool or recurrent_mask.shape != (n, n):
                raise ValueError(
                    f"recurrent_mask must be a bool [{n}, {n}] tensor, got {recurrent_mask.dtype} "
                    f"{list(recurrent_mask.shape)}"
                )
        self.register_buffer("recurrent_mask", recurrent_mask)
        self.recurrent_quantizer = quantizer
        self.recurrent_weights = nn.Parameter(torch.empty(n, n, device=self.device_))
        with torch.no_grad():
            _default_init(n)(self.recurrent_weights)
            if recurrent_mask is not None:
                self.recurrent_weights.mul_(recurrent_mask)
        self._recurrent_offset: torch.Tensor | None = None

    @property
    def recurrent(self) -> bool:
        return self.layer_topology == "RC"

    def _step_fn(self, mem: torch.Tensor, current: torch.Tensor, *args):
        """The model's pure step function (``nwtrain.core.dynamics``) with this layer's fixed options."""
        raise NotImplementedError

    def _step_args(self) -> tuple:
        """Parameters handed to the pure step function after ``(mem, input)``."""
        raise NotImplementedError

    def _fused(self, mem: torch.Tensor, current: torch.Tensor, recurrent, spk):
        """``run_sequence``'s result from a fused kernel (``nwtrain.kernels``), or None to run it;
        ``recurrent`` is ``G [N, N]`` or None, ``spk`` the spikes of the step before (RC)."""
        return None

    def prepare(self, generator: torch.Generator) -> None:
        self.mem = None
        self.spk = None
        if self.recurrent:
            self._recurrent_offset = _draw_offset(self.stddev, self.recurrent_weights, generator)

    def transfer(self, w: torch.Tensor) -> torch.Tensor:
        """The chip synapse: a programmed weight to the current this layer integrates (LIF: itself)."""
        return w

    def effective_recurrent_weights(self) -> torch.Tensor:
        """This chip instance's recurrent weights: quantised plus offset, exactly 0 where masked (a
        missing connection has neither a level nor an error)."""
        w = _programmed(self.recurrent_weights, self.recurrent_quantizer, self._recurrent_offset)
        return w if self.recurrent_mask is None else torch.where(self.recurrent_mask, w, 0.0)

    def forward(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate input ``current`` and return ``(spk, mem)``, as the SDK's layers do.

        ``current`` is ``[B, N]`` (one step) or ``[B, T, N]`` (a sequence, run by a fused kernel where one
        is available), in the unit of the synapse in front (H1v1: nA, H1v2: V, LIF: membrane units). ``spk``
        (0 / 1, with the surrogate's gradient) and ``mem`` (the membrane after the step's reset) have the
        shape of ``current``. The membrane (and, for an RC layer, the last spikes) carry over to the next
        call until ``prepare_net`` resets them, so a sequence may be fed whole or step by step.
        """
        if current.dim() not in (2, 3) or current.shape[-1] != self.n_neurons:
            raise ValueError(
                f"{type(self).__name__} expects [B, {self.n_neurons}] or [B, T, {self.n_neurons}], "
                f"got {tuple(current.shape)}"
            )
        batch = current.shape[0]
        if self.mem is None or self.mem.shape[0] != batch:
            self.mem = current.new_zeros(batch, *self.STATE_SHAPE, self.n_neurons)
        g = None
        if self.recurrent:
            g = self.transfer(self.effective_recurrent_weights())
            if self.spk is None or self.spk.shape[0] != batch:
                self.spk = current.new_zeros(batch, self.n_neurons)
        if current.dim() == 2:
            step_input = current if g is None else recurrent_current(current, self.spk, g)
            spk, self.mem = self._step(self.mem, step_input)
            mem_out = self.mem
        else:
            fused = self._fused(self.mem, current, g, self.spk)
            if fused is None:
                fused = run_sequence(
                    self._step_fn, self.mem, current, *self._step_args(), recurrent=g, spk=self.spk
                )
            spk, mem_out, self.mem = fused
        if g is not None:
            self.spk = spk if spk.dim() == 2 else spk[:, -1]
        return spk, self._membrane(mem_out)

    def _membrane(self, state: torch.Tensor) -> torch.Tensor:
        """The membrane potential in the neuron's state: the state itself, or with ``STATE_SHAPE`` ahead of
        the neuron axis its first variable."""
        return state.select(-2, 0) if self.STATE_SHAPE else state

    def _step(self, mem, current):
        return self._step_fn(mem, current, *self._step_args())


class LIFLayer(SpikingLayer):
    """Software leaky integrate-and-fire neuron (see ``dynamics.lif_step``).

    ``learn_taus`` stores the decay ``_d_taus = exp(-dt/tau)`` as a parameter, ``learn_thresholds`` the
    ``thresholds``; otherwise both are buffers.
    """

    def __init__(
        self,
        n_neurons: int,
        taus=20e-3,
        thresholds=1.0,
        reset_mechanism: str = "subtraction",
        dt: float = 1e-3,
        learn_taus: bool = False,
        learn_thresholds: bool = False,
        spike_grad: Surrogate | None = None,
        device=None,
        layer_topology: str = "FF",
        recurrent_mask: torch.Tensor | None = None,
        quantizer: Quantizer | None = None,
    ):
        super().__init__(n_neurons, dt, spike_grad, device, layer_topology, recurrent_mask, quantizer)
        if reset_mechanism not in RESET_MECHANISMS:
            raise ValueError(f"reset_mechanism must be one of {RESET_MECHANISMS}, got {reset_mechanism!r}")
        self.reset_mechanism = reset_mechanism
        taus_t = _per_neuron(taus, self.n_neurons, "taus")
        if bool((taus_t <= 0).any()):
            raise ValueError(f"taus must be > 0 s, got {taus_t.tolist()}")
        thresholds_t = _per_neuron(thresholds, self.n_neurons, "thresholds").to(self.device_)
        d_taus = torch.exp(-self.dt / taus_t).to(self.device_)
        # Registration order puts thresholds first, as the SDK lists its parameters.
        if learn_thresholds:
            self.thresholds = nn.Parameter(thresholds_t)
        else:
            self.register_buffer("thresholds", thresholds_t)
        if learn_taus:
            self._d_taus = nn.Parameter(d_taus)
        else:
            self.register_buffer("_d_taus", d_taus)

    @property
    def taus(self) -> torch.Tensor:
        """Membrane time constants in s, from the decay factor."""
        return -self.dt / torch.log(self._d_taus.detach())

    def _step_fn(self, mem, current, decay, threshold):
        return lif_step(mem, current, decay, threshold, self.reset_mechanism, self.spike_grad)

    def _step_args(self):
        return self._d_taus, self.thresholds

    def _fused(self, mem, current, recurrent, spk):
        return kernels.lif_sequence(
            current, mem, self._d_taus, self.thresholds, self.reset_mechanism, self.spike_grad, recurrent, spk
        )


class AdLIFLayer(LIFLayer):
    """LIF neuron with an adaptation current (adLIF, see ``dynamics.adlif_step``): the LIF baseline's
    research option, not a chip's (the vendor documents no adaptation).

    ``adaptation_taus`` (s, one or per neuron) is a buffer. ``a`` and ``b`` are trained per neuron, drawn
    from U(-1, 1) and U(0, 2) and clamped to those ranges in the step (Bittar and Garner 2022), so the
    adaptation stays stable whatever the optimiser does. State: ``mem [B, 2, N]``, the membrane and the
    adaptation current; ``forward`` returns the membrane as the other layers do.
    """

    STATE_SHAPE = (2,)
    A_RANGE = (-1.0, 1.0)
    B_RANGE = (0.0, 2.0)

    def __init__(self, n_neurons: int, adaptation_taus=200e-3, **lif_options):
        super().__init__(n_neurons, **lif_options)
        adaptation_t = _per_neuron(adaptation_taus, self.n_neurons, "adaptation_taus")
        if bool((adaptation_t <= 0).any()):
            raise ValueError(f"adaptation_taus must be > 0 s, got {adaptation_t.tolist()}")
        self.register_buffer("_d_adapt", torch.exp(-self.dt / adaptation_t).to(self.device_))
        self.a = nn.Parameter(torch.empty(self.n_neurons, device=self.device_).uniform_(*self.A_RANGE))
        self.b = nn.Parameter(torch.empty(self.n_neurons, device=self.device_).uniform_(*self.B_RANGE))

    @property
    def adaptation_taus(self) -> torch.Tensor:
        """Adaptation time constants in s."""
        return -self.dt / torch.log(self._d_adapt)

    def _step_fn(self, state, current, decay, threshold, adapt_decay, a, b):
        return adlif_step(
            state, current, decay, threshold, adapt_decay, a, b, self.reset_mechanism, self.spike_grad
        )

    def _step_args(self):
        a, b = self.a.clamp(*self.A_RANGE), self.b.clamp(*self.B_RANGE)
        return self._d_taus, self.thresholds, self._d_adapt, a, b

    def _fused(self, mem, current, recurrent, spk):
        return kernels.unfused("no fused kernel for the adaptive LIF layer")


class ChipLayer(SpikingLayer):
    """Linear-leak chip neuron (see ``dynamics.linear_leak_step``): fixed chip threshold ``_vt``, tau snapped
    to the chip's leak profiles, optional per-neuron leak mismatch. It has no trainable parameter.

    Buffers: ``_vt`` (V), ``taus`` (effective drain times, s), ``_Ileak`` (nominal leak currents, A);
    ``Vleak`` (V per step) is state: the nominal leak times this batch's mismatch factors.

    ``clamp_grad`` is a training option, not physics: the backward slope of the membrane's clamp at 0
    where it clamps (``dynamics.clamp_at_zero``; 0, the default, is the exact derivative).

    An RC layer's recurrent weights live on the chip's grid: ``quantization_bit`` levels over its range,
    ``stddev`` its synaptic mismatch (H1v1 only), ``lif_threshold`` as for its synapses.
    """

    SIGN_BLOCKS = True
    SYNAPTIC_MISMATCH: bool

    V_THRESHOLD_V: float
    TAU_PROFILES_S: tuple[float, ...]
    C_MEM_F: float
    LEAK_LOGNORMAL_SIGMA: float
    RESET: str

    def __init__(
        self,
        n_neurons: int,
        taus=20e-3,
        dt: float = 1e-3,
        ileak_mismatch: bool = False,
        spike_grad: Surrogate | None = None,
        device=None,
        clamp_grad: float = 0.0,
        layer_topology: str = "FF",
        recurrent_mask: torch.Tensor | None = None,
        quantization_bit: int | None = None,
        stddev: float = 0.0,
        lif_threshold: float = 1.0,
    ):
        if stddev and not self.SYNAPTIC_MISMATCH:
            raise ValueError(f"stddev={stddev}: {type(self).__name__} has no synaptic mismatch model")
        quantizer = Synapse._range_quantizer(quantization_bit, self.WEIGHT_LIMIT_V)
        super().__init__(n_neurons, dt, spike_grad, device, layer_topology, recurrent_mask, quantizer, stddev)
        self.lif_threshold = float(lif_threshold)
        if not 0.0 <= clamp_grad <= 1.0:
            raise ValueError(f"clamp_grad must lie in [0, 1], got {clamp_grad}")
        self.clamp_grad = float(clamp_grad)
        self.ileak_mismatch = bool(ileak_mismatch)
        taus_eff = snap_tau(_per_neuron(taus, self.n_neurons, "taus"), self.TAU_PROFILES_S)
        self.register_buffer("_vt", torch.tensor(self.V_THRESHOLD_V, device=self.device_))
        self.register_buffer("taus", taus_eff.to(self.device_))
        # tau is the drain time from threshold to zero: tau = C * vt / I_leak.
        self.register_buffer("_Ileak", (self.C_MEM_F * self.V_THRESHOLD_V / taus_eff).to(self.device_))
        self.register_buffer("Vleak", self._nominal_vleak(), persistent=False)

    def _nominal_vleak(self) -> torch.Tensor:
        return self._Ileak * self.dt / self.C_MEM_F

    def prepare(self, generator):
        super().prepare(generator)
        vleak = self._nominal_vleak()
        if self.ileak_mismatch:
            # Log-normal leak factor of median 1 (chip.leak_lognormal_sigma explains the width).
            z = torch.randn(self.n_neurons, generator=generator, device=generator.device)
            vleak = vleak * torch.exp(self.LEAK_LOGNORMAL_SIGMA * z).to(vleak)
        self.Vleak = vleak

    def _step_fn(self, mem, dv, vleak, vt):
        return linear_leak_step(mem, dv, vleak, vt, self.RESET, self.spike_grad, self.clamp_grad)

    def _step_args(self):
        return self.Vleak, self._vt

    def _fused(self, mem, dv, recurrent, spk, scale=1.0):
        return kernels.linear_leak_sequence(
            dv, mem, self.Vleak, self._vt, self.RESET, self.spike_grad, scale, self.clamp_grad, recurrent, spk
        )


# -------------------------------------------------------------------------------------------------------
# Synapses
# -------------------------------------------------------------------------------------------------------
InitFn = Callable[[torch.Tensor], object]


class Synapse(nn.Module):
    """Weight ``[inputs, outputs]`` (``[channels]`` for the diagonal front end) and its chip transfer.

    The effective weight is ``quantizer(weight) + offset``: the fake-quantised value the chip's memory
    holds plus this chip instance's programming error (``stddev``, redrawn by ``prepare_net``). The
    ``transfer`` turns it into what the next layer integrates.
    """

    WEIGHT_LIMIT_V: float | None = None
    SIGN_BLOCKS = False

    def __init__(self, shape, fan_in, init, quantizer, stddev, device):
        super().__init__()
        self.device_ = resolve_device(device)
        self.weight = nn.Parameter(torch.empty(*shape, device=self.device_))
        with torch.no_grad():
            (init or _default_init(fan_in))(self.weight)
        self.quantizer = quantizer
        self.stddev = _check_stddev(stddev)
        self._offset: torch.Tensor | None = None

    @staticmethod
    def _range_quantizer(quantization_bit, limit) -> Quantizer | None:
        return None if quantization_bit is None else RangeQuantizer(quantization_bit, limit)

    def prepare(self, generator: torch.Generator) -> None:
        self._offset = _draw_offset(self.stddev, self.weight, generator)

    def effective_weight(self) -> torch.Tensor:
        return _programmed(self.weight, self.quantizer, self._offset)

    def transfer(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The current ``[..., outputs]`` of spikes (or any input) ``x [..., inputs]``: ``x @ transfer(w)``,
        ``w`` the programmed weight of this chip instance (quantised, offset, annealed)."""
        return x @ self.transfer(self.effective_weight())


class LIFSynapse(Synapse):
    """Dense synapse of the LIF baseline: ``I = x @ W (+ b)``; the weight is the membrane jump.

    ``quantizer`` plugs in any scheme of ``nwtrain.core.quant`` (n-bit, fixed point, ternary, binary).
    """

    def __init__(
        self,
        nb_inputs: int,
        nb_outputs: int,
        init: InitFn | None = None,
        use_bias: bool = False,
        quantizer: Quantizer | None = None,
        device=None,
    ):
        super().__init__((nb_inputs, nb_outputs), nb_inputs, init, quantizer, 0.0, device)
        self.bias = nn.Parameter(torch.zeros(nb_outputs, device=self.device_)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W (+ b)``: the membrane jump of each output per step."""
        out = super().forward(x)
        return out if self.bias is None else out + self.bias


class Diagonal:
    """A front end: one gain per channel, weight ``[C]``, ``y_c = x_c * transfer(w_c)``. Every chip's front
    end is one (H1v1's own class, the others' synapse made diagonal by ``diagonal``)."""

    SIGN_BLOCKS = False  # one weight per channel, not a routed dense block: no sign constraint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The front end's current per channel: each filter's envelope ``x [..., channels]`` times its own
        gain."""
        return x * self.transfer(self.effective_weight())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if (
            key in state_dict and state_dict[key].dim() == 2
        ):  # [1, C]: a checkpoint of 0.1's LIF / H1v2 front end
            state_dict[key] = state_dict[key].reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@functools.cache
def diagonal(synapse: type) -> type:
    """``synapse`` as a front end (``Diagonal``), built as ``diagonal(synapse)(n_channels, **options)``: the
    front end of a chip without a front-end class of its own, so the input still reaches each front-end
    neuron through one trainable weight."""

    def __init__(self, n_channels: int, **options):
        synapse.__init__(self, 1, n_channels, **options)
        self.weight = nn.Parameter(self.weight.detach().reshape(-1))

    return type(f"Diagonal{synapse.__name__}", (Diagonal, synapse), {"__init__": __init__})


def delay_steps(delay_s: float, dt: float) -> int:
    """``delay_s`` as a whole number of ``dt`` steps; ValueError unless it is a multiple >= 0 of ``dt``."""
    steps = round(delay_s / dt)
    if delay_s < 0 or abs(steps * dt - delay_s) > 1e-6 * dt:
        raise ValueError(f"{delay_s} s is not a multiple >= 0 of dt = {dt} s")
    return steps


class DelayLine(nn.Module):
    """Fixed axonal delays: each input reaches the next synapse once per delay (the LIF baseline's option;
    the H1 chips deliver a spike in the step it fires and have none):

        y[t] = [x[t - d_0], x[t - d_1], ..., x[t - d_(D-1)]]      x[t] = 0 before the first step

    ``[B, T, N] -> [B, T, D * N]`` (or one step ``[B, N] -> [B, D * N]``), delay-major: outputs
    ``k*N .. k*N + N-1`` are the inputs delayed by ``delays_s[k]``. The synapse after it holds one weight
    per input and delay, so a neuron can weigh what its inputs did over the last ``max(delays_s)``, which
    one leak per neuron cannot (docs/accuracy.md, "What limits the accuracy"). State: the last
    ``max(delays)`` inputs, cleared by ``prepare_net``.
    """

    def __init__(self, n_inputs: int, delays_s: Sequence[float], dt: float):
        super().__init__()
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        delays = [float(d) for d in delays_s]
        if not delays:
            raise ValueError("delays_s must be a non-empty list of delays in s")
        steps = [delay_steps(d, dt) for d in delays]
        if len(set(steps)) != len(steps):
            raise ValueError(f"delays_s {delays} repeats a delay")
        self.n_inputs = int(n_inputs)
        self.steps = tuple(steps)
        self.n_outputs = self.n_inputs * len(steps)
        self.history: torch.Tensor | None = None

    def prepare(self, generator: torch.Generator | None = None) -> None:
        self.history = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3) or x.shape[-1] != self.n_inputs:
            raise ValueError(
                f"DelayLine expects [B, {self.n_inputs}] or [B, T, {self.n_inputs}], got {tuple(x.shape)}"
            )
        seq = x if x.dim() == 3 else x[:, None]
        depth, steps = max(self.steps), seq.shape[1]
        if self.history is None or self.history.shape[0] != seq.shape[0]:
            self.history = seq.new_zeros(seq.shape[0], depth, self.n_inputs)
        past_and_now = torch.cat([self.history, seq], dim=1)
        out = torch.cat([past_and_now[:, depth - d : depth - d + steps] for d in self.steps], dim=2)
        self.history = past_and_now[:, past_and_now.shape[1] - depth :]
        return out if x.dim() == 3 else out[:, 0]


# -------------------------------------------------------------------------------------------------------
def prepare_net(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Reset every layer's state and draw a new chip instance; call before each batch and after any
    change to the weights.

    Mismatch is drawn from ``generator`` (default: torch's global CPU generator, so ``torch.manual_seed``
    makes runs repeatable); draws happen on the generator's device and are moved to the module's.
    """
    generator = generator if generator is not None else torch.default_generator
    for m in module.modules():
        if isinstance(m, (SpikingLayer, Synapse, DelayLine)):
            m.prepare(generator)
    return module


def synapses(module: nn.Module) -> list[Synapse]:
    """Every synapse (dense or front end) in ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, Synapse)]


def spiking_layers(module: nn.Module) -> list[SpikingLayer]:
    return [m for m in module.modules() if isinstance(m, SpikingLayer)]


def recurrent_layers(module: nn.Module) -> list[SpikingLayer]:
    """Every layer with in-core recurrence (``layer_topology="RC"``) in ``module``, in registration order."""
    return [m for m in spiking_layers(module) if m.recurrent]


def routed_weight(module: nn.Module, programmed: bool = False) -> torch.Tensor:
    """The ``[inputs, outputs]`` matrix ``module`` routes through the chip's crossbar, as the module exposes
    it: a synapse's ``weight``, an RC layer's ``recurrent_weights`` with its masked connections exactly 0.
    ``programmed``: quantised, as the chip's memory holds it (no mismatch)."""
    if isinstance(module, SpikingLayer):
        w, quantizer, mask = module.recurrent_weights, module.recurrent_quantizer, module.recurrent_mask
    else:
        w, quantizer, mask = module.weight, module.quantizer, None
    w = quantizer(w) if programmed and quantizer is not None else w
    return w if mask is None else torch.where(mask, w, 0.0)
