"""The chip filterbank: shapes, dropped channels and their warning, selectivity, scale."""

import logging
import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from nwtrain.chips.common import FILTERBANK_CENTRE_FREQS_HZ, FILTERBANK_Q, constant_q_bank
from nwtrain.data import ChipFilterbank


def sines(freqs, sample_rate, seconds=1.0, amplitude=1.0):
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return torch.stack([amplitude * torch.sin(2 * math.pi * f * t) for f in freqs]).float()


def test_shape_at_16k_8ms_is_125_by_13():
    fb = ChipFilterbank(16000, 8e-3)
    features = fb(torch.randn(4, 16000))
    assert features.shape == (4, 125, 13)
    assert features.dtype == torch.float32
    assert fb.n_channels == 13
    assert fb.centre_freqs_hz == FILTERBANK_CENTRE_FREQS_HZ[:13]
    assert fb.q == FILTERBANK_Q


def test_all_16_channels_at_48k():
    fb = ChipFilterbank(48000, 8e-3)
    assert fb(torch.randn(2, 48000)).shape == (2, 125, 16)


def test_the_chip_bank_is_the_half_octave_constant_q_bank():
    assert constant_q_bank(2) == (FILTERBANK_CENTRE_FREQS_HZ, FILTERBANK_Q)
    assert len(FILTERBANK_CENTRE_FREQS_HZ) == 16
    assert FILTERBANK_Q == pytest.approx(1.0 / (2.0**0.25 - 2.0**-0.25))


@pytest.mark.parametrize("bands", [1, 2, 3, 6])
def test_denser_banks_span_the_chip_range_with_meeting_edges(bands):
    freqs, q = constant_q_bank(bands)
    top = FILTERBANK_CENTRE_FREQS_HZ[-1]
    assert freqs[0] == 100.0 and freqs[-1] <= top * (1 + 1e-12) < freqs[-1] * 2.0 ** (1 / bands)
    ratios = np.array(freqs[1:]) / np.array(freqs[:-1])
    assert np.allclose(ratios, 2.0 ** (1 / bands))
    # -3 dB edges f (sqrt(1 + 1/4Q^2) +- 1/2Q): the upper edge of one band is the lower edge of the next.
    upper = np.array(freqs[:-1]) * (math.sqrt(1 + 1 / (4 * q * q)) + 1 / (2 * q))
    lower = np.array(freqs[1:]) * (math.sqrt(1 + 1 / (4 * q * q)) - 1 / (2 * q))
    assert np.allclose(upper, lower)


@pytest.mark.parametrize("bands", [0, -2, 2.5, True])
def test_bank_density_must_be_a_positive_integer(bands):
    with pytest.raises(ValueError, match="bands_per_octave must be an integer >= 1"):
        constant_q_bank(bands)


def test_nyquist_note_text_at_info(caplog):
    # A fact of every 16 kHz run, not a problem: INFO, in the SDK's words.
    with caplog.at_level(logging.INFO, logger="nwtrain.data.filterbank"):
        ChipFilterbank(16000, 8e-3)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "Using 13 valid freqs out of 16 for sr=16000Hz (Nyquist=8000.0Hz).")
    ]


def test_no_note_when_every_channel_is_valid(caplog):
    with caplog.at_level(logging.INFO, logger="nwtrain.data.filterbank"):
        ChipFilterbank(48000, 8e-3)
    assert not caplog.messages


def test_frequency_at_exactly_nyquist_is_dropped():
    # 100 * 2^(10/2) = 3200 Hz is channel 10; at sr=6400 it sits exactly on Nyquist
    assert ChipFilterbank(6400, 8e-3).n_channels == 10


def test_each_centre_frequency_peaks_in_its_own_channel():
    fb = ChipFilterbank(16000, 8e-3)
    features = fb(sines(fb.centre_freqs_hz, 16000))
    assert torch.equal(features[:, 20:].mean(dim=1).argmax(dim=1), torch.arange(13))


def test_features_match_a_float64_reference_filter():
    # scipy's lfilter in float64 over each channel, rectified and averaged per 8 ms bin (128 samples)
    fb = ChipFilterbank(16000, 8e-3)
    x = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    scaled = (x / x.abs().amax(dim=1, keepdim=True)).double().numpy()
    a, b = fb.a_coeffs.double().numpy(), fb.b_coeffs.double().numpy()
    bands = np.stack([lfilter(b[c], a[c], scaled, axis=1) for c in range(fb.n_channels)], axis=2)
    expected = np.abs(bands).reshape(3, 125, 128, fb.n_channels).mean(axis=2)
    assert torch.allclose(fb(x).double(), torch.from_numpy(expected), rtol=1e-4, atol=1e-6)


def test_features_do_not_depend_on_the_thread_count():
    fb = ChipFilterbank(16000, 8e-3)
    x = torch.randn(5, 16000, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fb(x)
        torch.set_num_threads(2)
        two = fb(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_unit_peak_gain_scale():
    # a full-scale sine at a centre frequency passes at 0 dB: its mean rectified value is 2/pi
    fb = ChipFilterbank(16000, 8e-3)
    features = fb(sines([fb.centre_freqs_hz[8]], 16000))
    assert features[0, 20:, 8].mean().item() == pytest.approx(2 / math.pi, rel=0.02)
    assert 0.0 <= features.min() and features.max() <= 1.0


def test_peak_normalisation_removes_the_recording_level():
    fb = ChipFilterbank(16000, 8e-3)
    x = torch.randn(2, 16000)
    assert torch.allclose(fb(x), fb(0.05 * x), atol=1e-6)


def test_silence_stays_silent_and_hiss_is_not_blown_up():
    fb = ChipFilterbank(16000, 8e-3)
    assert torch.count_nonzero(fb(torch.zeros(1, 16000))) == 0
    assert fb(1e-6 * torch.randn(1, 16000)).max() < 0.01  # normalisation gain capped at 60 dB


def test_non_integer_bin_width():
    fb = ChipFilterbank(22050, 8e-3)  # 176.4 samples per bin
    assert fb(torch.randn(1, 22050)).shape == (1, 125, 14)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sample_rate=0, sim_time_s=8e-3),
        dict(sample_rate=16000, sim_time_s=0),
        dict(sample_rate=100, sim_time_s=8e-3),
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        ChipFilterbank(**kwargs)


def test_log_compression_maps_60_db_onto_the_unit_range():
    lin = ChipFilterbank(16000, 8e-3)
    log = ChipFilterbank(16000, 8e-3, compression="log", floor_db=-60.0)
    t = torch.arange(16000) / 16000
    # a tone in channel 10 whose level falls by 60 dB over the clip
    wave = torch.sin(2 * math.pi * 3200 * t) * torch.pow(10.0, -3 * t)
    e, y = lin(wave[None]), log(wave[None])
    torch.testing.assert_close(y, torch.log1p(e / 1e-3) / math.log1p(1e3))
    assert 0 <= y.min() and y.max() <= 1.0 and y[0, :, 10].max() > 0.6
    # a 60 dB fall is a near-linear ramp after the compressor (the linear envelope falls 1000-fold)
    assert e[0, 5, 10] / e[0, -5, 10] > 300 and y[0, 5, 10] - y[0, -5, 10] > 0.5
    assert lin.cache_fields() != log.cache_fields()
    assert log.cache_fields() != ChipFilterbank(16000, 8e-3, compression="log", floor_db=-40.0).cache_fields()


def test_compression_options_are_checked():
    with pytest.raises(ValueError, match="compression must be one of"):
        ChipFilterbank(16000, 8e-3, compression="cube")
    with pytest.raises(ValueError, match="floor_db must be < 0"):
        ChipFilterbank(16000, 8e-3, compression="log", floor_db=3.0)
