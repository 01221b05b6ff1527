"""What the Neuronova chips share, in SI units, each with its source or reason: the
16-filter front end and the subthreshold physics behind the leak mismatch. "Tutorial 1/2/4" are the vendor
tutorials in ``shared/seeds``; where they are silent the value is our design choice, argued in
``docs/chip_model.md``.
"""

THERMAL_VOLTAGE_V = 0.02585  # kT/q at 300 K
SUBTHRESHOLD_SLOPE_N = 1.3  # typical subthreshold slope factor of a bulk CMOS transistor

FRONTEND_CHANNELS = 16  # tutorial 4 section 2 and the frontend warning: 16 filters on chip
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
    n = (FRONTEND_CHANNELS - 1) * bands_per_octave // FILTERBANK_BANDS_PER_OCTAVE + 1
    freqs = tuple(FILTERBANK_LOWEST_CENTRE_HZ * 2.0 ** (k / bands_per_octave) for k in range(n))
    half = 0.5 / bands_per_octave
    return freqs, 1.0 / (2.0**half - 2.0**-half)


FILTERBANK_CENTRE_FREQS_HZ, FILTERBANK_Q = constant_q_bank(FILTERBANK_BANDS_PER_OCTAVE)


def leak_lognormal_sigma(sigma_vt_v: float) -> float:
    """Log-normal sigma of a subthreshold leak current for a threshold-voltage mismatch ``sigma_vt_v``: the
    current varies as exp(dVt / (n U_T)) with Gaussian dVt (Pelgrom)."""
    return sigma_vt_v / (SUBTHRESHOLD_SLOPE_N * THERMAL_VOLTAGE_V)
