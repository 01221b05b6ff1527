"""Dataset readers: Google Speech Commands as it lies on disk, and class-folder trees.

A reader only lists clips and assigns them to classes and splits; decoding and features happen in
:mod:`nwtrain.data.datagen`. Both readers are deterministic for a given ``random_state``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from nwtrain.data.audio import AUDIO_SUFFIXES, AudioFileError, ClipRef
from nwtrain.errors import DataError

UNKNOWN_CLASS = "_unknown_"
SILENCE_CLASS = "_silence_"
BACKGROUND_NOISE_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
SPEECH_COMMANDS_SPEAKER_PATTERN = r"^([0-9a-f]+)_nohash_"  # yes/0a7c2a8d_nohash_0.wav -> 0a7c2a8d
FSDD_SPEAKER_PATTERN = r"^\d+_([a-z]+)_\d+"  # zero/0_george_12.wav -> george
DEFAULT_SPEAKER_PATTERNS = (SPEECH_COMMANDS_SPEAKER_PATTERN, FSDD_SPEAKER_PATTERN)
SPLITS = ("train", "val", "test")
# Silence crops of a background recording come from a split's own stretch of it, so no second of noise
# heard in training reappears in validation or test.
NOISE_REGIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


@dataclass(frozen=True)
class Example:
    """A clip and its class index."""

    clip: ClipRef
    label: int


@dataclass
class DatasetSplits:
    """The classes of a dataset and its train/val/test examples."""

    classes: list[str]
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)

    def split(self, name: str) -> list[Example]:
        """The examples of split ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def folder_contents(folder: Path) -> list[str]:
    """What a folder holds (the first 30 names), for error messages."""
    return sorted(p.name for p in folder.iterdir())[:30] if folder.is_dir() else []


def require_dir(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if root.is_dir():
        return root
    parent = root.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    raise FileNotFoundError(f"{what} {root} does not exist; {parent} contains: {folder_contents(parent)}")


def _class_dirs(root: Path) -> list[str]:
    # "_background_noise_" and hidden folders are not classes
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    )


def _select_words(root: Path, available: list[str], words: Sequence[str] | None) -> list[str]:
    if words is None:
        if not available:
            raise ValueError(f"{root} contains no class folders; found: {folder_contents(root)}")
        return available
    words = list(words)
    if not words:
        raise ValueError("words must name at least one class (or be None for all)")
    if len(set(words)) != len(words):
        raise ValueError(f"words contains duplicates: {words}")
    missing = [w for w in words if w not in available]
    if missing:
        raise ValueError(f"words {missing} not found in {root}; available: {available}")
    return words


def check_fractions(val_split: float, test_split: float) -> None:
    if not (0 <= val_split < 1 and 0 <= test_split < 1 and val_split + test_split < 1):
        raise ValueError(
            f"need 0 <= val_split, test_split and val_split + test_split < 1; "
            f"got val_split={val_split}, test_split={test_split}"
        )


def read_speech_commands(
    root: str | Path,
    words: Sequence[str] | None = None,
    unknown: bool = False,
    silence: bool = False,
    extra_class_ratio: float = 1.0,
    random_state: int = 0,
    clip_duration_s: float = 1.0,
) -> DatasetSplits:
    """Read Google Speech Commands (v0.01 or v0.02) in its own layout, with its official split.

    ``root`` holds one folder per word, ``validation_list.txt``, ``testing_list.txt`` (paths such as
    ``yes/0a7c2a8d_nohash_0.wav``) and ``_background_noise_``. A listed clip belongs to that split; every
    other clip of the word folders is training data, so the official speaker-disjoint split is kept.

    Classes are ``words`` in the given order (all word folders, sorted, when ``None``), then ``_unknown_``
    if ``unknown`` (clips of the remaining words, drawn per split) and ``_silence_`` if ``silence``
    (``clip_duration_s`` crops of the background-noise recordings; each split crops its own stretch of
    every recording, see ``NOISE_REGIONS``). Each extra class gets ``extra_class_ratio`` times the mean
    size of a word class in the same split. Draws are seeded by ``random_state``.
    """
    root = require_dir(Path(root), "Speech Commands root")
    lists = split_lists(root)
    if extra_class_ratio < 0:
        raise ValueError(f"extra_class_ratio must be >= 0, got {extra_class_ratio}")
    available = _class_dirs(root)
    words = _select_words(root, available, words)
    result = DatasetSplits(list(words))
    for label, word in enumerate(words):
        for split, clips in listed_clips(root, word, lists).items():
            result.split(split).extend(Example(c, label) for c in clips)
    word_counts = {s: len(result.split(s)) for s in SPLITS}
    n_extra = {s: round(extra_class_ratio * word_counts[s] / len(words)) for s in SPLITS}
    if unknown:
        others = [w for w in available if w not in words]
        if not others:
            raise ValueError(
                f"unknown=True needs word folders besides {words} in {root}; found only {available}"
            )
        pool: dict[str, list[ClipRef]] = {s: [] for s in SPLITS}
        for word in others:
            for split, clips in listed_clips(root, word, lists).items():
                pool[split].extend(clips)
        add_drawn_class(result, UNKNOWN_CLASS, pool, n_extra, random_state)
    if silence:
        add_silence_class(result, root, n_extra, random_state, clip_duration_s)
    return result


def split_lists(root: Path) -> dict[str, set[str]]:
    """The clips ``validation_list.txt`` and ``testing_list.txt`` of a Speech Commands tree name, by split."""
    lists = {}
    for split, name in (("val", VALIDATION_LIST), ("test", TESTING_LIST)):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: not a Speech Commands tree? {root} contains: {folder_contents(root)}"
            )
        lists[split] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    return lists


def listed_clips(root: Path, word: str, lists: dict[str, set[str]]) -> dict[str, list[ClipRef]]:
    """The clips of ``word``'s folder by split: a listed clip in its list's split, any other in training."""
    out: dict[str, list[ClipRef]] = {s: [] for s in SPLITS}
    for path in _audio_files(root / word):
        rel = f"{word}/{path.name}"
        out["val" if rel in lists["val"] else "test" if rel in lists["test"] else "train"].append(
            ClipRef(path)
        )
    return out


def add_drawn_class(
    result: DatasetSplits, name: str, pool: dict[str, list[ClipRef]], n: dict[str, int], random_state: int
) -> None:
    """A class ``name`` of ``n[split]`` clips drawn without replacement from ``pool[split]`` per split."""
    label = len(result.classes)
    result.classes.append(name)
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([random_state, i, 1])
        k = min(n[split], len(pool[split]))
        picked = sorted(rng.choice(len(pool[split]), size=k, replace=False))
        result.split(split).extend(Example(pool[split][j], label) for j in picked)


def add_silence_class(
    result: DatasetSplits, root: Path, n: dict[str, int], random_state: int, clip_duration_s: float
) -> None:
    """The ``_silence_`` class: ``n[split]`` crops of ``clip_duration_s`` from the background-noise
    recordings, each split from its own stretch of every recording (``NOISE_REGIONS``)."""
    noise_dir = root / BACKGROUND_NOISE_DIR
    noises = _audio_files(noise_dir) if noise_dir.is_dir() else []
    if not noises:
        raise FileNotFoundError(
            f"silence=True needs recordings in {noise_dir}; {root} contains: {folder_contents(root)}"
        )
    durations = []
    for path in noises:
        try:
            durations.append(sf.info(str(path)).duration)
        except (RuntimeError, OSError) as exc:
            raise AudioFileError(f"{path}: cannot be read as audio ({exc})") from exc
    label = len(result.classes)
    result.classes.append(SILENCE_CLASS)
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([random_state, i, 2])
        lo, hi = NOISE_REGIONS[split]
        for _ in range(n[split]):
            k = int(rng.integers(len(noises)))
            start = lo * durations[k] + rng.random() * max(0.0, (hi - lo) * durations[k] - clip_duration_s)
            result.split(split).append(Example(ClipRef(noises[k], round(start, 3)), label))


def split_each_class(result: DatasetSplits, classes, files: dict, val_split, test_split, rng) -> None:
    """Each class's clips shuffled by ``rng``: the first ``round(n * test_split)`` to test, the next
    ``round(n * val_split)`` to val, the rest to train (stratified)."""
    for label, cls in enumerate(classes):
        order = rng.permutation(len(files[cls]))
        n_test = round(len(order) * test_split)
        n_val = round(len(order) * val_split)
        for rank, j in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            result.split(split).append(Example(ClipRef(files[cls][j]), label))


def hold_out_speakers(
    result: DatasetSplits, root: Path, classes: list[str], files: dict, speakers: dict, test_speakers
) -> None:
    """The clips of ``test_speakers`` become the test split and leave ``files`` (the rest is split later)."""
    unknown = sorted(set(test_speakers) - set(speakers.values()))
    if unknown:
        found = ", ".join(sorted(set(speakers.values())))
        raise ValueError(f"test_speakers {unknown} are not speakers of {root} (it has: {found})")
    for label, cls in enumerate(classes):
        result.test.extend(Example(ClipRef(p), label) for p in files[cls] if speakers[p] in test_speakers)
        files[cls] = [p for p in files[cls] if speakers[p] not in test_speakers]


def speaker_of(name: str, patterns: Sequence[str]) -> str:
    """The speaker id in file name ``name``: group 1 of the first pattern in ``patterns`` that matches."""
    for pattern in patterns:
        match = re.search(pattern, name)
        if match:
            return match.group(1)
    raise ValueError(
        f"cannot find a speaker in file name {name!r}: it matches none of the speaker patterns "
        f"{list(patterns)} (set speaker_pattern to a regex whose group 1 is the speaker)"
    )


def _speaker_patterns(speaker_pattern: str | None) -> tuple[str, ...]:
    return (speaker_pattern,) if speaker_pattern else DEFAULT_SPEAKER_PATTERNS


def speaker_folds(
    splits: DatasetSplits,
    folds: int,
    fold: int,
    *,
    speaker_pattern: str | None = None,
    random_state: int = 0,
) -> DatasetSplits:
    """Fold ``fold`` of a ``folds``-fold cross-validation by speaker: the training and validation clips of
    ``splits`` are pooled, their speakers dealt into ``folds`` groups of about equal clip counts (each
    speaker whole, in a seeded order), and group ``fold`` is the validation split, the rest training. The
    test split is not touched. A small validation list chooses a recipe on few decisions; the folds score
    every pooled clip once, on speakers the network never heard. The ``_silence_`` class's background
    crops have no speaker and keep their split (each from its own stretch of the recordings). The speaker
    is found in the file name as :func:`read_class_folders` finds it (``speaker_pattern``)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"cv_folds must be an integer >= 2 (0: no cross-validation), got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"cv_fold must be an integer in 0..{folds - 1} (cv_folds={folds}), got {fold!r}")
    silence = splits.classes.index(SILENCE_CLASS) if SILENCE_CLASS in splits.classes else None
    pooled = [e for split in ("train", "val") for e in splits.split(split) if e.label != silence]
    patterns = _speaker_patterns(speaker_pattern)
    speakers = {e.clip: speaker_of(e.clip.path.name, patterns) for e in pooled}
    sizes = Counter(speakers.values())
    if len(sizes) < folds:
        raise ValueError(
            f"cv_folds={folds} needs at least {folds} speakers in the training and validation clips; "
            f"they have {len(sizes)}: {sorted(sizes)}"
        )
    filled = [0] * folds
    group = {}
    for speaker in (str(s) for s in np.random.default_rng(random_state).permutation(sorted(sizes))):
        group[speaker] = filled.index(min(filled))
        filled[group[speaker]] += sizes[speaker]
    result = DatasetSplits(
        list(splits.classes),
        train=[e for e in splits.train if e.label == silence],
        val=[e for e in splits.val if e.label == silence],
        test=list(splits.test),
    )
    for e in pooled:
        (result.val if group[speakers[e.clip]] == fold else result.train).append(e)
    for split in ("train", "val"):
        result.split(split).sort(key=lambda e: (e.label, e.clip))
    return result


def _assign_groups(
    sizes: dict[str, int], val_split: float, test_split: float, rng: np.random.Generator
) -> dict[str, str]:
    # Whole speakers go to test, then val, while that brings the split nearer its target size; a split with
    # a non-zero fraction always gets at least one speaker.
    total = sum(sizes.values())
    target = {"test": test_split * total, "val": val_split * total}
    filled = {"test": 0, "val": 0}
    assignment = {}
    for speaker in (str(s) for s in rng.permutation(sorted(sizes))):
        assignment[speaker] = "train"
        for split in ("test", "val"):
            n = sizes[speaker]
            if target[split] > 0 and (
                filled[split] == 0
                or abs(filled[split] + n - target[split]) < abs(filled[split] - target[split])
            ):
                assignment[speaker] = split
                filled[split] += n
                break
    if "train" not in assignment.values():
        raise ValueError(
            f"split_by='speaker' with val_split={val_split}, test_split={test_split} leaves no "
            f"speaker for training; speakers and clip counts: {dict(sorted(sizes.items()))}"
        )
    return assignment


def read_class_folders(
    root: str | Path,
    words: Sequence[str] | None = None,
    val_split: float = 0.15,
    test_split: float = 0.0,
    random_state: int = 0,
    split_by: str | None = None,
    speaker_pattern: str | None = None,
    test_speakers: Sequence[str] | None = None,
) -> DatasetSplits:
    """Read a class-folder tree ``root/<class>/*.wav`` and split it with a seed.

    Classes are ``words`` in the given order, or all class folders sorted by name (folders starting with
    ``_`` or ``.`` are not classes). With ``split_by=None`` each class is shuffled with ``random_state``
    and ``round(n * test_split)`` / ``round(n * val_split)`` of its clips go to test / val (stratified).
    With ``split_by="speaker"`` whole speakers are assigned, so no validation or test speaker is heard in
    training; the speaker is group 1 of ``speaker_pattern`` searched in the file name (default: the Speech
    Commands ``<hash>_nohash_`` and FSDD ``<digit>_<name>_<n>`` conventions, first match wins).
    ``test_speakers`` names the test split's speakers instead (leave-speakers-out evaluation; ``test_split``
    must then be 0): their clips are the test split, and the other speakers' clips are split into train
    and val as above.
    """
    if split_by not in (None, "speaker"):
        raise ValueError(f"split_by must be None or 'speaker', got {split_by!r}")
    check_fractions(val_split, test_split)
    if test_speakers and test_split:
        raise ValueError(f"test_speakers={list(test_speakers)} make the test split: test_split must be 0")
    if speaker_pattern is not None and re.compile(speaker_pattern).groups < 1:
        raise ValueError(f"speaker_pattern {speaker_pattern!r} needs a capturing group for the speaker")
    root = require_dir(Path(root), "data root")
    classes = _select_words(root, _class_dirs(root), words)
    files = {}
    for cls in classes:
        files[cls] = _audio_files(root / cls)
        if not files[cls]:
            raise DataError(f"class folder {root / cls} has no audio files ({', '.join(AUDIO_SUFFIXES)})")
    result = DatasetSplits(list(classes))
    patterns = _speaker_patterns(speaker_pattern)
    speakers = (
        {path: speaker_of(path.name, patterns) for cls in classes for path in files[cls]}
        if test_speakers or split_by
        else {}
    )
    if test_speakers:
        hold_out_speakers(result, root, classes, files, speakers, test_speakers)
    rng = np.random.default_rng(random_state)
    if split_by is None:
        split_each_class(result, classes, files, val_split, test_split, rng)
    else:
        sizes = Counter(speakers[p] for cls in classes for p in files[cls])
        assignment = _assign_groups(sizes, val_split, test_split, rng)
        for label, cls in enumerate(classes):
            for path in files[cls]:
                result.split(assignment[speakers[path]]).append(Example(ClipRef(path), label))
    for split in SPLITS:
        result.split(split).sort(key=lambda e: (e.label, e.clip))
    return result
