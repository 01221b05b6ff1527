"""Chip constants of Neuronova H1v1 and H1v2, in SI units, each with its source or reason.

This is the one place where hardware numbers live. "Tutorial 1/2" are the vendor tutorials in
``shared/seeds`` (H1v1 and H1v2 model overviews); where they print a number we fit it exactly, and where
they are silent the value is our design choice, argued in ``docs/chip_model.md``.

Units used by the models built on these constants:

* H1v1 synaptic outputs are currents in nA (tutorial 2 prints 19.7304 for w=0.9); a spike injects a
  current pulse of ``H1V1_PULSE_WIDTH_S`` into the membrane capacitor ``H1V1_C_MEM_F``.
* H1v2 synaptic outputs are membrane increments in V (tutorial 2: ``dV = fo * w``).
* Membranes, thresholds and leaks are in V.
"""

# ---------------------------------------------------------------------------------------------------------
# H1v1
# ---------------------------------------------------------------------------------------------------------
H1V1_V_THRESHOLD_V = 0.2040  # tutorial 1 section 4b: chip-wide `_vt` 0.2040 for every layer and tau
H1V1_WEIGHT_LIMIT_V = 0.9  # tutorial 1 section 4f: floating-gate weight range [-0.9, 0.9]
H1V1_C_MEM_F = 100e-15  # design: 100 fF membrane capacitor; with the pulse width gives 0.01 V per nA
H1V1_PULSE_WIDTH_S = 1e-6  # design: 1 us spike pulse; tutorial 2: peak membrane 0.1973 = 0.01 * 19.7304 nA
H1V1_CURRENT_UNIT_A = 1e-9  # tutorial 2 prints synaptic currents in nA
# Synapse transconductor I = I_B * tanh(w / W_S): odd, saturating (a source-degenerated differential pair).
# The two constants solve tutorial 2's two printed points exactly: I(0.9) = 19.7304 nA, I(1.0) = 21.3811 nA.
H1V1_SYN_BIAS_CURRENT_A = 35.7651e-9  # fit to tutorial 2 (see above)
H1V1_SYN_LINEAR_RANGE_V = 1.4498  # fit to tutorial 2 (see above)
# Leak profiles: drain time from threshold to 0, tau = C * vt / I_leak. The leak bias comes from a current
# mirror ladder of ratio 3; tutorial 1 prints 15.0 ms for a 10 ms request, which anchors the ladder.
H1V1_TAU_PROFILES_S = (15e-3 / 9, 15e-3 / 3, 15e-3, 45e-3, 135e-3, 405e-3)
# Leak mismatch: a subthreshold current varies as exp(dVt / (n U_T)) with Gaussian dVt (Pelgrom), so the
# per-neuron leak factor is log-normal with sigma = SIGMA_VT / (n U_T).
H1V1_LEAK_SIGMA_VT_V = 5e-3  # design: 5 mV threshold-voltage mismatch of a minimum-size leak transistor
H1V1_SYN_OFFSET_STDDEV_V = 0.02  # tutorial 4 section 7: empirical synaptic weight offset stddev ~ 0.02
H1V1_FRONTEND_CHANNELS = 16  # tutorial 4 section 2 and the frontend warning: 16 filters on chip
H1V1_WEIGHT_BITS = 5  # tutorial 4 section 6: the weight memories hold 32 discrete charge levels (5-bit)

# ---------------------------------------------------------------------------------------------------------
# H1v2
# ---------------------------------------------------------------------------------------------------------
H1V2_V_THRESHOLD_V = 0.3226  # tutorial 2 section 4: `_vt` 0.3226 V
H1V2_WEIGHT_LIMIT_V = 1.66  # tutorial 2 section 7: weight range [-1.66, 1.66]
# Linear synapse dV = fo * w; fo = vt / 3.69324 solves tutorial 2's "spikes to threshold" (and its
# printed 0.0873 V at w=1 and 0.0786 V at w=0.9).
H1V2_SYN_GAIN_V = H1V2_V_THRESHOLD_V / 3.69324
H1V2_C_MEM_F = 100e-15  # design: same membrane capacitor as H1v1 (only used to report `_Ileak` in A)
# Leak profiles: a binary-weighted leak DAC (each code halves the current); tutorial 2 prints 13.820 ms for
# a 17 ms request, which anchors the ladder.
H1V2_TAU_PROFILES_S = tuple(13.82e-3 * 2.0**k for k in range(-2, 6))
H1V2_LEAK_SIGMA_VT_V = 3.5e-3  # design: larger leak transistor on H1v2, better matching than H1v1
H1V2_WEIGHT_BITS = 5  # design: tutorial 2 is silent on the memory; H1v1's 32 levels (tutorial 4) assumed

# ---------------------------------------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------------------------------------
SIGN_BLOCK_SIZE = 5  # tutorial 1 section 4f: per input row, output columns [0:5), [5:10), ... share a sign
THERMAL_VOLTAGE_V = 0.02585  # kT/q at 300 K
SUBTHRESHOLD_SLOPE_N = 1.3  # typical subthreshold slope factor of a bulk CMOS transistor

# Front-end filterbank: 16 half-octave constant-Q band-pass channels, 100 Hz * 2^(k/2), k = 0..15
# (100 Hz .. 18.1 kHz). At 16 kHz the top three lie at or above Nyquist, so 13 remain (tutorial 4 prints
# "Using 13 valid freqs out of 16"); at 48 kHz all 16 are valid.
FILTERBANK_LOWEST_CENTRE_HZ = 100.0  # design: a low male voice's pitch; the 16 bands tile 88 Hz .. 21 kHz
FILTERBANK_BANDS_PER_OCTAVE = 2  # design: 16 channels (tutorial 4) over the 7.5 octaves of 100 Hz .. 18 kHz


def constant_q_bank(bands_per_octave: int) -> tuple[tuple[float, ...], float]:
    """Centre frequencies (Hz) and Q of a constant-Q bank from 100 Hz up to the chip bank's top centre,
    ``bands_per_octave`` bands per octave whose -3 dB edges meet: ``100 Hz * 2^(k / b)``,
    ``Q = 1 / (2^(1/2b) - 2^(-1/2b))``. ``b = 2`` is the chip's own bank; a denser one is a research front
    end (the LIF baseline's)."""
    if isinstance(bands_per_octave, bool) or not isinstance(bands_per_octave, int) or bands_per_octave < 1:
        raise ValueError(f"bands_per_octave must be an integer >= 1, got {bands_per_octave!r}")
    n = (H1V1_FRONTEND_CHANNELS - 1) * bands_per_octave // FILTERBANK_BANDS_PER_OCTAVE + 1
    freqs = tuple(FILTERBANK_LOWEST_CENTRE_HZ * 2.0 ** (k / bands_per_octave) for k in range(n))
    half = 0.5 / bands_per_octave
    return freqs, 1.0 / (2.0**half - 2.0**-half)


FILTERBANK_CENTRE_FREQS_HZ, FILTERBANK_Q = constant_q_bank(FILTERBANK_BANDS_PER_OCTAVE)


def leak_lognormal_sigma(sigma_vt_v: float) -> float:
    """Log-normal sigma of a subthreshold leak current for a threshold-voltage mismatch ``sigma_vt_v``."""
    return sigma_vt_v / (SUBTHRESHOLD_SLOPE_N * THERMAL_VOLTAGE_V)


H1V1_LEAK_LOGNORMAL_SIGMA = leak_lognormal_sigma(H1V1_LEAK_SIGMA_VT_V)  # ~0.149
H1V2_LEAK_LOGNORMAL_SIGMA = leak_lognormal_sigma(H1V2_LEAK_SIGMA_VT_V)  # ~0.104
