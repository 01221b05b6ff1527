"""Regression data as the vendor SDK lays it out: ``<root>/wavs/<stem>.wav`` and, for each clip, its target
``<root>/target/<stem>.pt``, a tensor of shape ``(T,)`` or ``(T, C)`` with one value per simulation step
(T = the clip's duration over ``sim_time_s``) and per output channel: a spike-rate pattern, in spikes per
step, that the network's output should produce (SDK tutorial 7).

:func:`ensure_pattern_set` writes a synthetic set in that layout: the data of ``experiment=pattern_h1v2``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nwtrain.data.audio import AUDIO_SUFFIXES, ClipRef
from nwtrain.data.cache import default_cache_dir
from nwtrain.data.readers import SPLITS, DatasetSplits, Example, check_fractions, folder_contents, require_dir
from nwtrain.errors import DataError

logger = logging.getLogger(__name__)

WAVS_DIR, TARGET_DIR = "wavs", "target"


def read_regression(
    root: str | Path, val_split: float = 0.15, test_split: float = 0.0, random_state: int = 0
) -> DatasetSplits:
    """List ``root/wavs/*`` and split the clips with a seed: ``round(n * test_split)`` /
    ``round(n * val_split)`` of the shuffled clips go to test / val. An :class:`Example`'s ``label`` is
    the clip's index in sorted order; its target is :func:`target_path`. A clip without a target file
    raises :class:`DataError` naming it. ``classes`` is empty: the channels come from the targets."""
    check_fractions(val_split, test_split)
    root = require_dir(Path(root), "regression data root")
    wavs = root / WAVS_DIR
    if not wavs.is_dir():
        raise DataError(
            f"{root} is not regression data: it needs {WAVS_DIR}/<stem>.wav and {TARGET_DIR}/<stem>.pt "
            f"(it contains: {folder_contents(root)})"
        )
    files = sorted(
        p for p in wavs.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{wavs} has no audio files ({', '.join(AUDIO_SUFFIXES)})")
    missing = [p.name for p in files if not target_path(p).is_file()]
    if missing:
        raise DataError(
            f"{root / TARGET_DIR}: no target for {len(missing)} clip(s), e.g. {missing[:3]} "
            f"(expected {TARGET_DIR}/<stem>.pt for each {WAVS_DIR}/<stem>.wav)"
        )
    order = np.random.default_rng(random_state).permutation(len(files))
    n_test, n_val = round(len(files) * test_split), round(len(files) * val_split)
    result = DatasetSplits([])
    for rank, i in enumerate(order):
        split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        result.split(split).append(Example(ClipRef(files[i]), int(i)))
    for split in SPLITS:
        result.split(split).sort(key=lambda e: e.label)
    return result


def target_path(wav: Path) -> Path:
    """``<root>/target/<stem>.pt`` of ``<root>/wavs/<stem>.wav``."""
    return wav.parent.parent / TARGET_DIR / f"{wav.stem}.pt"


def load_target(wav: Path, n_steps: int) -> torch.Tensor:
    """The target of clip ``wav`` as float32 ``[n_steps, C]``; a file that is not a finite tensor of
    ``n_steps`` rows raises :class:`DataError` naming it and its shape. Read with ``weights_only``: a
    target file is data and runs no code."""
    path = target_path(wav)
    try:
        target = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or pickled-code file: torch raises many types
        raise DataError(f"{path}: cannot be read as a tensor ({exc})") from None
    if not isinstance(target, torch.Tensor) or target.dim() not in (1, 2):
        what = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise DataError(f"{path}: a target must be a tensor of shape (T,) or (T, C), got {what}")
    if target.shape[0] != n_steps:
        raise DataError(
            f"{path}: target has {target.shape[0]} steps, the clip has {n_steps} "
            f"(recording_duration_s / sim_time_s); shape {tuple(target.shape)}"
        )
    target = target.float().reshape(n_steps, -1)
    if not torch.isfinite(target).all():
        raise DataError(f"{path}: target holds non-finite values")
    return target


# ---------------------------------------------------------------------------------------------------------
# The synthetic pattern set
# ---------------------------------------------------------------------------------------------------------
PATTERN_SET_VERSION = "1"
PATTERN_SAMPLE_RATE = 16000
# One tone per output channel, a half-octave filterbank channel or more apart, so each excites its own bands.
PATTERN_TONES_HZ = (400.0, 800.0, 1600.0, 3200.0)


def ensure_pattern_set(
    root: str | Path | None = None,
    n_clips: int = 400,
    seed: int = 0,
    duration_s: float = 1.0,
    sim_time_s: float = 8e-3,
    segments: int = 5,
    peak_rate: float = 1.0,
    tau_s: float = 0.04,
    amplitude: tuple[float, float] = (0.6, 0.6),
) -> Path:
    """Write (on first use) and return a synthetic tutorial-7 pattern set in the regression layout.

    Each clip is a sequence of ``segments`` tones of equal length, each one of :data:`PATTERN_TONES_HZ`
    drawn at random (amplitude uniform in ``amplitude``, pitch within +-3 %, 5 ms ramps, a little white
    noise). Its
    target has one channel per tone: channel c's rate rises towards ``peak_rate`` spikes per step while
    tone c sounds and decays when it stops, r_c[t] = r_c[t-1] + (dt / tau) (peak_rate * on_c[t] - r_c[t-1])
    with ``tau_s``, so a rate is a smooth pattern over time that lags its cue. The set is deterministic
    in its arguments; it lies in ``<root>/patterns-v<version>-n<clips>-seed<seed>-<digest of the settings>``
    (``root`` default: ``<cache dir>/patterns``). A set left half-written by an interrupted run is rewritten.
    """
    root = Path(root).expanduser() if root is not None else default_cache_dir() / "patterns"
    settings = {
        "version": PATTERN_SET_VERSION,
        "n_clips": n_clips,
        "seed": seed,
        "duration_s": duration_s,
        "sim_time_s": sim_time_s,
        "segments": segments,
        "peak_rate": peak_rate,
        "tau_s": tau_s,
        "amplitude": list(amplitude),
        "tones_hz": list(PATTERN_TONES_HZ),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    folder = root / f"patterns-v{PATTERN_SET_VERSION}-n{n_clips}-seed{seed}-{digest}"
    if (folder / "settings.json").is_file():
        return folder
    # A folder of this process's own: parallel sweep jobs may write the same set at once.
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / WAVS_DIR).mkdir(parents=True)
    (tmp / TARGET_DIR).mkdir()
    rng = np.random.default_rng(seed)
    n_steps = round(duration_s / sim_time_s)
    for i in range(n_clips):
        wave, target = _pattern_clip(rng, duration_s, n_steps, segments, peak_rate, tau_s, amplitude)
        sf.write(tmp / WAVS_DIR / f"pattern_{i:04d}.wav", wave, PATTERN_SAMPLE_RATE, subtype="PCM_16")
        torch.save(torch.from_numpy(target), tmp / TARGET_DIR / f"pattern_{i:04d}.pt")
    (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
    try:
        tmp.rename(folder)
    except OSError:  # another job finished the same set first
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    logger.info("wrote %d pattern clips to %s", n_clips, folder)
    return folder


def _pattern_clip(
    rng, duration_s, n_steps, segments, peak_rate, tau_s, amplitude
) -> tuple[np.ndarray, np.ndarray]:
    n = round(duration_s * PATTERN_SAMPLE_RATE)
    t = np.arange(n) / PATTERN_SAMPLE_RATE
    bounds = np.linspace(0, n, segments + 1).astype(int)
    ramp = int(0.005 * PATTERN_SAMPLE_RATE)
    wave = 0.01 * rng.standard_normal(n)
    on = np.zeros((n_steps, len(PATTERN_TONES_HZ)), dtype=np.float32)
    for a, b in zip(bounds[:-1], bounds[1:]):
        c = int(rng.integers(len(PATTERN_TONES_HZ)))
        freq = PATTERN_TONES_HZ[c] * (1 + rng.uniform(-0.03, 0.03))
        envelope = np.ones(b - a)
        envelope[:ramp] = envelope[-ramp:] = 0.0
        envelope[:ramp] += np.linspace(0, 1, ramp)
        envelope[-ramp:] += np.linspace(1, 0, ramp)
        wave[a:b] += rng.uniform(*amplitude) * envelope * np.sin(2 * np.pi * freq * t[a:b])
        on[round(a / n * n_steps) : round(b / n * n_steps), c] = 1.0
    step = (duration_s / n_steps) / tau_s
    target = np.zeros_like(on)
    rate = np.zeros(on.shape[1], dtype=np.float32)
    for k in range(n_steps):
        rate = rate + step * (peak_rate * on[k] - rate)
        target[k] = rate
    return np.clip(wave, -1, 1).astype(np.float32), target
