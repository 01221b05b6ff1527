"""The chip front end in software: 16 constant-Q band-pass channels and a per-bin envelope.

Design (argued in ``docs/data.md``):

* channel ``k`` is a second-order RBJ band-pass with 0 dB peak gain, centre ``FILTERBANK_CENTRE_FREQS_HZ[k]``
  (100 Hz * 2^(k/2)) and ``FILTERBANK_Q`` (half-octave bands whose -3 dB edges meet);
* channels at or above Nyquist cannot be realised at the given sample rate and are dropped, with the
  vendor SDK's warning;
* each clip is peak-normalised before filtering (gain capped at ``MAX_NORMALISATION_GAIN``), and the
  feature is the mean rectified band output over each ``sim_time_s`` bin, so features lie in [0, ~1];
* optionally (``compression="log"``) the envelope passes a logarithmic compressor with a floor
  ``floor_db`` below full scale, ``y = log(1 + e / floor) / log(1 + 1 / floor)``, still in [0, ~1]: it
  maps the 60 dB of a spoken word onto the few-fold input range a front-end neuron can rate-code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numba
import torch
import torch.nn.functional as F
from numba import float32, njit, prange, void

from nwtrain.chips.common import FILTERBANK_CENTRE_FREQS_HZ, FILTERBANK_Q

logger = logging.getLogger(__name__)

FEATURE_VERSION = "1"  # bump whenever the computation below changes: it is part of the feature cache key
# A clip quieter than -60 dBFS peak is mostly hiss or digital silence; amplifying it to full scale would
# turn silence into loud noise, so the normalisation gain stops at 60 dB.
MAX_NORMALISATION_GAIN = 1000.0
# Filtering allocates several [chunk, C, L] tensors; about 2 MB per chunk stays in cache and in the
# allocator's free lists. Whole-batch calls measured 3-5x slower on the 2-core reference machine.
_CHUNK_ELEMENTS = 1 << 19
COMPRESSIONS = ("none", "log")


@njit(void(float32[:, :, ::1], float32[:, ::1], float32[:, :, ::1]), cache=True, nogil=True, parallel=True)
def _all_pole(x, a, padded_out):
    """The recursive half of a direct-form IIR filter, ``y[i] = x[i] - sum_{k=1}^{K-1} a[c, k] y[i - k]``.

    ``x`` ``[B, C, L]`` is the output of the FIR half, ``a`` ``[C, K]`` the denominators normalised to
    ``a[:, 0] = 1``, ``padded_out`` ``[B, C, K - 1 + L]`` zeros on entry, ``y`` after its first ``K - 1``
    samples. The oldest output is subtracted first, in float32: the order of torchaudio's lfilter loop,
    which computed the features before, so they agree bit for bit (measured on the real recordings).
    The (clip, channel) rows are independent recursions spread over the threads, so the result does not
    depend on the thread count.
    """
    batch, channels, length = x.shape
    order = a.shape[1]
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for i in range(length):
            acc = x[b, c, i]
            for k in range(order - 1, 0, -1):
                acc -= padded_out[b, c, i + order - 1 - k] * a[c, k]
            padded_out[b, c, i + order - 1] = acc


def _band_pass(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each channel's IIR filter: ``x`` ``[B, C, L]``, coefficients ``[C, K]`` -> ``[B, C, L]``."""
    order = a.shape[1]
    fir = F.conv1d(F.pad(x, (order - 1, 0)), b.flip(1).contiguous().unsqueeze(1), groups=a.shape[0])
    padded = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + order - 1)
    _all_pole(fir.contiguous().numpy(), a.contiguous().numpy(), padded.numpy())
    return padded[:, :, order - 1 :]


class ChipFilterbank:
    """Band-pass filterbank and envelope extractor producing ``[B, T, C]`` features from ``[B, L]`` audio.

    Args:
        sample_rate: audio sample rate in Hz.
        sim_time_s: envelope bin width (the simulation time step), e.g. 8e-3.
        centre_freqs_hz: candidate centre frequencies; those ``>= sample_rate / 2`` are dropped with an
            INFO line "Using N valid freqs out of M for sr=...Hz (Nyquist=...Hz).".
        q: quality factor of every channel.
        compression: "none" (the linear envelope, as the vendor SDK gives it) or "log" (see the module).
        floor_db: the log compressor's floor relative to full scale, in dB (< 0).
    """

    def __init__(
        self,
        sample_rate: int,
        sim_time_s: float,
        centre_freqs_hz: Sequence[float] = FILTERBANK_CENTRE_FREQS_HZ,
        q: float = FILTERBANK_Q,
        compression: str = "none",
        floor_db: float = -60.0,
    ):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if sim_time_s <= 0:
            raise ValueError(f"sim_time_s must be positive, got {sim_time_s}")
        if q <= 0:
            raise ValueError(f"q must be positive, got {q}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if not floor_db < 0:
            raise ValueError(f"floor_db must be < 0 dB (below full scale), got {floor_db}")
        self.compression = compression
        self.floor_db = float(floor_db)
        self.sample_rate = int(sample_rate)
        self.sim_time_s = float(sim_time_s)
        self.q = float(q)
        nyquist = self.sample_rate / 2
        self.centre_freqs_hz = tuple(float(f) for f in centre_freqs_hz if f < nyquist)
        if not self.centre_freqs_hz:
            raise ValueError(
                f"no filterbank centre frequency lies below Nyquist={nyquist}Hz for sr={sample_rate}Hz "
                f"(candidates {list(centre_freqs_hz)})"
            )
        if len(self.centre_freqs_hz) < len(centre_freqs_hz):
            logger.info(
                "Using %d valid freqs out of %d for sr=%dHz (Nyquist=%sHz).",
                len(self.centre_freqs_hz),
                len(centre_freqs_hz),
                self.sample_rate,
                nyquist,
            )
        # RBJ cookbook band-pass, constant 0 dB peak gain: H(z) = alpha (1 - z^-2) / (a0 + a1 z^-1 + a2 z^-2).
        # Designed in float64 (the low channels have poles close to the unit circle), run in float32.
        w0 = 2 * math.pi * torch.tensor(self.centre_freqs_hz, dtype=torch.float64) / self.sample_rate
        alpha = torch.sin(w0) / (2 * self.q)
        a = torch.stack([1 + alpha, -2 * torch.cos(w0), 1 - alpha], dim=1)
        b = torch.stack([alpha, torch.zeros_like(alpha), -alpha], dim=1)
        self.a_coeffs = (a / a[:, :1]).float()
        self.b_coeffs = (b / a[:, :1]).float()

    @classmethod
    def from_fields(cls, fields: dict) -> ChipFilterbank:
        """The filterbank that :meth:`cache_fields` described (e.g. an artefact's ``features``)."""
        if fields.get("feature_version") != FEATURE_VERSION:
            raise ValueError(
                f"features of version {fields.get('feature_version')!r}; this filterbank computes version "
                f"{FEATURE_VERSION!r}"
            )
        return cls(
            fields["sample_rate"],
            fields["sim_time_s"],
            fields["centre_freqs_hz"],
            fields["q"],
            fields["compression"],
            fields.get("floor_db", -60.0),
        )

    @property
    def n_channels(self) -> int:
        """Number of realisable channels at this sample rate (13 at 16 kHz, 16 at 48 kHz)."""
        return len(self.centre_freqs_hz)

    def n_bins(self, n_samples: int) -> int:
        """Number of ``sim_time_s`` bins for a clip of ``n_samples`` (125 for 1 s at 8 ms)."""
        bins = round(n_samples / (self.sample_rate * self.sim_time_s))
        if bins < 1:
            raise ValueError(
                f"a clip of {n_samples} samples at {self.sample_rate}Hz is shorter than one "
                f"sim_time_s={self.sim_time_s}s bin"
            )
        return bins

    def cache_fields(self) -> dict:
        """Everything the features depend on besides the audio, for the feature cache key."""
        return {
            "feature_version": FEATURE_VERSION,
            "sample_rate": self.sample_rate,
            "sim_time_s": self.sim_time_s,
            "centre_freqs_hz": list(self.centre_freqs_hz),
            "q": self.q,
            "max_normalisation_gain": MAX_NORMALISATION_GAIN,
            "compression": self.compression,
            **({"floor_db": self.floor_db} if self.compression == "log" else {}),
        }

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Features of a batch: ``waveforms`` ``[B, L]`` (any scale) -> float32 ``[B, n_bins(L), C]``."""
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape [batch, samples], got {tuple(waveforms.shape)}")
        x = waveforms.float()
        n_batch, n_samples = x.shape
        n_bins = self.n_bins(n_samples)
        peak = x.abs().amax(dim=1, keepdim=True)
        x = x * torch.minimum(1.0 / peak.clamp_min(1e-12), torch.tensor(MAX_NORMALISATION_GAIN))
        chunk = max(1, _CHUNK_ELEMENTS // (self.n_channels * n_samples))
        # torch's thread setting (trainer.num_threads) bounds the filter loop too, so parallel sweep jobs
        # don't oversubscribe the cores.
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        out = torch.empty(n_batch, self.n_channels, n_bins)
        for start in range(0, n_batch, chunk):
            part = x[start : start + chunk]
            channels = part.unsqueeze(1).expand(-1, self.n_channels, -1)
            bands = _band_pass(channels, self.a_coeffs, self.b_coeffs)
            out[start : start + chunk] = F.adaptive_avg_pool1d(bands.abs_(), n_bins)
        if self.compression == "log":
            floor = 10.0 ** (self.floor_db / 20.0)
            out = torch.log1p(out / floor) / math.log1p(1.0 / floor)
        return out.transpose(1, 2).contiguous()
