"""nwtrain-predict: keyword onsets in a long recording (nwtrain.deploy.streaming), and Monte-Carlo chips."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_helpers import compose_config, run_cli, tiny_cache, tiny_overrides
from scipy.signal import resample_poly

from nwtrain.cli.predict import checkpoint_model
from nwtrain.data.corpus import speaker_splits
from nwtrain.data.espeak import ESPEAK_SAMPLE_RATE, synthesize
from nwtrain.deploy.mismatch import ChipInstance, instance_seed
from nwtrain.deploy.streaming import StreamSettings, activity_segments, detect_keywords, window_starts
from nwtrain.errors import ConfigError
from nwtrain.runs import load_model, load_run, train
from nwtrain.training.checkpoint import load_checkpoint

RATE = 16000


def tone_bursts(onsets_s, length_s=0.3, total_s=6.0, noise_db=-50.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(length_s * RATE)) / RATE
    x = rng.standard_normal(int(total_s * RATE)) * 10 ** (noise_db / 20)
    for k, onset in enumerate(onsets_s):
        start = int(onset * RATE)
        x[start : start + len(t)] += 0.3 * np.sin(2 * np.pi * (300 + 100 * k) * t)
    return x


def test_activity_segments_start_at_the_bursts():
    onsets = [0.5, 1.7, 3.05, 4.4]
    found = activity_segments(tone_bursts(onsets), RATE, StreamSettings())
    assert len(found) == len(onsets)
    for (start, end), onset in zip(found, onsets):
        assert abs(start - onset) <= 0.01 and abs(end - (onset + 0.3)) <= 0.01


def test_activity_segments_merge_short_gaps_and_drop_clicks():
    x = tone_bursts([1.0, 1.4], length_s=0.3)  # 0.1 s apart: one word with a stop inside
    x[int(3 * RATE) : int(3.02 * RATE)] += 0.5  # a 20 ms click
    found = activity_segments(x, RATE, StreamSettings())
    assert [(round(a, 2), round(b, 2)) for a, b in found] == [(1.0, 1.7)]
    assert activity_segments(np.zeros(RATE), RATE, StreamSettings()) == []


def test_windows_hold_the_whole_stretch_and_stay_in_the_recording():
    starts = window_starts(2.0, 2.4, 1.0, 10.0, 0.1)
    assert np.allclose(starts, np.arange(1.4, 2.0 + 1e-9, 0.1))
    assert all(s <= 2.0 and s + 1.0 >= 2.4 for s in starts)
    assert np.allclose(window_starts(0.1, 0.5, 1.0, 10.0, 0.1), [0.0, 0.1])  # clipped at the start
    assert np.allclose(window_starts(1.0, 3.0, 1.0, 10.0, 0.1), [1.5])  # longer than the window: centred


@pytest.mark.parametrize(
    "field, value, message",
    [("hop_s", 0.0, "stream.hop_s must be > 0"), ("edge_db", 20.0, "must not exceed threshold_db")],
)
def test_stream_settings_name_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        StreamSettings(**{field: value})


def test_detect_keywords_sums_the_windows_of_a_stretch():
    wave = torch.from_numpy(tone_bursts([2.0])).float()
    calls = []

    def counts_fn(windows):
        calls.append(windows.shape)
        return np.tile([1.0, 3.0], (len(windows), 1))

    (det,) = detect_keywords(wave, RATE, 1.0, counts_fn, StreamSettings(hop_s=0.1))
    n_windows = sum(shape[0] for shape in calls)
    assert calls[0][1] == RATE and n_windows == 8  # starts 1.3 .. 2.0
    assert det.label == 1 and det.counts == (n_windows, 3 * n_windows) and not det.silent
    assert det.confidence == pytest.approx(1 / (1 + np.exp(-2.0)))


def spoken_stream(path: Path, seed: int = 0, total_s: float = 20.0) -> list[tuple[str, float]]:
    """A recording of yes / no spoken by the embedded corpus's test voices, one after another with pauses
    of 0.3 to 0.8 s, at levels from -20 to -3 dBFS over a noise floor at -45 dB; returns each word and its
    true onset (where its synthesised audio first reaches 2 % of its peak)."""
    rng = np.random.default_rng(seed)
    voices = sorted(v for v, split in speaker_splits(0).items() if split == "test")
    wave = np.zeros(int(total_s * RATE))
    truth, t = [], 0.3
    while True:
        word = str(rng.choice(["yes", "no"]))
        voice = f"en-us+{rng.choice(voices)}"
        samples, _ = synthesize(word, voice, int(rng.integers(130, 200)), int(rng.integers(25, 75)))
        x = resample_poly(samples / 32768.0, RATE // 50, ESPEAK_SAMPLE_RATE // 50)
        x = x[int(np.argmax(np.abs(x) > 0.02 * np.abs(x).max())) :]
        x *= 10 ** (rng.uniform(-20, -3) / 20) / np.abs(x).max()
        start = int(t * RATE)
        if start + len(x) > len(wave):
            break
        wave[start : start + len(x)] += x
        truth.append((word, round(t, 3)))
        t += len(x) / RATE + rng.uniform(0.3, 0.8)
    wave += rng.standard_normal(len(wave)) * 10 ** (-45 / 20)
    sf.write(path, wave.astype(np.float32), RATE)
    return truth


def test_streaming_predict_finds_the_keywords_at_their_onsets(tmp_path_factory, tmp_path):
    cache = tiny_cache(tmp_path_factory)
    run = tmp_path / "run"
    proc = run_cli([*tiny_overrides(cache, "experiment=yesno_h1v1_hw"), f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    truth = spoken_stream(tmp_path / "long.wav")
    assert len(truth) >= 18
    out = tmp_path / "predict"
    proc = run_cli(
        [
            f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
            f"audio={tmp_path / 'long.wav'}",
            "stream=true",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
        entry="predict_main",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "detections.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "file",
        "onset_s",
        "end_s",
        "class",
        "confidence",
        "count_yes",
        "count_no",
        "silent_output",
    ]
    onsets = np.array([float(r["onset_s"]) for r in rows])
    found = [word for word, onset in truth if np.abs(onsets - onset).min() <= 0.1]
    assert len(found) >= 0.9 * len(truth), (truth, onsets)
    assert len(rows) <= len(truth) + 1  # no stream of false alarms from the background


def test_chip_instance_is_the_chip_nwtrain_eval_draws(tmp_path_factory, tmp_path):
    cache = tiny_cache(tmp_path_factory)
    run = tmp_path / "run"
    train(compose_config(tiny_overrides(cache, "experiment=yesno_h1v1_mismatch", f"paths.output_dir={run}")))
    ckpt = run / "checkpoints" / "best.ckpt"
    x = torch.rand(2, 10, 13)
    chip3 = checkpoint_model(load_checkpoint(ckpt), torch.device("cpu"), chip_instance=3)
    nominal = checkpoint_model(load_checkpoint(ckpt), torch.device("cpu"))
    # nwtrain-eval's instance 3: its population model (the chip's offsets and leaks) on instance 3's seed
    eval_cfg = compose_config(
        [
            f"ckpt_path={ckpt}",
            f"paths.output_dir={tmp_path / 'e'}",
            f"paths.cache_dir={cache}",
            "trainer.device=cpu",
        ],
        config_name="eval",
    )
    population = load_model(load_run(eval_cfg), stddev=0.02, ileak_mismatch=True)
    expected = ChipInstance(population, instance_seed(42, 3))
    for model in (chip3, expected, nominal):
        model(x)
    offset = chip3.model.syn_hidden._offset
    assert torch.equal(offset, expected.model.syn_hidden._offset) and offset.abs().max() > 0
    assert torch.equal(chip3.model.hidden.Vleak, expected.model.hidden.Vleak)
    assert not torch.equal(chip3.model.hidden.Vleak, nominal.model.hidden.Vleak)
    assert nominal.model.syn_hidden._offset is None
    lif = tmp_path / "lif"
    train(compose_config(tiny_overrides(cache, "experiment=yesno_lif", f"paths.output_dir={lif}")))
    with pytest.raises(ConfigError, match="chip_instance: the LIF baseline has no mismatch model"):
        checkpoint_model(load_checkpoint(lif / "checkpoints" / "best.ckpt"), torch.device("cpu"), 0)
