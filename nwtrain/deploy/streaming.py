"""Keyword spotting in a long recording: where speech is, and which keyword each stretch of it holds.

A keyword-spotting chip listens all the time. Two parts of it matter here: the front end's activity tells
where sound rises out of the background, and the network, run over a window of its clip length, tells which
keyword that sound is. :func:`activity_segments` finds the stretches of a recording that stand out of its
noise floor (their starts are the onsets reported); :func:`detect_keywords` slides the network's window
over each stretch, hop by hop across every position that holds the whole stretch, and sums the windows'
output spike counts into one decision per stretch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# Frame energies are floored here (digital silence would otherwise be -inf dB).
ENERGY_FLOOR_DB = -120.0


@dataclass(frozen=True)
class StreamSettings:
    """How a long recording is cut and scanned.

    ``frame_s``: the energy frame; ``threshold_db``: how far above the noise floor (the ``floor_percentile``
    of the frame energies that are not digital silence) a frame counts as sound; stretches closer than
    ``min_gap_s`` merge, shorter ones than ``min_length_s`` are dropped; a stretch extends to the frames
    ``edge_db`` above the floor on either side; ``hop_s``: the step of the network's window.
    """

    hop_s: float = 0.05
    frame_s: float = 0.01
    threshold_db: float = 12.0
    edge_db: float = 5.0
    floor_percentile: float = 10.0
    min_gap_s: float = 0.25
    min_length_s: float = 0.08

    def __post_init__(self):
        for name in ("hop_s", "frame_s", "threshold_db", "edge_db", "min_length_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"stream.{name} must be > 0, got {getattr(self, name)!r}")
        if self.edge_db > self.threshold_db:
            raise ValueError(
                f"stream.edge_db ({self.edge_db}) must not exceed threshold_db ({self.threshold_db})"
            )
        if not self.min_gap_s >= 0:
            raise ValueError(f"stream.min_gap_s must be >= 0, got {self.min_gap_s!r}")
        if not 0 <= self.floor_percentile < 100:
            raise ValueError(f"stream.floor_percentile must be in [0, 100), got {self.floor_percentile!r}")


@dataclass(frozen=True)
class Detection:
    """One stretch of sound: its onset and end (s), the class decided, its softmax confidence and the
    output spike counts per class summed over the windows that hold it."""

    onset_s: float
    end_s: float
    label: int
    confidence: float
    counts: tuple[int, ...]

    @property
    def silent(self) -> bool:
        return not any(self.counts)


def frame_energy_db(wave: np.ndarray, sample_rate_hz: int, frame_s: float) -> np.ndarray:
    """``10 log10(mean(x^2))`` of consecutive ``frame_s`` frames (the last partial frame dropped)."""
    n = max(1, round(frame_s * sample_rate_hz))
    frames = np.asarray(wave, dtype=np.float64)[: len(wave) // n * n].reshape(-1, n)
    power = (frames**2).mean(axis=1)
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), ENERGY_FLOOR_DB)


def activity_segments(
    wave: np.ndarray, sample_rate_hz: int, settings: StreamSettings
) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of every stretch of sound: runs of frames ``edge_db`` above the noise floor,
    merged across gaps shorter than ``min_gap_s``, that reach ``threshold_db`` above it somewhere. The two
    thresholds (hysteresis) keep a word's quiet edges, a nasal onset or a fading vowel, without letting the
    background start a stretch."""
    energy = frame_energy_db(wave, sample_rate_hz, settings.frame_s)
    audible = energy[energy > ENERGY_FLOOR_DB]
    if not len(audible):
        return []
    floor = np.percentile(audible, settings.floor_percentile)
    above_edge = energy > floor + settings.edge_db
    loud = energy > floor + settings.threshold_db
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above_edge.astype(np.int8), [0]])))
    merged: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if merged and (a - merged[-1][1]) * settings.frame_s < settings.min_gap_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    merged = [[a, b] for a, b in merged if loud[a:b].any()]
    f = settings.frame_s
    return [(a * f, b * f) for a, b in merged if (b - a) * f >= settings.min_length_s]


def window_starts(onset_s: float, end_s: float, window_s: float, total_s: float, hop_s: float) -> np.ndarray:
    """Start times of the windows, ``hop_s`` apart, that hold all of ``[onset_s, end_s]`` and lie in the
    recording; a stretch longer than the window gets the one window centred on it."""
    last = min(onset_s, max(total_s - window_s, 0.0))
    first = max(end_s - window_s, 0.0)
    if first > last:
        return np.array([min(max((onset_s + end_s - window_s) / 2, 0.0), max(total_s - window_s, 0.0))])
    return np.minimum(first + hop_s * np.arange(int((last - first) / hop_s + 1e-9) + 1), last)


def detect_keywords(
    wave: torch.Tensor,
    sample_rate_hz: int,
    window_s: float,
    counts_fn: Callable[[torch.Tensor], np.ndarray],
    settings: StreamSettings,
    batch: int = 64,
) -> list[Detection]:
    """One :class:`Detection` per stretch of sound in ``wave`` (1-D, at ``sample_rate_hz``).

    ``counts_fn`` maps waveforms ``[B, window]`` to output spike counts ``[B, n_classes]``: the network
    (or the chip simulator) on windows of ``window_s``.
    """
    wave = wave.reshape(-1)
    n_window = round(window_s * sample_rate_hz)
    total_s = len(wave) / sample_rate_hz
    padded = torch.nn.functional.pad(wave, (0, max(0, n_window - len(wave))))
    detections = []
    for onset, end in activity_segments(wave.numpy(), sample_rate_hz, settings):
        starts = window_starts(onset, end, window_s, total_s, settings.hop_s)
        first = [round(s * sample_rate_hz) for s in starts]
        windows = torch.stack([padded[i : i + n_window] for i in first])
        counts = sum(
            np.asarray(counts_fn(windows[k : k + batch]), dtype=np.float64).sum(axis=0)
            for k in range(0, len(windows), batch)
        )
        # The softmax of the counts averaged over windows: a window's confidence, as in nwtrain-predict.
        mean = counts / len(windows)
        prob = np.exp(mean - mean.max())
        prob /= prob.sum()
        label = int(counts.argmax())
        detections.append(
            Detection(
                round(onset, 3), round(end, 3), label, float(prob[label]), tuple(int(c) for c in counts)
            )
        )
    return detections
