"""Audio data: dataset readers, the embedded espeak-ng keyword corpus, chip filterbank features, loaders."""

from nwtrain.data.audio import AudioFileError, ClipRef, load_clips, read_clip
from nwtrain.data.cache import default_cache_dir
from nwtrain.data.corpus import CORPUS_WORDS, DEFAULT_CLIPS_PER_WORD, ensure_embedded_corpus
from nwtrain.data.datagen import FeatureDataset, NWaveDataGen, NWaveDataloaderConfig
from nwtrain.data.filterbank import ChipFilterbank
from nwtrain.data.readers import (
    SILENCE_CLASS,
    UNKNOWN_CLASS,
    DatasetSplits,
    Example,
    read_class_folders,
    read_speech_commands,
    speaker_folds,
)
from nwtrain.data.regression import ensure_pattern_set, load_target, read_regression

__all__ = [
    "CORPUS_WORDS",
    "DEFAULT_CLIPS_PER_WORD",
    "SILENCE_CLASS",
    "UNKNOWN_CLASS",
    "AudioFileError",
    "ChipFilterbank",
    "ClipRef",
    "DatasetSplits",
    "Example",
    "FeatureDataset",
    "NWaveDataGen",
    "NWaveDataloaderConfig",
    "default_cache_dir",
    "ensure_embedded_corpus",
    "ensure_pattern_set",
    "load_target",
    "load_clips",
    "read_class_folders",
    "read_regression",
    "read_clip",
    "read_speech_commands",
    "speaker_folds",
]
