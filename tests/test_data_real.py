"""Real recordings through the same readers: Speech Commands v0.02 excerpt and FSDD, when present.

They live in ``../shared/data`` next to the repository (see their READMEs) and are never copied into it;
a fresh clone without them skips these tests.
"""

from pathlib import Path

import pytest
import torch
from cli_helpers import compose_config

from nwtrain.data import NWaveDataGen, NWaveDataloaderConfig, read_class_folders, read_speech_commands
from nwtrain.data.readers import DEFAULT_SPEAKER_PATTERNS, SPLITS, speaker_of

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH_COMMANDS = SHARED_DATA / "speech_commands"
FSDD = SHARED_DATA / "fsdd"
needs_speech_commands = pytest.mark.skipif(not SPEECH_COMMANDS.is_dir(), reason=f"{SPEECH_COMMANDS} absent")
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} absent")


def speakers(examples):
    return {speaker_of(e.clip.path.name, DEFAULT_SPEAKER_PATTERNS) for e in examples}


@needs_speech_commands
def test_speech_commands_official_split():
    splits = read_speech_commands(SPEECH_COMMANDS, words=["yes", "no"])
    assert sum(e.label == 0 for s in SPLITS for e in splits.split(s)) == 285  # README: yes 285, no 290
    assert sum(e.label == 1 for s in SPLITS for e in splits.split(s)) == 290
    listed_val = set((SPEECH_COMMANDS / "validation_list.txt").read_text().split())
    listed_test = set((SPEECH_COMMANDS / "testing_list.txt").read_text().split())
    as_listed = {
        s: {f"{e.clip.path.parent.name}/{e.clip.path.name}" for e in splits.split(s)} for s in SPLITS
    }
    assert as_listed["val"] == {n for n in listed_val if n.split("/")[0] in ("yes", "no")}
    assert as_listed["test"] == {n for n in listed_test if n.split("/")[0] in ("yes", "no")}
    train, val, test = (speakers(splits.split(s)) for s in SPLITS)
    assert train.isdisjoint(val | test)


@needs_speech_commands
def test_speech_commands_features(tmp_path):
    dm = NWaveDataGen(
        SPEECH_COMMANDS,
        16000,
        1.0,
        8e-3,
        NWaveDataloaderConfig(batch_size=32, num_workers=2),
        layout="speech_commands",
        words=["yes", "no"],
        unknown=True,
        silence=True,
        cache_dir=tmp_path,
        progress=False,
    )
    x, y = next(iter(dm.dataloaders()["train"]))
    assert x.shape == (32, 125, 13) and set(y.tolist()) <= {0, 1, 2, 3}
    assert 0 <= x.min() and x.max() <= 1.0
    assert dm.skipped_files == []


@needs_fsdd
def test_fsdd_speaker_disjoint_split_and_resampling(tmp_path):
    config = NWaveDataloaderConfig(
        batch_size=16, val_split=0.25, test_split=0.0, random_state=0, num_workers=2
    )
    splits = read_class_folders(FSDD, ["zero", "one"], val_split=0.25, split_by="speaker")
    assert len(speakers(splits.val)) == 1 and len(speakers(splits.train)) == 3
    assert speakers(splits.val).isdisjoint(speakers(splits.train))
    dm = NWaveDataGen(
        FSDD,
        16000,
        1.0,
        8e-3,
        config,
        words=["zero", "one"],
        split_by="speaker",
        cache_dir=tmp_path,
        progress=False,
    )
    datasets = dm.datasets()
    assert len(datasets["train"]) == 300 and len(datasets["val"]) == 100  # 50 takes x 2 digits per speaker
    assert datasets["train"].features.shape[1:] == (125, 13)  # 8 kHz recordings resampled to 16 kHz
    native = NWaveDataGen(
        FSDD, 8000, 1.0, 8e-3, config, words=["zero"], split_by="speaker", use_cache=False, progress=False
    )
    assert native.n_channels == 11  # 100 Hz * 2^(k/2) < 4 kHz for k = 0..10
    assert torch.isfinite(native.datasets()["train"].features).all()


@needs_speech_commands
def test_ten_word_experiment_reads_every_clip_of_the_excerpt():
    cfg = compose_config(["experiment=words_sc_lif", f"paths.real_data_dir={SHARED_DATA}"])
    splits = read_speech_commands(Path(cfg.data.data_parent), words=list(cfg.data.words))
    assert splits.classes == list(cfg.data.words) and len(splits.classes) == 10
    assert sum(len(splits.split(s)) for s in SPLITS) == 2863  # README: 2,863 clips, ten words
    train, val, test = (speakers(splits.split(s)) for s in SPLITS)
    assert train.isdisjoint(val | test) and val.isdisjoint(test)
