"""Neuronova H1v1: linear-leak neurons, tanh transconductor synapses, weights in [-0.9, 0.9] V.

Synaptic outputs are currents in nA (tutorial 2 prints 19.7304 for w=0.9); a spike injects a current pulse
of ``PULSE_WIDTH_S`` into the membrane capacitor ``C_MEM_F``. Membranes, thresholds and leaks are in V.
"""

# `# fmt: skip` below keeps a layer's keyword arguments on two lines: one per line would make each chip's
# parts a column of names that reads longer than what it builds.

import warnings

import torch
from torch import nn

from nwtrain.chips import ChipParts, ChipSpec, register
from nwtrain.chips.common import FILTERBANK_BANDS_PER_OCTAVE, FRONTEND_CHANNELS, leak_lognormal_sigma
from nwtrain.core.layers import ChipLayer, Diagonal, InitFn, Synapse

V_THRESHOLD_V = 0.2040  # tutorial 1 section 4b: chip-wide `_vt` 0.2040 for every layer and tau
WEIGHT_LIMIT_V = 0.9  # tutorial 1 section 4f: floating-gate weight range [-0.9, 0.9]
C_MEM_F = 100e-15  # design: 100 fF membrane capacitor; with the pulse width gives 0.01 V per nA
PULSE_WIDTH_S = 1e-6  # design: 1 us spike pulse; tutorial 2: peak membrane 0.1973 = 0.01 * 19.7304 nA
CURRENT_UNIT_A = 1e-9  # tutorial 2 prints synaptic currents in nA
# Synapse transconductor I = I_B * tanh(w / W_S): odd, saturating (a source-degenerated differential pair).
# The two constants solve tutorial 2's two printed points exactly: I(0.9) = 19.7304 nA, I(1.0) = 21.3811 nA.
SYN_BIAS_CURRENT_A = 35.7651e-9  # fit to tutorial 2 (see above)
SYN_LINEAR_RANGE_V = 1.4498  # fit to tutorial 2 (see above)
# Leak profiles: drain time from threshold to 0, tau = C * vt / I_leak. The leak bias comes from a current
# mirror ladder of ratio 3; tutorial 1 prints 15.0 ms for a 10 ms request, which anchors the ladder.
TAU_PROFILES_S = (15e-3 / 9, 15e-3 / 3, 15e-3, 45e-3, 135e-3, 405e-3)
LEAK_SIGMA_VT_V = 5e-3  # design: 5 mV threshold-voltage mismatch of a minimum-size leak transistor
LEAK_LOGNORMAL_SIGMA = leak_lognormal_sigma(LEAK_SIGMA_VT_V)  # ~0.149
SYN_OFFSET_STDDEV_V = 0.02  # tutorial 4 section 7: empirical synaptic weight offset stddev ~ 0.02
WEIGHT_BITS = 5  # tutorial 4 section 6: the weight memories hold 32 discrete charge levels (5-bit)
CORE_SIZES = (64, 64, 64, 64)  # SDK chip overview: after the front end, 4 cores of 64 neurons
FRONTEND_GAIN = 0.5  # design: mid-range gain, ~11.7 nA per unit of filterbank envelope (the SDK's default)


class H1v1Transfer:
    """H1v1 transconductor: I[nA] = I_B * tanh(w / (lif_threshold * W_S)) (the constants above)."""

    I_B_NA = SYN_BIAS_CURRENT_A / CURRENT_UNIT_A

    def transfer(self, w):
        return self.I_B_NA * torch.tanh(w / (self.lif_threshold * SYN_LINEAR_RANGE_V))


class H1v1Layer(H1v1Transfer, ChipLayer):
    """H1v1 neuron: linear leak, chip-wide threshold 0.204 V, zero reset, membrane >= 0.

    Its input is the synaptic current in nA (from ``H1v1Synapse`` / ``H1v1Frontend``); each input spike
    delivers a pulse of ``H1V1_PULSE_WIDTH_S`` into ``H1V1_C_MEM_F``, i.e. 0.01 V per nA. Recurrent weights
    (RC) pass the same transconductor.
    """

    WEIGHT_LIMIT_V = WEIGHT_LIMIT_V
    SYNAPTIC_MISMATCH = True

    V_THRESHOLD_V = V_THRESHOLD_V
    TAU_PROFILES_S = TAU_PROFILES_S
    C_MEM_F = C_MEM_F
    LEAK_LOGNORMAL_SIGMA = LEAK_LOGNORMAL_SIGMA
    RESET = "zero"
    VOLTS_PER_NA = CURRENT_UNIT_A * PULSE_WIDTH_S / C_MEM_F

    def _step_fn(self, mem, current_na, vleak, vt):
        return super()._step_fn(mem, current_na * self.VOLTS_PER_NA, vleak, vt)

    def _fused(self, mem, current_na, recurrent, spk):
        return super()._fused(mem, current_na, recurrent, spk, scale=self.VOLTS_PER_NA)


class H1v1Synapse(H1v1Transfer, Synapse):
    """Dense H1v1 synapse, output current in nA. Weight range [-0.9, 0.9], sign blocks of 5.

    ``quantization_bit=b`` fake-quantises to ``2**b`` levels over the range (hard clamp included);
    ``stddev`` adds Gaussian programming offsets per chip instance; ``lif_threshold`` is the LIF
    threshold the weights are expressed against (weights are divided by it before the transfer).
    """

    WEIGHT_LIMIT_V = WEIGHT_LIMIT_V
    SIGN_BLOCKS = True

    def __init__(
        self,
        nb_inputs: int,
        nb_outputs: int,
        init: InitFn | None = None,
        quantization_bit: int | None = None,
        stddev: float = 0.0,
        lif_threshold: float = 1.0,
        device=None,
    ):
        quantizer = self._range_quantizer(quantization_bit, self.WEIGHT_LIMIT_V)
        super().__init__((nb_inputs, nb_outputs), nb_inputs, init, quantizer, stddev, device)
        self.lif_threshold = float(lif_threshold)


class H1v1Frontend(Diagonal, H1v1Transfer, Synapse):
    """Trainable per-channel gain between the 16-channel filterbank and the first H1v1 layer.

    ``I_c = x_c * I_B * tanh(w_c / W_S)`` for each channel ``c`` (a diagonal H1v1 synapse).
    """

    WEIGHT_LIMIT_V = WEIGHT_LIMIT_V

    def __init__(
        self,
        nb_inputs: int = FRONTEND_CHANNELS,
        init: InitFn | None = None,
        quantization_bit: int | None = None,
        stddev: float = 0.0,
        lif_threshold: float = 1.0,
        device=None,
    ):
        if nb_inputs != FRONTEND_CHANNELS:
            warnings.warn(
                f"Frontend on chip uses {FRONTEND_CHANNELS} filters. Using a different amount of "
                f"neurons {nb_inputs} is allowed but not respecting the chip constraints.",
                UserWarning,
                stacklevel=2,
            )
        quantizer = self._range_quantizer(quantization_bit, self.WEIGHT_LIMIT_V)
        init = init or (lambda w: nn.init.constant_(w, FRONTEND_GAIN))
        super().__init__((nb_inputs,), 1, init, quantizer, stddev, device)
        self.lif_threshold = float(lif_threshold)


def _parts() -> ChipParts:
    def frontend(n_channels, gain, quantization_bit, device):
        return H1v1Frontend(
            n_channels, init=lambda w: nn.init.constant_(w, gain), quantization_bit=quantization_bit,
            stddev=0.0, device=device,
        )  # fmt: skip

    def dense(n_in, n_out, init, quantization_bit, stddev, device):
        return H1v1Synapse(
            n_in, n_out, init=init, quantization_bit=quantization_bit, stddev=stddev, device=device
        )

    def neurons(
        n, taus, dt, ileak_mismatch, spike_grad, clamp_grad, device, recurrence=None, adaptation_taus=None
    ):
        return H1v1Layer(
            n, taus=taus, dt=dt, ileak_mismatch=ileak_mismatch, spike_grad=spike_grad, device=device,
            clamp_grad=clamp_grad, **(recurrence or {}),
        )  # fmt: skip

    return ChipParts(H1v1Layer, (H1v1Synapse, H1v1Frontend), frontend, dense, neurons)


SPEC = register(
    ChipSpec(
        name="h1v1",
        label="H1v1",
        parts=_parts,
        weight_limit=WEIGHT_LIMIT_V,
        weight_bits=WEIGHT_BITS,
        frontend_gain=FRONTEND_GAIN,
        core_sizes=CORE_SIZES,
        frontend_bands_per_octave=FILTERBANK_BANDS_PER_OCTAVE,
        synaptic_mismatch=True,
        leak_mismatch=True,
        recurrence=True,
        membrane_clamp=True,
        sign_blocks=True,
        syn_offset_stddev=SYN_OFFSET_STDDEV_V,
        transfer={
            "kind": "h1v1_tanh",
            "bias_current": SYN_BIAS_CURRENT_A / CURRENT_UNIT_A,
            "unit": "nA",
            "linear_range_v": SYN_LINEAR_RANGE_V,
        },
        artefact_constants={
            "pulse_width_s": PULSE_WIDTH_S,
            "syn_bias_current_a": SYN_BIAS_CURRENT_A,
            "syn_linear_range_v": SYN_LINEAR_RANGE_V,
            "syn_offset_stddev_v": SYN_OFFSET_STDDEV_V,
            "frontend_channels": FRONTEND_CHANNELS,
        },
    )
)
