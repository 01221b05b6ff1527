"""Dataset readers: the Speech Commands layout and its lists, class folders, seeded and speaker splits."""

import pytest

from nwtrain.data import SILENCE_CLASS, UNKNOWN_CLASS, read_class_folders, read_speech_commands
from nwtrain.data.readers import DEFAULT_SPEAKER_PATTERNS, NOISE_REGIONS, SPLITS, speaker_folds, speaker_of


def names(examples):
    return {f"{e.clip.path.parent.name}/{e.clip.path.name}" for e in examples}


def speakers(examples):
    return {speaker_of(e.clip.path.name, DEFAULT_SPEAKER_PATTERNS) for e in examples}


def test_speech_commands_honours_the_split_lists(mini_speech_commands):
    splits = read_speech_commands(mini_speech_commands, words=["yes", "no"])
    listed = {
        s: set((mini_speech_commands / f).read_text().split())
        for s, f in (("val", "validation_list.txt"), ("test", "testing_list.txt"))
    }
    assert splits.classes == ["yes", "no"]
    assert names(splits.val) == {n for n in listed["val"] if not n.startswith("up/")}
    assert names(splits.test) == {n for n in listed["test"] if not n.startswith("up/")}
    assert len(splits.train) == 2 * 2 * 3  # the two unlisted speakers, 3 takes, 2 words
    assert not names(splits.train) & (listed["val"] | listed["test"])
    assert speakers(splits.train).isdisjoint(speakers(splits.val) | speakers(splits.test))


def test_speech_commands_all_words_sorted_without_background_noise(mini_speech_commands):
    assert read_speech_commands(mini_speech_commands).classes == ["no", "up", "yes"]


def test_speech_commands_unknown_and_silence(mini_speech_commands):
    splits = read_speech_commands(mini_speech_commands, words=["yes"], unknown=True, silence=True)
    assert splits.classes == ["yes", UNKNOWN_CLASS, SILENCE_CLASS]
    for split in SPLITS:
        examples = splits.split(split)
        n_yes = sum(e.label == 0 for e in examples)
        unknown = [e for e in examples if e.label == 1]
        silence = [e for e in examples if e.label == 2]
        assert len(unknown) == len(silence) == n_yes  # extra_class_ratio=1: one word class's size
        assert {e.clip.path.parent.name for e in unknown} <= {"no", "up"}
        lo, hi = NOISE_REGIONS[split]
        for e in silence:
            assert e.clip.path.parent.name == "_background_noise_" and e.clip.path.suffix == ".wav"
            assert lo * 10.0 <= e.clip.start_s <= hi * 10.0 - 1.0 + 1e-3  # 10 s recordings, 1 s crops
    val_unknown = {e.clip for e in splits.val if e.label == 1}
    assert {c.path.name.split("_")[0] for c in val_unknown} == {"1b2c3d4e"}  # the validation speaker


def test_speech_commands_extra_classes_are_seeded(mini_speech_commands):
    def draw(seed):
        return read_speech_commands(
            mini_speech_commands,
            ["yes"],
            unknown=True,
            silence=True,
            extra_class_ratio=0.7,
            random_state=seed,
        ).train

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_speech_commands_missing_word_lists_available(mini_speech_commands):
    with pytest.raises(ValueError, match=r"\['maybe'\] not found.*available: \['no', 'up', 'yes'\]"):
        read_speech_commands(mini_speech_commands, words=["yes", "maybe"])


def test_speech_commands_missing_root_lists_parent(tmp_path):
    (tmp_path / "somewhere_else").mkdir()
    with pytest.raises(FileNotFoundError, match="somewhere_else"):
        read_speech_commands(tmp_path / "speech_commands")


def test_speech_commands_requires_lists(speaker_tree):
    with pytest.raises(FileNotFoundError, match="validation_list.txt is missing.*'high', 'low'"):
        read_speech_commands(speaker_tree)


def test_speech_commands_unknown_needs_other_words(mini_speech_commands):
    with pytest.raises(ValueError, match="besides"):
        read_speech_commands(mini_speech_commands, words=["yes", "no", "up"], unknown=True)


def test_folder_seeded_stratified_split(speaker_tree):
    splits = read_class_folders(speaker_tree, val_split=0.15, test_split=0.1, random_state=3)
    assert splits.classes == ["high", "low"]
    for label in (0, 1):  # 20 clips per class: round(3.0) val, round(2.0) test
        assert sum(e.label == label for e in splits.val) == 3
        assert sum(e.label == label for e in splits.test) == 2
        assert sum(e.label == label for e in splits.train) == 15
    again = read_class_folders(speaker_tree, val_split=0.15, test_split=0.1, random_state=3)
    other = read_class_folders(speaker_tree, val_split=0.15, test_split=0.1, random_state=4)
    assert again.val == splits.val and other.val != splits.val


def test_folder_words_select_and_order_classes(speaker_tree):
    assert read_class_folders(speaker_tree, words=["low", "high"]).classes == ["low", "high"]
    with pytest.raises(ValueError, match=r"available: \['high', 'low'\]"):
        read_class_folders(speaker_tree, words=["mid"])


def test_folder_speaker_split_is_disjoint(speaker_tree):
    splits = read_class_folders(
        speaker_tree, val_split=0.2, test_split=0.2, random_state=0, split_by="speaker"
    )
    train, val, test = (speakers(splits.split(s)) for s in SPLITS)
    assert len(val) == 1 and len(test) == 1 and len(train) == 3
    assert train.isdisjoint(val | test) and val.isdisjoint(test)
    assert len(splits.val) == len(splits.test) == 8  # a speaker: 4 takes x 2 classes


@pytest.mark.parametrize("split_by", [None, "speaker"])
def test_named_test_speakers_form_the_test_split(speaker_tree, split_by):
    splits = read_class_folders(
        speaker_tree, val_split=0.25, test_split=0.0, split_by=split_by, test_speakers=["carol"]
    )
    assert speakers(splits.test) == {"carol"} and len(splits.test) == 8
    assert "carol" not in speakers(splits.train) | speakers(splits.val)
    assert len(splits.train) + len(splits.val) == 32
    if split_by == "speaker":
        assert speakers(splits.train).isdisjoint(speakers(splits.val))


def test_named_test_speakers_are_checked(speaker_tree):
    with pytest.raises(ValueError, match=r"\['zoe'\] are not speakers of .* \(it has: alice, bob"):
        read_class_folders(speaker_tree, test_split=0.0, test_speakers=["zoe"])
    with pytest.raises(ValueError, match="test_split must be 0"):
        read_class_folders(speaker_tree, test_split=0.2, test_speakers=["carol"])


def test_speaker_patterns():
    assert speaker_of("0a7c2a8d_nohash_3.wav", DEFAULT_SPEAKER_PATTERNS) == "0a7c2a8d"
    assert speaker_of("7_jackson_32.wav", DEFAULT_SPEAKER_PATTERNS) == "jackson"
    with pytest.raises(ValueError, match="train_yes_1.wav"):
        speaker_of("train_yes_1.wav", DEFAULT_SPEAKER_PATTERNS)


def test_custom_speaker_pattern(speaker_tree):
    # group by the speaker's initial: a, b, c, d, e
    splits = read_class_folders(speaker_tree, val_split=0.2, split_by="speaker", speaker_pattern=r"_(\w)\w*_")
    assert len({e.clip.path.name.split("_")[1] for e in splits.val}) == 1
    with pytest.raises(ValueError, match="capturing group"):
        read_class_folders(speaker_tree, split_by="speaker", speaker_pattern=r"_\w+_")


def test_speaker_split_needs_enough_speakers(tmp_path, tone_writer):
    tone_writer(tmp_path / "a" / "1_solo_0.wav", 300)
    with pytest.raises(ValueError, match="no speaker for training"):
        read_class_folders(tmp_path, val_split=0.2, split_by="speaker")


@pytest.mark.parametrize("val_split, test_split", [(-0.1, 0.0), (0.6, 0.5), (1.0, 0.0)])
def test_invalid_fractions(speaker_tree, val_split, test_split):
    with pytest.raises(ValueError, match="val_split"):
        read_class_folders(speaker_tree, val_split=val_split, test_split=test_split)


def test_empty_class_folder(speaker_tree):
    (speaker_tree / "mid").mkdir()
    with pytest.raises(ValueError, match="mid has no audio files"):
        read_class_folders(speaker_tree)


def test_speaker_folds_validate_each_pooled_clip_once(mini_speech_commands):
    splits = read_speech_commands(mini_speech_commands, words=["yes", "no"], unknown=True)
    pooled = names(splits.train) | names(splits.val)
    seen = []
    for fold in range(3):  # three speakers in the training and validation lists
        cv = speaker_folds(splits, 3, fold)
        assert names(cv.train) | names(cv.val) == pooled and not names(cv.train) & names(cv.val)
        assert speakers(cv.train).isdisjoint(speakers(cv.val)) and len(speakers(cv.val)) == 1
        assert cv.test == splits.test and cv.classes == splits.classes
        seen += sorted(names(cv.val))
    assert sorted(seen) == sorted(pooled)


def test_speaker_folds_balance_whole_speakers_by_seed(speaker_tree):
    splits = read_class_folders(speaker_tree, test_speakers=["erin"], val_split=0.25, test_split=0)
    groupings = set()
    for seed in range(6):
        folds = [speaker_folds(splits, 2, f, random_state=seed) for f in (0, 1)]
        assert [len(cv.val) for cv in folds] == [16, 16]  # 4 speakers x 8 clips, two per fold
        assert speakers(folds[0].val) == speakers(folds[1].train)
        assert speakers(speaker_folds(splits, 2, 0, random_state=seed).val) == speakers(folds[0].val)
        groupings.add(frozenset(speakers(folds[0].val)))
    assert len(groupings) > 1


def test_speaker_folds_keep_silence_crops_in_their_split(mini_speech_commands):
    splits = read_speech_commands(mini_speech_commands, words=["yes"], silence=True)
    cv = speaker_folds(splits, 3, 1)
    for split in ("train", "val"):
        crops = [{e.clip for e in s.split(split) if e.label == 1} for s in (cv, splits)]
        assert crops[0] == crops[1] and crops[0]


@pytest.mark.parametrize(
    "folds, fold, message",
    [
        (1, 0, "cv_folds must be an integer >= 2"),
        (3, 3, "cv_fold must be an integer in 0..2"),
        (4, 0, "cv_folds=4 needs at least 4 speakers .* they have 3"),
    ],
)
def test_speaker_folds_errors(mini_speech_commands, folds, fold, message):
    splits = read_speech_commands(mini_speech_commands, words=["yes"])
    with pytest.raises(ValueError, match=message):
        speaker_folds(splits, folds, fold)
