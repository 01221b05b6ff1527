"""Shared fixtures. Data fixtures write small generated audio trees into temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def write_tone(
    path: Path,
    freq_hz: float,
    sample_rate: int = 16000,
    seconds: float = 1.0,
    seed: int = 0,
    channels: int = 1,
) -> Path:
    """A 16-bit WAV: a sine at ``freq_hz`` with a little seeded noise (distinct bytes per seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * freq_hz * t + rng.uniform(0, 2 * np.pi)) + 0.01 * rng.standard_normal(
        len(t)
    )
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, subtype="PCM_16")
    return path


@pytest.fixture
def tone_writer():
    """:func:`write_tone`, for tests that build their own trees."""
    return write_tone


@pytest.fixture
def speaker_tree(tmp_path: Path) -> Path:
    """Class folders ``low/`` (300 Hz) and ``high/`` (2.5 kHz), 5 speakers x 4 takes, FSDD-style names."""
    root = tmp_path / "tones"
    seed = 0
    for digit, (cls, freq) in enumerate((("low", 300.0), ("high", 2500.0))):
        for speaker in ("alice", "bob", "carol", "dave", "erin"):
            for take in range(4):
                seed += 1
                write_tone(root / cls / f"{digit}_{speaker}_{take}.wav", freq, seed=seed)
    return root


@pytest.fixture
def mini_speech_commands(tmp_path: Path) -> Path:
    """A miniature Speech Commands tree in the real layout: 3 words, 4 speakers, split lists, noise."""
    root = tmp_path / "speech_commands"
    speakers = ("0a7c2a8d", "1b2c3d4e", "2c3d4e5f", "3d4e5f60")
    seed = 100
    for word, freq in (("yes", 500.0), ("no", 1500.0), ("up", 3000.0)):
        for speaker in speakers:
            for take in range(3):
                seed += 1
                write_tone(root / word / f"{speaker}_nohash_{take}.wav", freq, seed=seed)
    # speaker 1 is validation, speaker 2 is test, as Speech Commands' hashing would do per speaker
    val = [f"{w}/{speakers[1]}_nohash_{t}.wav" for w in ("yes", "no", "up") for t in range(3)]
    test = [f"{w}/{speakers[2]}_nohash_{t}.wav" for w in ("yes", "no", "up") for t in range(3)]
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    noise_rng = np.random.default_rng(7)
    (root / "_background_noise_").mkdir()
    for name in ("white_noise", "pink_noise"):
        sf.write(
            root / "_background_noise_" / f"{name}.wav",
            0.3 * noise_rng.standard_normal(10 * 16000),
            16000,
            subtype="PCM_16",
        )
    (root / "_background_noise_" / "README.md").write_text("not audio\n")
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The espeak-ng corpus with two words and 30 clips each (about 1 s to generate)."""
    from nwtrain.data import ensure_embedded_corpus

    return ensure_embedded_corpus(
        tmp_path_factory.mktemp("corpus"), words=["yes", "no"], clips_per_word=30, progress=False
    )
