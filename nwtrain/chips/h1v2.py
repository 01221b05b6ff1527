"""Neuronova H1v2: linear-leak neurons with subtraction reset, linear synapses, weights in [-1.66, 1.66] V.

Synaptic outputs are membrane increments in V (tutorial 2: ``dV = fo * w``). H1v2 has no front-end class of
its own: its front end is a per-channel gain made of its synapse (``nwtrain.models.kws.diagonal``).
"""

# `# fmt: skip` below keeps a layer's keyword arguments on two lines: one per line would make each chip's
# parts a column of names that reads longer than what it builds.

from torch import nn

from nwtrain.chips import ChipParts, ChipSpec, register
from nwtrain.chips.common import FILTERBANK_BANDS_PER_OCTAVE, leak_lognormal_sigma
from nwtrain.core.layers import ChipLayer, InitFn, Synapse, diagonal

V_THRESHOLD_V = 0.3226  # tutorial 2 section 4: `_vt` 0.3226 V
WEIGHT_LIMIT_V = 1.66  # tutorial 2 section 7: weight range [-1.66, 1.66]
# Linear synapse dV = fo * w; fo = vt / 3.69324 solves tutorial 2's "spikes to threshold" (and its
# printed 0.0873 V at w=1 and 0.0786 V at w=0.9).
SYN_GAIN_V = V_THRESHOLD_V / 3.69324
C_MEM_F = 100e-15  # design: same membrane capacitor as H1v1 (only used to report `_Ileak` in A)
# Leak profiles: a binary-weighted leak DAC (each code halves the current); tutorial 2 prints 13.820 ms for
# a 17 ms request, which anchors the ladder.
TAU_PROFILES_S = tuple(13.82e-3 * 2.0**k for k in range(-2, 6))
LEAK_SIGMA_VT_V = 3.5e-3  # design: larger leak transistor on H1v2, better matching than H1v1
LEAK_LOGNORMAL_SIGMA = leak_lognormal_sigma(LEAK_SIGMA_VT_V)  # ~0.104
WEIGHT_BITS = 5  # design: tutorial 2 is silent on the memory; H1v1's 32 levels (tutorial 4) assumed
CORE_SIZES = (
    50,
    50,
    100,
)  # SDK chip overview: 3 cores after the front end, the last for an output population
# design: one unit of filterbank envelope moves a front-end membrane by a fraction of its threshold close to
# H1v1's 0.57; H1v2's range caps it (1.66 * 0.0873 V = 0.145 V of 0.3226 V, 0.45), so it takes the range.
FRONTEND_GAIN = WEIGHT_LIMIT_V


class H1v2Transfer:
    """H1v2 synapse: linear gain, dV[V] = fo * w / lif_threshold (``SYN_GAIN_V``)."""

    def transfer(self, w):
        return SYN_GAIN_V / self.lif_threshold * w


class H1v2Layer(H1v2Transfer, ChipLayer):
    """H1v2 neuron: linear leak, chip-wide threshold 0.3226 V, subtraction reset, membrane >= 0.

    Its input is the membrane increment in V (``H1v2Synapse``: dV = fo * w); so is its recurrent input (RC),
    through the same linear gain.
    """

    WEIGHT_LIMIT_V = WEIGHT_LIMIT_V
    SYNAPTIC_MISMATCH = False

    V_THRESHOLD_V = V_THRESHOLD_V
    TAU_PROFILES_S = TAU_PROFILES_S
    C_MEM_F = C_MEM_F
    LEAK_LOGNORMAL_SIGMA = LEAK_LOGNORMAL_SIGMA
    RESET = "subtraction"


class H1v2Synapse(H1v2Transfer, Synapse):
    """Dense H1v2 synapse: linear gain, ``dV = fo * w / lif_threshold`` in V; range [-1.66, 1.66], sign
    blocks of 5. H1v2 has no synaptic mismatch (no ``stddev``)."""

    WEIGHT_LIMIT_V = WEIGHT_LIMIT_V
    SIGN_BLOCKS = True

    def __init__(
        self,
        nb_inputs: int,
        nb_outputs: int,
        init: InitFn | None = None,
        quantization_bit: int | None = None,
        lif_threshold: float = 1.0,
        device=None,
    ):
        quantizer = self._range_quantizer(quantization_bit, self.WEIGHT_LIMIT_V)
        super().__init__((nb_inputs, nb_outputs), nb_inputs, init, quantizer, 0.0, device)
        self.lif_threshold = float(lif_threshold)


def _parts() -> ChipParts:
    def frontend(n_channels, gain, quantization_bit, device):
        return diagonal(H1v2Synapse)(
            n_channels, init=lambda w: nn.init.constant_(w, gain), quantization_bit=quantization_bit,
            device=device,
        )  # fmt: skip

    def dense(n_in, n_out, init, quantization_bit, stddev, device):
        return H1v2Synapse(n_in, n_out, init=init, quantization_bit=quantization_bit, device=device)

    def neurons(
        n, taus, dt, ileak_mismatch, spike_grad, clamp_grad, device, recurrence=None, adaptation_taus=None
    ):
        # H1v2 synapses have no mismatch: the recurrent ones neither.
        rc = {k: v for k, v in (recurrence or {}).items() if k != "stddev"}
        return H1v2Layer(
            n, taus=taus, dt=dt, ileak_mismatch=ileak_mismatch, spike_grad=spike_grad, device=device,
            clamp_grad=clamp_grad, **rc,
        )  # fmt: skip

    return ChipParts(H1v2Layer, (H1v2Synapse,), frontend, dense, neurons)


SPEC = register(
    ChipSpec(
        name="h1v2",
        label="H1v2",
        parts=_parts,
        weight_limit=WEIGHT_LIMIT_V,
        weight_bits=WEIGHT_BITS,
        frontend_gain=FRONTEND_GAIN,
        core_sizes=CORE_SIZES,
        frontend_bands_per_octave=FILTERBANK_BANDS_PER_OCTAVE,
        # SDK chip overview: synaptic mismatch is removed by remapping; leak mismatch and a small per-neuron
        # threshold variation remain.
        leak_mismatch=True,
        threshold_variation=True,
        recurrence=True,
        membrane_clamp=True,
        sign_blocks=True,
        transfer={"kind": "linear", "gain": SYN_GAIN_V, "unit": "V"},
        artefact_constants={"syn_gain_v": SYN_GAIN_V},
    )
)
