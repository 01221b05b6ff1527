"""NWaveDataGen: loaders and batches, resampling and mixing, the feature cache, bad files, errors."""

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from nwtrain.data import AudioFileError, NWaveDataGen, NWaveDataloaderConfig
from nwtrain.data.audio import ClipRef, change_speed, load_clips
from nwtrain.data.datagen import FeatureDataset


def make(root, tmp_path, **kwargs):
    config = kwargs.pop(
        "config", NWaveDataloaderConfig(batch_size=8, val_split=0.15, test_split=0.1, random_state=123)
    )
    return NWaveDataGen(
        root, 16000, 1.0, 8e-3, config, cache_dir=tmp_path / "cache", progress=False, **kwargs
    )


def test_tutorial_call_and_batches(speaker_tree, tmp_path):
    config = NWaveDataloaderConfig(
        batch_size=16, val_split=0.15, test_split=0.0, random_state=123, num_workers=2, shuffle_train=True
    )
    dm = NWaveDataGen(
        data_parent=speaker_tree,
        sample_rate=16000,
        recording_duration_s=1.0,
        sim_time_s=8e-3,
        dataloader_config=config,
        task="classification",
        return_filename=True,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    loaders = dm.dataloaders()
    x, y, filenames = next(iter(loaders["train"]))
    assert x.shape == (16, 125, 13) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert dm.n_channels == x.shape[2] == 13
    assert dm.classes == ["high", "low"]
    assert all(f.split("/")[0] in dm.classes for f in filenames)
    assert (
        len(loaders["train"].dataset) == 34 and len(loaders["val"].dataset) == 6
    )  # round(20 * 0.15) = 3 / class
    assert len(loaders["test"].dataset) == 0 and list(loaders["test"]) == []


def test_labels_follow_words_order_and_content(speaker_tree, tmp_path):
    dm = make(speaker_tree, tmp_path, words=["low", "high"])
    train = dm.datasets()["train"]
    assert dm.classes == ["low", "high"]
    # 300 Hz lies in channel 3 (283 Hz), 2.5 kHz in channel 9 (2263 Hz) / 10 (3200 Hz)
    peak_channel = train.features.mean(dim=1).argmax(dim=1)
    assert set(peak_channel[train.labels == 0].tolist()) == {3}
    assert set(peak_channel[train.labels == 1].tolist()) <= {9, 10}


def test_without_filenames_batches_are_pairs(speaker_tree, tmp_path):
    batch = next(iter(make(speaker_tree, tmp_path).dataloaders()["val"]))
    assert len(batch) == 2


def test_48k_gives_16_channels(tmp_path, tone_writer):
    for cls, freq in (("a", 400), ("b", 12000)):
        for i in range(4):
            tone_writer(tmp_path / "data" / cls / f"{i}.wav", freq, sample_rate=48000, seed=i)
    dm = NWaveDataGen(
        tmp_path / "data",
        48000,
        1.0,
        8e-3,
        NWaveDataloaderConfig(batch_size=4, val_split=0.25),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    x, _ = next(iter(dm.dataloaders()["train"]))
    assert x.shape == (4, 125, 16) and dm.n_channels == 16


def test_resampling_stereo_and_length(tmp_path, tone_writer):
    tone_writer(tmp_path / "data" / "a" / "short_8k.wav", 1000, sample_rate=8000, seconds=0.4)
    tone_writer(
        tmp_path / "data" / "a" / "long_stereo_44k.wav", 1000, sample_rate=44100, seconds=1.7, channels=2
    )
    dm = make(tmp_path / "data", tmp_path, config=NWaveDataloaderConfig(val_split=0.0), return_filename=True)
    train = dm.datasets()["train"]
    assert train.filenames == ["a/long_stereo_44k.wav", "a/short_8k.wav"]
    features = train.features
    assert features.shape == (2, 125, 13)
    energy = features.sum(dim=2)
    assert energy[0].min() > 0.5  # the 1.7 s clip is trimmed to 1 s of tone
    assert energy[1, 60:].max() < 1e-3  # the 0.4 s clip is zero-padded at the end (filters ring down)
    assert features[:, 10:40].mean(dim=1).argmax(dim=1).tolist() == [7, 7]  # 1 kHz: channel 7 (1131 Hz)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_keeps_a_tone_and_says_so_once(tmp_path, rate, caplog):
    t = np.arange(rate) / rate
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440.0 * t), rate, subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="nwtrain.data.audio"):
        waveforms, failures = load_clips([ClipRef(tmp_path / "tone.wav")] * 2, 16000, 1.0)
    assert caplog.messages == [f"resampling 2 clips from {rate} Hz to 16000 Hz"]
    waveforms = waveforms[:1]
    expected = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(16000) / 16000)
    assert not failures and waveforms.shape == (1, 16000)
    # away from the clip's ends, where the resampling filter sees the zero padding
    assert np.allclose(waveforms[0, 500:-500].numpy(), expected[500:-500], atol=1e-3)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_change_speed_scales_pitch_and_duration(factor):
    rate = 16000
    t = torch.arange(rate) / rate
    burst = torch.where(t < 0.5, torch.sin(2 * torch.pi * 440.0 * t), torch.zeros(()))[None]
    played = change_speed(burst, factor)
    assert played.shape == burst.shape
    spectrum = torch.fft.rfft(played[0]).abs()
    assert spectrum.argmax().item() == pytest.approx(440.0 * factor, abs=2)  # 1 Hz bins
    loud = (played[0].abs() > 0.1).nonzero()
    assert loud.max().item() / rate == pytest.approx(0.5 / factor, abs=2e-3)
    with pytest.raises(ValueError, match="speed factor must be > 0, got -1"):
        change_speed(burst, -1)


def test_speed_copies_join_the_training_split_only(speaker_tree, tmp_path):
    plain = make(speaker_tree, tmp_path, return_filename=True).datasets()
    dm = make(speaker_tree, tmp_path, return_filename=True, train_speed_factors=[0.9, 1.1])
    data = dm.datasets()
    n = len(plain["train"])
    assert len(data["train"]) == 3 * n
    for split in ("val", "test"):
        assert torch.equal(data[split].features, plain[split].features)
    assert torch.equal(data["train"].features[:n], plain["train"].features)
    assert torch.equal(data["train"].labels, plain["train"].labels.repeat(3))
    assert data["train"].filenames[n] == plain["train"].filenames[0] + "@speed0.9"
    waves, _ = load_clips([ClipRef(speaker_tree / name) for name in plain["train"].filenames], 16000, 1.0)
    expected = dm.filterbank(change_speed(waves, 1.1))
    assert torch.allclose(data["train"].features[2 * n :], expected, atol=1e-6)


def test_seeded_shuffle_and_identical_features(speaker_tree, tmp_path):
    def first_labels(dm):
        return torch.cat([y for _, y in dm.dataloaders()["train"]])

    a = make(speaker_tree, tmp_path, use_cache=False)
    b = make(speaker_tree, tmp_path, use_cache=False)
    assert torch.equal(a.datasets()["train"].features, b.datasets()["train"].features)
    assert torch.equal(first_labels(a), first_labels(b))


def test_warm_cache_skips_recomputation(speaker_tree, tmp_path, monkeypatch):
    cold = make(speaker_tree, tmp_path)
    cold_train = cold.datasets()["train"]
    assert not cold.loaded_from_cache
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1

    def fail(*args):
        raise AssertionError("features recomputed on a warm start")

    monkeypatch.setattr(NWaveDataGen, "_compute", fail)
    warm = make(speaker_tree, tmp_path)
    assert torch.equal(warm.datasets()["train"].features, cold_train.features)
    assert warm.loaded_from_cache
    # a different split of the same files reuses the same features
    other_split = make(speaker_tree, tmp_path, config=NWaveDataloaderConfig(val_split=0.3, random_state=9))
    other_split.datasets()
    assert other_split.loaded_from_cache


def test_cache_key_follows_content_and_parameters(speaker_tree, tmp_path):
    make(speaker_tree, tmp_path).datasets()
    victim = sorted((speaker_tree / "low").glob("*.wav"))[0]
    data, rate = sf.read(victim, dtype="int16")
    sf.write(victim, data[::-1].copy(), rate, subtype="PCM_16")  # same size, new content
    changed = make(speaker_tree, tmp_path)
    changed.datasets()
    assert not changed.loaded_from_cache
    coarser = NWaveDataGen(speaker_tree, 16000, 1.0, 16e-3, cache_dir=tmp_path / "cache", progress=False)
    assert coarser.datasets()["train"].features.shape[1] == 62
    assert not coarser.loaded_from_cache
    denser = make(speaker_tree, tmp_path, bands_per_octave=6)
    assert denser.datasets()["train"].features.shape[2] == 38  # sixth-octave bands below 8 kHz
    assert not denser.loaded_from_cache


def test_corrupt_cache_file_is_recomputed(speaker_tree, tmp_path):
    make(speaker_tree, tmp_path).datasets()
    for path in (tmp_path / "cache" / "features").glob("*.pt"):
        path.write_bytes(b"not a torch file")
    dm = make(speaker_tree, tmp_path)
    assert len(dm.datasets()["train"]) > 0 and not dm.loaded_from_cache


@pytest.fixture
def tree_with_bad_files(speaker_tree):
    bad = {
        "corrupt": speaker_tree / "low" / "9_zed_0.wav",
        "empty": speaker_tree / "low" / "9_zed_1.wav",
        "no_frames": speaker_tree / "high" / "9_zed_2.wav",
    }
    bad["corrupt"].write_bytes(b"RIFF" + np.random.default_rng(0).bytes(3000))
    bad["empty"].write_bytes(b"")
    sf.write(bad["no_frames"], np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    return speaker_tree, bad


def test_bad_file_error_names_the_file(tree_with_bad_files, tmp_path):
    root, bad = tree_with_bad_files
    dm = make(root, tmp_path, config=NWaveDataloaderConfig(val_split=0.0))
    with pytest.raises(AudioFileError) as info:
        dm.dataloaders()
    assert str(bad["no_frames"]) in str(info.value)  # "high" sorts first, so it is met first


@pytest.mark.parametrize("kind", ["corrupt", "empty", "no_frames"])
def test_each_bad_file_kind_is_reported(tmp_path, tone_writer, kind):
    from nwtrain.data import ClipRef, read_clip

    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00garbage" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        sf.write(path, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioFileError, match=str(path)):
        read_clip(ClipRef(path), 1.0)


def test_missing_file_is_reported(tmp_path):
    from nwtrain.data import ClipRef, read_clip

    with pytest.raises(AudioFileError, match="nothere.wav"):
        read_clip(ClipRef(tmp_path / "nothere.wav"), 1.0)


def test_bad_files_skipped_and_counted(tree_with_bad_files, tmp_path, caplog):
    root, bad = tree_with_bad_files
    config = NWaveDataloaderConfig(val_split=0.0)
    with caplog.at_level(logging.WARNING, logger="nwtrain.data.datagen"):
        dm = make(root, tmp_path, config=config, on_bad_file="skip")
        train = dm.datasets()["train"]
    assert sorted(dm.skipped_files) == sorted(str(p) for p in bad.values())
    assert len(train) == 40 and train.features.shape == (40, 125, 13)
    assert any("skipped 3 unreadable" in m for m in caplog.messages)
    warm = make(root, tmp_path, config=config, on_bad_file="skip")
    warm.datasets()
    assert warm.loaded_from_cache and len(warm.skipped_files) == 3
    strict = make(root, tmp_path, config=config)  # the cache holds skipped files: "error" still raises
    with pytest.raises(AudioFileError, match="9_zed"):
        strict.datasets()


def test_speaker_split_through_datagen(speaker_tree, tmp_path):
    dm = make(speaker_tree, tmp_path, split_by="speaker", return_filename=True)
    sets = {s: {f.split("_")[1] for f in d.filenames} for s, d in dm.datasets().items()}
    assert sets["train"].isdisjoint(sets["val"] | sets["test"]) and sets["val"] and sets["test"]


def test_speech_commands_layout(mini_speech_commands, tmp_path):
    dm = make(
        mini_speech_commands,
        tmp_path,
        layout="speech_commands",
        words=["yes", "no"],
        unknown=True,
        silence=True,
        return_filename=True,
    )
    assert dm.classes == ["yes", "no", "_unknown_", "_silence_"]
    val = dm.datasets()["val"]
    assert len(val) == 6 + 3 + 3
    assert any(f.startswith("_background_noise_/") and f.endswith("s") for f in val.filenames)
    x, y, _ = next(iter(dm.dataloaders()["train"]))
    assert x.shape[1:] == (125, 13) and int(y.max()) <= 3


def test_cross_validation_fold_replaces_the_validation_list(mini_speech_commands, tmp_path):
    plain = make(mini_speech_commands, tmp_path, layout="speech_commands", words=["yes", "no"])
    folds = [
        make(
            mini_speech_commands,
            tmp_path,
            layout="speech_commands",
            words=["yes", "no"],
            cv_folds=3,
            cv_fold=k,
        )
        for k in range(3)
    ]
    pooled = sorted(plain.datasets()["train"].filenames + plain.datasets()["val"].filenames)
    assert sorted(f for dm in folds for f in dm.datasets()["val"].filenames) == pooled
    assert all(dm.datasets()["test"].filenames == plain.datasets()["test"].filenames for dm in folds)
    assert all(dm.loaded_from_cache for dm in folds)  # the same clips: the features are not recomputed


def test_missing_root_and_word(tmp_path, speaker_tree):
    with pytest.raises(FileNotFoundError, match="tones"):
        make(speaker_tree.parent / "tonez", tmp_path)
    with pytest.raises(ValueError, match=r"\['mid'\] not found.*\['high', 'low'\]"):
        make(speaker_tree, tmp_path, words=["low", "mid"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="segmentation"), "task must be one of"),
        (dict(layout="kaldi"), "layout"),
        (dict(on_bad_file="ignore"), "on_bad_file"),
        (dict(unknown=True), "speech_commands"),
        (dict(split_by="session"), "split_by"),
        (dict(bands_per_octave=0), "bands_per_octave must be an integer >= 1, got 0"),
        (dict(train_speed_factors=[1.1, 0]), r"train_speed_factors must be > 0, got \[1.1, 0.0\]"),
    ],
)
def test_invalid_arguments(speaker_tree, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(speaker_tree, tmp_path, **kwargs)


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        NWaveDataloaderConfig(batch_size=0)


def test_loader_survives_torch_save(speaker_tree, tmp_path):
    loader = make(speaker_tree, tmp_path, return_filename=True).dataloaders()["val"]
    torch.save(loader, tmp_path / "val.pt")  # tutorial 4 saves and reloads its loaders
    restored = torch.load(tmp_path / "val.pt", weights_only=False)
    assert isinstance(restored.dataset, FeatureDataset)
    assert torch.equal(next(iter(restored))[0], next(iter(loader))[0])
