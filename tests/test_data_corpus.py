"""The embedded espeak-ng corpus: layout, voice-disjoint lists, determinism, reuse, partial regeneration."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from nwtrain.data import (
    CORPUS_WORDS,
    NWaveDataGen,
    NWaveDataloaderConfig,
    ensure_embedded_corpus,
    read_speech_commands,
)
from nwtrain.data import corpus as corpus_module
from nwtrain.data.corpus import (
    FOREIGN_ACCENTS,
    NOISE_NAMES,
    SPEAKER_VARIANTS,
    VOICE_FAMILIES,
    _matched_pairs,
    pronunciations,
    speaker_id,
    speaker_splits,
    voice_traits,
)
from nwtrain.data.espeak import synthesize


def tree_digest(root):
    """sha256 of every file's relative path and bytes (the lock file excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock"):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_speech_commands_layout(tiny_corpus):
    assert (tiny_corpus / "validation_list.txt").is_file() and (tiny_corpus / "testing_list.txt").is_file()
    assert sorted(p.stem for p in (tiny_corpus / "_background_noise_").glob("*.wav")) == sorted(NOISE_NAMES)
    for word in ("yes", "no"):
        files = sorted((tiny_corpus / word).glob("*.wav"))
        assert len(files) == 30
        for path in files[:5]:
            assert "_nohash_" in path.name
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
            data, _ = sf.read(path)
            assert 0.02 < np.abs(data).max() < 1.0  # a level was drawn, never clipped silent
    manifest = json.loads((tiny_corpus / "manifest.json").read_text())
    assert set(manifest["words"]) == {"yes", "no"}
    assert len(manifest["words"]["yes"]["recipes"]) == 30


def test_split_lists_are_voice_disjoint(tiny_corpus):
    splits = read_speech_commands(tiny_corpus)
    ids = {
        s: {e.clip.path.name.split("_nohash_")[0] for e in splits.split(s)} for s in ("train", "val", "test")
    }
    assert all(ids.values())
    assert ids["train"].isdisjoint(ids["val"] | ids["test"]) and ids["val"].isdisjoint(ids["test"])
    expected = {speaker_id(v): s for v, s in speaker_splits(0).items()}
    assert all(expected[i] == s for s, group in ids.items() for i in group)
    assert 0.1 < len(splits.val) / 60 < 0.3 and 0.1 < len(splits.test) / 60 < 0.3


def test_validation_and_test_are_stratified_by_voice_family_and_twinned(tiny_corpus):
    splits = speaker_splits(0)
    for family, voices in VOICE_FAMILIES.items():
        held = [splits[v] for v in voices]
        assert held.count("val") == held.count("test") >= 1, family
        # Matched pairs: each held-out voice's mate (its nearest alike voice) is in the other list.
        for a, b in _matched_pairs(sorted(voices)):
            assert {splits[a], splits[b]} in ({"train"}, {"val", "test"}), (a, b)
    f0 = {v: voice_traits(v)[0] for v in VOICE_FAMILIES["male"]}
    mean = {s: np.mean([f for v, f in f0.items() if splits[v] == s]) for s in ("val", "test")}
    assert abs(mean["val"] - mean["test"]) < 5  # Hz: the lists' male voices have alike pitches
    assert sum(s == "val" for s in splits.values()) == 13 and len(splits) == len(SPEAKER_VARIANTS) == 67
    assert speaker_splits(1) != splits  # the seed chooses the voices
    # Twins: the n-th validation and the n-th test clip of a word share every augmentation, not the voice.
    manifest = json.loads((tiny_corpus / "manifest.json").read_text())
    split_of = {speaker_id(v): s for v, s in splits.items()}
    for word in ("yes", "no"):
        held_out = {"val": [], "test": []}
        for recipe in manifest["words"][word]["recipes"]:
            split = split_of[recipe["file"].split("_nohash_")[0]]
            if split in held_out:
                held_out[split].append(recipe)
        pairs = list(zip(held_out["val"], held_out["test"]))
        assert len(pairs) >= 3
        for val, test in pairs:
            assert val["speaker"] != test["speaker"]
            strip = ("file", "speaker")
            assert {k: v for k, v in val.items() if k not in strip} == {
                k: v for k, v in test.items() if k not in strip
            }


def test_same_seed_byte_identical_other_seed_differs(tiny_corpus, tmp_path):
    again = ensure_embedded_corpus(tmp_path / "a", words=["yes", "no"], clips_per_word=30, progress=False)
    assert again.name == tiny_corpus.name
    assert tree_digest(again) == tree_digest(tiny_corpus)
    other = ensure_embedded_corpus(tmp_path / "b", words=["yes"], seed=1, clips_per_word=30, progress=False)
    assert other.name != tiny_corpus.name
    assert (other / "yes").is_dir()
    assert tree_digest(other / "yes") != tree_digest(tiny_corpus / "yes")


def test_words_are_added_incrementally_and_identically(tiny_corpus, tmp_path):
    root = ensure_embedded_corpus(tmp_path, words=["no"], clips_per_word=30, progress=False)
    ensure_embedded_corpus(tmp_path, words=["yes"], clips_per_word=30, progress=False)
    assert tree_digest(root / "no") == tree_digest(tiny_corpus / "no")
    assert tree_digest(root / "yes") == tree_digest(tiny_corpus / "yes")
    assert (root / "validation_list.txt").read_bytes() == (tiny_corpus / "validation_list.txt").read_bytes()


def test_complete_corpus_is_reused(tiny_corpus, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a complete corpus was regenerated")

    monkeypatch.setattr(corpus_module, "_generate_word", fail)
    assert (
        ensure_embedded_corpus(tiny_corpus.parent, words=["yes", "no"], clips_per_word=30, progress=False)
        == tiny_corpus
    )


def test_partial_corpus_is_regenerated(tiny_corpus, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_corpus, root / tiny_corpus.name)
    corpus = root / tiny_corpus.name
    sorted((corpus / "yes").glob("*.wav"))[3].unlink()  # an interrupted word
    (corpus / ".tmp-no-leftover").mkdir()  # an interrupted staging folder
    shutil.copytree(corpus / "no", corpus / "stop")  # a word folder the manifest does not know
    (corpus / "_background_noise_" / "babble.wav").unlink()
    ensure_embedded_corpus(root, words=["yes", "no"], clips_per_word=30, progress=False)
    assert tree_digest(corpus) == tree_digest(tiny_corpus)
    assert not (corpus / "stop").exists()


def test_trains_through_the_datagen(tiny_corpus, tmp_path):
    dm = NWaveDataGen(
        tiny_corpus,
        16000,
        1.0,
        8e-3,
        NWaveDataloaderConfig(batch_size=8),
        layout="speech_commands",
        words=["yes", "no"],
        silence=True,
        cache_dir=tmp_path,
        progress=False,
    )
    x, y = next(iter(dm.dataloaders()["train"]))
    assert x.shape == (8, 125, 13) and dm.classes == ["yes", "no", "_silence_"]
    again = NWaveDataGen(
        tiny_corpus,
        16000,
        1.0,
        8e-3,
        NWaveDataloaderConfig(batch_size=8),
        layout="speech_commands",
        words=["yes", "no"],
        silence=True,
        use_cache=False,
        progress=False,
    )
    assert torch.equal(again.datasets()["train"].features, dm.datasets()["train"].features)


def test_every_accent_says_every_default_word():
    for word in CORPUS_WORDS:
        assert set(FOREIGN_ACCENTS) <= set(pronunciations(word)), word


def test_espeak_is_deterministic_and_reports_phonemes():
    first, phonemes = synthesize("seven", "en-us+m3", 150, 40, 60)
    second, _ = synthesize("seven", "en-us+m3", 150, 40, 60)
    assert first.dtype == np.int16 and len(first) > 4000
    assert np.array_equal(first, second)
    assert [p.lstrip("'") for p in phonemes] == ["s", "E", "v", "@", "n"]
    with pytest.raises(ValueError, match="no voice"):
        synthesize("yes", "xx-nonexistent")


@pytest.mark.parametrize("words", [["Yes"], ["two words"], []])
def test_invalid_words(tmp_path, words):
    with pytest.raises(ValueError, match="lower-case"):
        ensure_embedded_corpus(tmp_path, words=words, progress=False)


@pytest.mark.slow
def test_default_corpus(tmp_path):
    root = ensure_embedded_corpus(tmp_path, progress=False)
    splits = read_speech_commands(root)
    assert splits.classes == sorted(CORPUS_WORDS)
    assert sum(len(splits.split(s)) for s in ("train", "val", "test")) == 400 * len(CORPUS_WORDS)
