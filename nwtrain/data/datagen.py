"""``NWaveDataGen``: a dataset on disk -> chip filterbank features -> train/val/test DataLoaders.

Mirrors the vendor SDK's ``NWaveDataGen`` / ``NWaveDataloaderConfig`` (tutorial 4, section 2). Features are
computed once for every clip of every split, in batches, and cached on disk under a key over everything
they depend on; the datasets are then in-memory tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from nwtrain.chips.common import FILTERBANK_BANDS_PER_OCTAVE, constant_q_bank
from nwtrain.data.audio import RESAMPLER, AudioFileError, ClipRef, change_speed, load_clips
from nwtrain.data.cache import content_key, default_cache_dir, file_digests, load_cached, save_atomic
from nwtrain.data.filterbank import ChipFilterbank
from nwtrain.data.readers import (
    SPLITS,
    DatasetSplits,
    read_class_folders,
    read_speech_commands,
    speaker_folds,
)
from nwtrain.data.regression import load_target, read_regression
from nwtrain.errors import DataError

logger = logging.getLogger(__name__)

LAYOUTS = ("folder", "speech_commands")
TASKS = ("classification", "regression")
ON_BAD_FILE = ("error", "skip")
_DECODE_CHUNK = 256  # clips decoded and filtered per step: bounds memory to a few tens of MB


@dataclass(frozen=True)
class NWaveDataloaderConfig:
    """Batching and splitting options, as in the vendor SDK.

    ``val_split`` / ``test_split`` / ``random_state`` drive the split of a class-folder tree (a Speech
    Commands tree keeps its official lists). ``random_state`` also seeds the training shuffle.
    ``num_workers`` is the number of threads that hash and decode audio files while features are built;
    the loaders themselves run in the main process because the features are in-memory tensors, where
    worker processes would only add start-up and transfer cost.
    """

    batch_size: int = 32
    val_split: float = 0.15
    test_split: float = 0.0
    random_state: int = 0
    num_workers: int = 0
    shuffle_train: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


class FeatureDataset(Dataset):
    """In-memory features ``[N, T, C]`` with labels; items are ``(x, y)`` or ``(x, y, filename)``."""

    def __init__(
        self, features: torch.Tensor, labels: torch.Tensor, filenames: list[str], return_filename: bool
    ):
        self.features = features
        self.labels = labels
        self.filenames = filenames
        self.return_filename = return_filename

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.return_filename:
            return self.features[i], self.labels[i], self.filenames[i]
        return self.features[i], self.labels[i]


def check_options(task, layout, on_bad_file, recording_duration_s, test_speakers, extra_classes) -> None:
    """ValueError for ``NWaveDataGen`` options that contradict each other or name nothing."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file must be one of {ON_BAD_FILE}, got {on_bad_file!r}")
    if recording_duration_s <= 0:
        raise ValueError(f"recording_duration_s must be positive, got {recording_duration_s}")
    if layout == "speech_commands" and test_speakers:
        raise ValueError("test_speakers applies to a class-folder tree; Speech Commands keeps its lists")
    if layout == "folder" and extra_classes:
        raise ValueError(
            "unknown/silence classes need layout='speech_commands' (its other words and "
            "_background_noise_ recordings)"
        )


def speed_factors(factors: Sequence[float]) -> tuple[float, ...]:
    """``train_speed_factors`` as floats; ValueError unless each is > 0."""
    speeds = tuple(float(f) for f in factors)
    if any(f <= 0 for f in speeds):
        raise ValueError(f"train_speed_factors must be > 0, got {list(speeds)}")
    return speeds


def chip_filterbank(
    sample_rate: int, sim_time_s: float, bands_per_octave: int, compression: str, floor_db: float
):
    """The chip's constant-Q filterbank with ``bands_per_octave`` bands (2: the chip's own 16 filters)."""
    centre_freqs_hz, q = constant_q_bank(bands_per_octave)
    return ChipFilterbank(
        sample_rate,
        sim_time_s,
        centre_freqs_hz=centre_freqs_hz,
        q=q,
        compression=compression,
        floor_db=floor_db,
    )


def read_splits(
    root: Path,
    task,
    layout,
    config,
    duration_s,
    words,
    unknown,
    silence,
    extra_class_ratio,
    split_by,
    speaker_pattern,
    test_speakers,
    cv_folds,
    cv_fold,
) -> DatasetSplits:
    """The examples of ``root`` by split, read in its layout (``NWaveDataGen``'s arguments), and with
    ``cv_folds`` the cross-validation fold ``cv_fold`` of its speakers."""
    if task == "regression":
        splits = read_regression(root, config.val_split, config.test_split, config.random_state)
    elif layout == "speech_commands":
        splits = read_speech_commands(
            root,
            words,
            unknown=unknown,
            silence=silence,
            extra_class_ratio=extra_class_ratio,
            random_state=config.random_state,
            clip_duration_s=duration_s,
        )
    else:
        splits = read_class_folders(
            root,
            words,
            val_split=config.val_split,
            test_split=config.test_split,
            random_state=config.random_state,
            split_by=split_by,
            speaker_pattern=speaker_pattern,
            test_speakers=test_speakers,
        )
    if cv_folds:
        splits = speaker_folds(
            splits,
            cv_folds,
            cv_fold,
            speaker_pattern=speaker_pattern,
            random_state=config.random_state,
        )
    return splits


class NWaveDataGen:
    """Chip-filterbank features of an audio dataset, served as train/val/test DataLoaders.

    Args:
        data_parent: dataset root (for the embedded corpus pass :func:`ensure_embedded_corpus`'s result).
        sample_rate: rate in Hz the audio is resampled to before filtering.
        recording_duration_s: clips are zero-padded or trimmed (at the end) to this duration.
        sim_time_s: envelope bin width; 1 s at 8 ms gives 125 time steps.
        dataloader_config: batching and split options (:class:`NWaveDataloaderConfig`).
        task: "classification" (a class per clip, from ``layout``) or "regression" (the SDK's regression
            layout, ``wavs/<stem>.wav`` with ``target/<stem>.pt`` of shape ``(T,)`` or ``(T, C)``, split by
            ``val_split`` / ``test_split``; see :mod:`nwtrain.data.regression`).
        return_filename: batches are ``(x, y, filenames)`` instead of ``(x, y)``.
        layout: "folder" (``data_parent/<class>/*.wav``) or "speech_commands" (official split lists).
        words: classes to use, in this order (default: all class folders, sorted).
        unknown, silence, extra_class_ratio: Speech Commands ``_unknown_`` / ``_silence_`` classes, see
            :func:`read_speech_commands`.
        split_by, speaker_pattern, test_speakers: speaker-disjoint splits of a folder tree (``test_speakers``:
            these speakers are the test split), see :func:`read_class_folders`.
        cv_folds, cv_fold: ``cv_folds`` >= 2 turns the training and validation clips into a
            cross-validation by speaker, fold ``cv_fold`` validating (:func:`speaker_folds`); 0: the
            splits as read.
        on_bad_file: "error" raises :class:`AudioFileError` naming a corrupt, empty or unreadable file;
            "skip" leaves it out, lists it in ``skipped_files`` and logs a warning.
        bands_per_octave: filterbank channel density (:func:`nwtrain.chips.common.constant_q_bank`): 2 is the
            chip's own half-octave bank; more is a research front end (the LIF baseline's).
        compression, compression_floor_db: the front end's envelope compression, see
            :class:`ChipFilterbank` ("none": the linear envelope of the vendor SDK; "log": logarithmic,
            with its floor in dB below full scale).
        train_speed_factors: the training split also holds a copy of each clip played at each of these
            speeds (:func:`change_speed`; e.g. ``(0.9, 1.1)`` triples it), a stand-in for speakers the
            data lacks; validation and test stay as recorded.
        cache_dir: feature cache root (default ``$NWTRAIN_CACHE`` or ``~/.cache/nwtrain``); ``use_cache``
            False recomputes without reading or writing it.
        progress: show a progress bar while features are computed.

    Batches hold ``x`` float32 ``[B, T, C]`` (C = ``n_channels``, bounded in [0, ~1], see
    ``docs/data.md``) and ``y`` int64 indices into ``classes`` (regression: float32 targets ``[B, T, K]``).
    ``dataloaders()["test"]`` is an empty loader when the test split is empty (``test_split=0``).
    """

    def __init__(
        self,
        data_parent: str | Path,
        sample_rate: int = 16000,
        recording_duration_s: float = 1.0,
        sim_time_s: float = 8e-3,
        dataloader_config: NWaveDataloaderConfig | None = None,
        task: str = "classification",
        return_filename: bool = False,
        *,
        layout: str = "folder",
        words: Sequence[str] | None = None,
        unknown: bool = False,
        silence: bool = False,
        extra_class_ratio: float = 1.0,
        split_by: str | None = None,
        speaker_pattern: str | None = None,
        test_speakers: Sequence[str] | None = None,
        cv_folds: int = 0,
        cv_fold: int = 0,
        on_bad_file: str = "error",
        bands_per_octave: int = FILTERBANK_BANDS_PER_OCTAVE,
        compression: str = "none",
        compression_floor_db: float = -60.0,
        train_speed_factors: Sequence[float] = (),
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        progress: bool = True,
    ):
        check_options(task, layout, on_bad_file, recording_duration_s, test_speakers, unknown or silence)
        self.config = dataloader_config or NWaveDataloaderConfig()
        self.root = Path(data_parent).expanduser()
        self.sample_rate, self.recording_duration_s = int(sample_rate), float(recording_duration_s)
        self.return_filename, self.on_bad_file = return_filename, on_bad_file
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.use_cache, self.progress = use_cache, progress
        self.filterbank = chip_filterbank(
            self.sample_rate, sim_time_s, bands_per_octave, compression, compression_floor_db
        )
        self.n_samples = round(self.recording_duration_s * self.sample_rate)
        self.n_bins = self.filterbank.n_bins(self.n_samples)
        self.task, self.train_speed_factors = task, speed_factors(train_speed_factors)
        self.splits = read_splits(
            self.root,
            task,
            layout,
            self.config,
            self.recording_duration_s,
            words,
            unknown,
            silence,
            extra_class_ratio,
            split_by,
            speaker_pattern,
            test_speakers,
            cv_folds,
            cv_fold,
        )
        self.skipped_files, self.loaded_from_cache = [], False  # what the last load left out, and how
        self._datasets: dict[str, FeatureDataset] | None = None

    @property
    def classes(self) -> list[str]:
        """Class names, a label ``y`` indexing this list; for regression, one name per target channel."""
        if self.task == "regression":
            return [f"channel {c}" for c in range(self.datasets()["train"].labels.shape[-1])]
        return self.splits.classes

    @property
    def n_channels(self) -> int:
        """Feature channels C: filterbank channels below Nyquist (13 at 16 kHz, 16 at 48 kHz)."""
        return self.filterbank.n_channels

    def datasets(self) -> dict[str, FeatureDataset]:
        """The train/val/test datasets (features computed or loaded from the cache on first call)."""
        if self._datasets is None:
            clips = sorted({e.clip for s in SPLITS for e in self.splits.split(s)})
            (features, *copies), rows = self._features(clips)
            self._datasets = {}
            for split in SPLITS:
                kept = [e for e in self.splits.split(split) if e.clip in rows]
                index = torch.tensor([rows[e.clip] for e in kept], dtype=torch.long)
                x, y = features[index], self._labels(kept, features.shape[1])
                names = [e.clip.name(self.root) for e in kept]
                if split == "train" and copies:
                    x = torch.cat([x, *(copy[index] for copy in copies)])
                    y = torch.cat([y] * (1 + len(copies)))
                    names = names + [f"{n}@speed{f:g}" for f in self.train_speed_factors for n in names]
                self._datasets[split] = FeatureDataset(x, y, names, self.return_filename)
        return self._datasets

    def _labels(self, examples: list, n_steps: int) -> torch.Tensor:
        """Class indices ``[N]``, or for regression the targets ``[N, T, C]`` (one channel count for all)."""
        if self.task == "classification":
            return torch.tensor([e.label for e in examples], dtype=torch.long)
        targets = [load_target(e.clip.path, n_steps) for e in examples]
        widths = {t.shape[1] for t in targets}
        if len(widths) > 1:
            raise DataError(f"{self.root / 'target'}: targets differ in channel count ({sorted(widths)})")
        return torch.stack(targets) if targets else torch.zeros(0, n_steps, 1)

    def dataloaders(self) -> dict[str, DataLoader]:
        """``{"train", "val", "test"}`` DataLoaders; only train is shuffled (seeded by ``random_state``)."""
        loaders = {}
        for split, dataset in self.datasets().items():
            # An empty split (a test-only tree's train split) has nothing to shuffle, and a RandomSampler
            # refuses it: evaluation must not need a training loader.
            shuffle = split == "train" and self.config.shuffle_train and len(dataset) > 0
            loaders[split] = DataLoader(
                dataset,
                batch_size=self.config.batch_size,
                shuffle=shuffle,
                generator=torch.Generator().manual_seed(self.config.random_state) if shuffle else None,
            )
        return loaders

    def _features(self, clips: list[ClipRef]) -> tuple[list[torch.Tensor], dict[ClipRef, int]]:
        """Features of the readable ``clips`` as recorded, then played at each of ``train_speed_factors``,
        and each clip's row in them; skipped ones are recorded. The copies cover every clip, not only the
        training split's, so that the folds of a cross-validation share one cache entry per speed."""
        digests = file_digests([c.path for c in clips], self.config.num_workers)
        payload, self.loaded_from_cache = self._cached(clips, digests, 1.0)
        bad = [clips[i] for i in payload["skipped"]]
        if bad:
            if self.on_bad_file == "error":
                raise AudioFileError(payload["skip_reasons"][0])
            self.skipped_files = [str(c.path) for c in bad]
            logger.warning(
                "skipped %d unreadable audio file(s) (on_bad_file='skip'), e.g. %s",
                len(bad),
                "; ".join(payload["skip_reasons"][:3]),
            )
        copies = [self._cached(clips, digests, f)[0]["features"] for f in self.train_speed_factors]
        skipped = set(payload["skipped"])
        kept = [i for i in range(len(clips)) if i not in skipped]
        return [payload["features"], *copies], {clips[i]: row for row, i in enumerate(kept)}

    def _cached(self, clips: list[ClipRef], digests: list[str], speed: float) -> tuple[dict, bool]:
        """The payload of ``clips`` (whose files hash to ``digests``) played at ``speed``, from the cache
        or computed and stored; and whether it came from the cache."""
        key = content_key(
            {
                "clips": [[c.name(self.root), c.start_s, d] for c, d in zip(clips, digests, strict=True)],
                "recording_duration_s": self.recording_duration_s,
                "resampler": RESAMPLER,
                **self.filterbank.cache_fields(),
                **({"speed": speed} if speed != 1.0 else {}),
            }
        )
        cache_file = self.cache_dir / "features" / f"{key}.pt"
        payload = load_cached(cache_file) if self.use_cache else None
        if payload is not None:
            return payload, True
        payload = self._compute(clips, speed)
        if self.use_cache:
            save_atomic(payload, cache_file)
        return payload, False

    def _compute(self, clips: list[ClipRef], speed: float) -> dict:
        features, skipped, reasons = [], [], []
        with Progress(disable=not self.progress, transient=True) as bar:
            task = bar.add_task(f"Filterbank features ({self.n_channels} ch)", total=len(clips))
            for start in range(0, len(clips), _DECODE_CHUNK):
                chunk = clips[start : start + _DECODE_CHUNK]
                waves, failures = load_clips(
                    chunk, self.sample_rate, self.recording_duration_s, self.config.num_workers
                )
                if failures and self.on_bad_file == "error":
                    raise failures[0][1]
                skipped += [start + i for i, _ in failures]
                reasons += [str(err) for _, err in failures]
                if len(waves):
                    features.append(self.filterbank(waves if speed == 1.0 else change_speed(waves, speed)))
                bar.advance(task, len(chunk))
        return {
            "features": torch.cat(features) if features else torch.zeros(0, self.n_bins, self.n_channels),
            "skipped": skipped,
            "skip_reasons": reasons,
        }
