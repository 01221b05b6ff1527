"""Reading audio clips through soundfile: mono mix, crop, pad or trim, resample to the target rate."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from nwtrain.errors import DataError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Part of the feature cache key: features of audio at another rate depend on the resampler (torchaudio's
# windowed sinc before this one).
RESAMPLER = "scipy.signal.resample_poly"


class AudioFileError(DataError):
    """An audio file that is missing, unreadable, corrupt or empty; the message names the file."""


@dataclass(frozen=True, order=True)
class ClipRef:
    """One clip: an audio file, optionally cropped from ``start_s`` (silence clips cut from long noise)."""

    path: Path
    start_s: float = 0.0

    def name(self, root: Path) -> str:
        """The clip's name relative to ``root``, with ``@<start>s`` appended for crops."""
        try:
            rel = self.path.relative_to(root).as_posix()
        except ValueError:
            rel = self.path.as_posix()
        return f"{rel}@{self.start_s:.3f}s" if self.start_s else rel


def read_clip(clip: ClipRef, duration_s: float) -> tuple[np.ndarray, int]:
    """Decode ``duration_s`` seconds of ``clip`` at its native rate, mixed to mono and zero-padded at the end.

    Returns ``(float32 samples, native sample rate)``. Raises :class:`AudioFileError` naming the file when
    it cannot be opened or decoded, holds no samples, or holds non-finite samples.
    """
    try:
        with sf.SoundFile(clip.path) as f:
            rate = f.samplerate
            if f.frames == 0:
                raise AudioFileError(f"{clip.path}: contains no audio samples")
            f.seek(min(round(clip.start_s * rate), f.frames))
            data = f.read(math.ceil(duration_s * rate), dtype="float32", always_2d=True)
    except AudioFileError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:  # libsndfile errors are RuntimeErrors
        raise AudioFileError(f"{clip.path}: cannot be read as audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioFileError(f"{clip.path}: no audio samples after {clip.start_s}s")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioFileError(f"{clip.path}: contains non-finite samples")
    return np.pad(mono, (0, math.ceil(duration_s * rate) - mono.shape[0])), rate


def load_clips(
    clips: Sequence[ClipRef], sample_rate: int, duration_s: float, num_workers: int = 0
) -> tuple[torch.Tensor, list[tuple[int, AudioFileError]]]:
    """Decode ``clips`` to a float32 ``[N, round(duration_s * sample_rate)]`` tensor at ``sample_rate``.

    Files are decoded on ``num_workers`` threads (libsndfile releases the GIL) and resampled in one batch
    per native rate. Returns the waveforms of the good clips, in order, and ``(index, error)`` for each
    clip that failed; the caller decides whether a failure is fatal.
    """
    n_samples = round(duration_s * sample_rate)
    results: list[tuple[np.ndarray, int] | AudioFileError] = []

    def decode(clip: ClipRef) -> tuple[np.ndarray, int] | AudioFileError:
        try:
            return read_clip(clip, duration_s)
        except AudioFileError as exc:
            return exc

    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as pool:
            results = list(pool.map(decode, clips))
    else:
        results = [decode(c) for c in clips]
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, AudioFileError)]
    good = [r for r in results if not isinstance(r, AudioFileError)]
    out = torch.zeros(len(good), n_samples)
    for rate in sorted({r for _, r in good}):
        rows = [i for i, (_, r) in enumerate(good) if r == rate]
        batch = np.stack([good[i][0] for i in rows])
        if rate != sample_rate:
            logger.info("resampling %d clips from %d Hz to %d Hz", len(rows), rate, sample_rate)
            # Polyphase FIR (Kaiser-windowed sinc): no wrap-around at the clip ends, unlike an FFT resampler.
            step = math.gcd(rate, sample_rate)
            batch = resample_poly(batch, sample_rate // step, rate // step, axis=1).astype(np.float32)
        batch = torch.from_numpy(batch)
        width = min(n_samples, batch.shape[1])
        out[rows, :width] = batch[:, :width]
    return out, failures


def change_speed(waves: torch.Tensor, factor: float) -> torch.Tensor:
    """``waves`` ``[N, S]`` played ``factor`` times as fast, zero-padded or trimmed back to ``S`` samples.

    Speed perturbation (Ko et al. 2015, Kaldi's 0.9 / 1.0 / 1.1): pitch and formants scale by ``factor``
    and the duration by ``1 / factor``, as between a shorter and a longer vocal tract. ``factor`` is taken
    as the nearest ratio with a denominator up to 100 and resampled by the same polyphase filter.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    ratio = Fraction(factor).limit_denominator(100)
    played = resample_poly(waves.numpy(), ratio.denominator, ratio.numerator, axis=1).astype(np.float32)
    out = torch.zeros_like(waves)
    width = min(waves.shape[1], played.shape[1])
    out[:, :width] = torch.from_numpy(played[:, :width])
    return out
