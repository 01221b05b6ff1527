"""The embedded spoken-keyword corpus: espeak-ng voices, augmented, in Speech Commands layout.

A fresh install has no dataset and cannot download one, so :func:`ensure_embedded_corpus` synthesises
keywords with espeak-ng (in process, :mod:`nwtrain.data.espeak`) on first use and caches them:

* speakers are espeak voice variants (``m3``, ``f2``, ``klatt4``, ``Alicia`` ...: formants, glottal
  source and pitch base); about 20 % of them are validation-only and as many test-only, so both splits are
  heard from voices never met in training (the lists follow Speech Commands' ``validation_list.txt`` /
  ``testing_list.txt``);
* validation and test are alike by construction (``speaker_splits``, ``_recipe_stream``): each holds one
  voice of each of the same matched pairs of alike voices (pitch, brightness) of every voice family
  (female, male, Klatt source), and the n-th validation
  clip of a word and its n-th test clip share every augmentation choice (accent, rate, pitch, reverb,
  position, band limit, noise kind and SNR, level); they differ in the voice alone. A model's validation
  score is then a fair estimate of its test score, up to the voices' own difficulty;
* each clip draws an accent (8 English accents read the word as text; 17 other languages read its
  American-English phonemes with their own phoneme tables, a foreign accent), a speaking rate, a pitch
  and a pitch range;
* augmentation: reverberation (synthetic exponentially decaying impulse response), a random position in
  the 1 s clip (time shift), a microphone band limit, background noise at a random SNR (white, pink,
  brown, babble, machine hum; synthesised, also written to ``_background_noise_``) and a random level;
* files are 16 kHz 16-bit mono WAV, ``<word>/<speaker id>_nohash_<take>.wav``.

Everything after espeak is float64 numpy with FFT-based resampling, so the same seed gives byte-identical
files on any machine with the same espeak-ng release. Every clip has its own random stream (seed, word,
index), so a word's clips do not depend on which other words are generated.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.progress import Progress

from nwtrain.data.cache import content_key, default_cache_dir
from nwtrain.data.espeak import ESPEAK_SAMPLE_RATE, espeak_version, synthesize, text_to_phonemes
from nwtrain.data.readers import BACKGROUND_NOISE_DIR, SPLITS, TESTING_LIST, VALIDATION_LIST

logger = logging.getLogger(__name__)

CORPUS_VERSION = "2"  # bump whenever the recipe below changes: it names the corpus folder
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CORPUS_WORDS = CORE_WORDS + DIGIT_WORDS
DEFAULT_CLIPS_PER_WORD = 400
CORPUS_SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0
MANIFEST = "manifest.json"
# Independent random streams, keyed by purpose (then word and clip index), so no draw shifts another.
_STREAM_SPLIT, _STREAM_WORD, _STREAM_NOISE, _STREAM_TWIN = 1, 2, 3, 4

# English accents read the word as text; foreign ones read its en-us phonemes with their own phoneme tables.
ENGLISH_ACCENTS = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
FOREIGN_ACCENTS = (
    "de",
    "nl",
    "sv",
    "da",
    "nb",
    "fr",
    "es",
    "it",
    "pt",
    "pl",
    "cs",
    "ro",
    "id",
    "tr",
    "el",
    "ru",
    "hi",
)
ENGLISH_ACCENT_PROBABILITY = 0.6
# Voice variants shipped with espeak-ng that sound human (robot, whisper and effect voices left out), by
# family: the voice source and formant range a listener (and a model) hears first.
VOICE_FAMILIES = {
    "female": tuple(
        "Alicia Andrea Annie anika aunty belinda f1 f2 f3 f4 f5 grandma linda shelby steph steph2 "
        "steph3".split()
    ),
    "male": tuple(
        "Alex Andy Denis Diogo Gene Henrique Hugo Jacky Lee Michael Mike Nguyen Reed adam antonio benjamin "
        "boris david ed edward grandpa gustave iven john kaukovalta m1 m2 m3 m4 m5 m6 m7 m8 marcelo max "
        "michel miguel norbert pablo paul pedro sandro travis victor".split()
    ),
    # The Klatt glottal source: a buzzier voice than espeak's default one, whatever the formants.
    "klatt": ("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6"),
}
SPEAKER_VARIANTS = tuple(v for family in VOICE_FAMILIES.values() for v in family)
# Of each family's voices, for validation and for test alike (rounded, at least one each): the lists are
# twice Speech Commands' 10 %, so that one clip moves a score by under 1 point.
HELD_OUT_FRACTION = 0.2
TRAITS_TEXT = "yes no go stop"  # what a voice says to be measured (its pitch and brightness)
# A foreign phoneme table may lack an English mnemonic, which silently ends the word there. These
# replacements, applied cumulatively until the whole word is spoken, map English-only phonemes to the
# nearest common ones.
PHONEME_FALLBACKS = (
    ("O2", "O"),
    ("0", "O"),
    ("V", "a"),
    ("aU", "au"),
    ("oU", "o:"),
    ("eI", "ei"),
    ("aI", "ai"),
    ("I", "i"),
    ("E", "e"),
    ("o@", "o:r"),
    ("u:", "u"),
    ("i:", "i"),
    ("T", "t"),
    ("@", "e"),
    ("2", ""),
)
NOISE_SECONDS = 30.0
NOISE_NAMES = ("white_noise", "pink_noise", "brown_noise", "babble", "machine_hum")
# Babble talkers read sentences free of any corpus word, so the noise never contains a keyword.
BABBLE_SENTENCES = (
    "the weather was pleasant in the garden",
    "please bring me a cup of tea",
    "the market was busy this morning",
    "she said the train will arrive later",
    "we walked along the river bank",
    "they painted the kitchen blue",
    "my brother plays the guitar",
    "the children laughed at the funny clown",
    "a small bird sang in the tree",
    "he forgot his umbrella at home",
)
BABBLE_TALKERS = 6


@dataclass(frozen=True)
class ClipRecipe:
    """Every random choice behind one clip (recorded so a clip can be explained or regenerated)."""

    word: str
    speaker: str
    accent: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    reverb_rt60_s: float  # 0: dry
    direct_to_reverb_db: float
    position: float  # where the word sits in the free part of the clip, 0 (start) .. 1 (end)
    highpass_hz: float  # 0: none
    lowpass_hz: float  # 0: none
    noise: str  # "": clean
    snr_db: float
    peak_dbfs: float


def speaker_id(variant: str) -> str:
    """The 8-hex speaker id of a voice variant, in the style of Speech Commands' hashed speaker ids."""
    return hashlib.sha256(f"espeak:{variant}".encode()).hexdigest()[:8]


def voice_traits(variant: str) -> tuple[float, float]:
    """``(median F0 in Hz, spectral centroid in Hz)`` of ``variant`` saying ``TRAITS_TEXT`` in en-us: the
    pitch and brightness by which two voices of one family sound alike or not."""
    samples, _ = synthesize(TRAITS_TEXT, f"en-us+{variant}")
    x = samples / 32768.0
    n = 1024  # 46 ms frames: two periods of the lowest voice
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2]
    energy = (frames**2).sum(axis=1)
    lo, hi = ESPEAK_SAMPLE_RATE // 400, ESPEAK_SAMPLE_RATE // 60
    f0 = []
    for frame in frames[energy > 0.1 * energy.max()]:  # the voiced, loud part
        frame = frame - frame.mean()
        lags = np.correlate(frame, frame, "full")[n - 1 :]
        f0.append(ESPEAK_SAMPLE_RATE / (lo + int(np.argmax(lags[lo:hi]))))
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / ESPEAK_SAMPLE_RATE)
    return float(np.median(f0)), float((freqs * spectrum).sum() / spectrum.sum())


def _matched_pairs(voices: Sequence[str]) -> list[tuple[str, str]]:
    """The voices of one family in pairs of alike ones: the lowest unpaired voice (by F0, then brightness)
    with its nearest unpaired neighbour in (log F0, centroid), standardised over the family."""
    traits = np.array([voice_traits(v) for v in voices])
    z = np.column_stack([np.log(traits[:, 0]), traits[:, 1]])
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    left = sorted(range(len(voices)), key=lambda i: tuple(traits[i]))
    pairs = []
    while len(left) > 1:
        first = left.pop(0)
        mate = min(left, key=lambda j: float(np.sum((z[first] - z[j]) ** 2)))
        left.remove(mate)
        pairs.append((voices[first], voices[mate]))
    return pairs


@functools.cache
def speaker_splits(seed: int) -> dict[str, str]:
    """Voice variant -> "train" / "val" / "test"; whole speakers per split. Within each voice family the
    voices are matched in alike pairs (``_matched_pairs``); ``seed`` picks the held-out pairs and which
    voice of a pair goes to validation and which to test, so both lists hold the same kinds of voices."""
    splits = {}
    for k, (_, voices) in enumerate(sorted(VOICE_FAMILIES.items())):
        rng = _rng(seed, _STREAM_SPLIT, k)
        pairs = _matched_pairs(sorted(voices))
        held = max(1, round(HELD_OUT_FRACTION * len(voices)))
        splits |= dict.fromkeys(voices, "train")
        for i in rng.permutation(len(pairs))[:held]:
            a, b = pairs[i] if rng.random() < 0.5 else pairs[i][::-1]
            splits[a], splits[b] = "val", "test"
    return splits


def _word_key(word: str) -> int:
    return int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def pronunciations(word: str) -> dict[str, tuple[str, bool]]:
    """Accent -> ``(text, is_phonemes)`` for ``word``; foreign accents that cannot say it all are left out."""
    result = {accent: (word, False) for accent in ENGLISH_ACCENTS}
    reference = text_to_phonemes(word, "en-us").strip()
    n_phonemes = len(synthesize(reference, "en-us", phonemes=True)[1])
    for accent in FOREIGN_ACCENTS:
        candidate = reference
        for old, new in ((None, None), *PHONEME_FALLBACKS):
            if old is not None:
                candidate = candidate.replace(old, new)
            if len(synthesize(candidate, accent, phonemes=True)[1]) >= n_phonemes:
                result[accent] = (candidate, True)
                break
        else:
            logger.debug("accent %s cannot pronounce %r (%s); not used for it", accent, word, reference)
    return result


def _schedule(seed: int, word: str, n_clips: int, splits: dict[str, str]) -> list[str]:
    # Interleave the splits' speakers so that any prefix of a word's clips has its share of validation and
    # test voices (a small corpus still gets non-empty splits); speakers take turns within their split.
    rng = _rng(seed, _STREAM_WORD, _word_key(word))
    groups = {
        s: [str(v) for v in rng.permutation(sorted(v for v, sp in splits.items() if sp == s))] for s in SPLITS
    }
    share = {s: len(groups[s]) / len(splits) for s in SPLITS}
    used = dict.fromkeys(SPLITS, 0)
    order = []
    for k in range(n_clips):
        split = max((s for s in SPLITS if groups[s]), key=lambda s: share[s] * (k + 1) - used[s])
        order.append(groups[split][used[split] % len(groups[split])])
        used[split] += 1
    return order


def _recipe_stream(seed: int, word: str, k: int, split: str, held_out: dict[str, int]) -> np.random.Generator:
    """The random stream of a word's clip ``k``: its own for a training clip; for a validation or test
    clip, the stream of its rank in that split, shared with the clip of the same rank in the other one
    (``held_out`` counts them), so the two lists hold the same augmentations in other voices."""
    if split not in held_out:
        return _rng(seed, _STREAM_WORD, _word_key(word), k)
    rank = held_out[split]
    held_out[split] += 1
    return _rng(seed, _STREAM_TWIN, _word_key(word), rank)


def _draw_recipe(rng: np.random.Generator, word: str, speaker: str, accents: Sequence[str]) -> ClipRecipe:
    foreign = [a for a in accents if a not in ENGLISH_ACCENTS]
    pool = ENGLISH_ACCENTS if not foreign or rng.random() < ENGLISH_ACCENT_PROBABILITY else foreign
    reverb = rng.random() < 0.5
    noisy = rng.random() < 0.8
    return ClipRecipe(
        word=word,
        speaker=speaker,
        accent=str(pool[rng.integers(len(pool))]),
        rate_wpm=int(rng.integers(110, 211)),
        pitch=int(rng.integers(15, 86)),
        pitch_range=int(rng.integers(10, 91)),
        reverb_rt60_s=round(float(rng.uniform(0.15, 0.7)), 3) if reverb else 0.0,
        direct_to_reverb_db=round(float(rng.uniform(-3.0, 12.0)), 2),
        position=round(float(rng.random()), 4),
        highpass_hz=round(float(rng.uniform(60, 300)), 1) if rng.random() < 0.5 else 0.0,
        lowpass_hz=round(float(rng.uniform(3000, 7500)), 1) if rng.random() < 0.5 else 0.0,
        noise=str(NOISE_NAMES[rng.integers(len(NOISE_NAMES))]) if noisy else "",
        snr_db=round(float(rng.uniform(5.0, 35.0)), 2),
        peak_dbfs=round(float(rng.uniform(-30.0, -1.0)), 2),
    )


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def _resample_and_equalise(
    x: np.ndarray, rate_in: int, rate_out: int, highpass_hz: float = 0.0, lowpass_hz: float = 0.0
) -> np.ndarray:
    # One FFT does both: an ideal anti-alias low-pass plus resampling (band truncation), and a zero-phase
    # microphone colouring with 2nd-order Butterworth magnitude responses.
    n_out = round(len(x) * rate_out / rate_in)
    spectrum = np.fft.rfft(x)[: n_out // 2 + 1]
    freqs = np.arange(len(spectrum)) * rate_in / len(x)
    if highpass_hz:
        spectrum = spectrum / np.sqrt(1 + (highpass_hz / np.maximum(freqs, 1e-3)) ** 4)
    if lowpass_hz:
        spectrum = spectrum / np.sqrt(1 + (freqs / lowpass_hz) ** 4)
    return np.fft.irfft(spectrum, n_out) * (n_out / len(x))


def _render(
    recipe: ClipRecipe, text: str, is_phonemes: bool, rng: np.random.Generator, noises: dict[str, np.ndarray]
) -> np.ndarray:
    """The int16 clip for ``recipe`` (``rng`` supplies the impulse response and the noise excerpt)."""
    voice = f"{recipe.accent}+{recipe.speaker}"
    samples, _ = synthesize(
        text, voice, recipe.rate_wpm, recipe.pitch, recipe.pitch_range, phonemes=is_phonemes
    )
    if not len(samples):
        raise RuntimeError(f"espeak-ng produced no audio for {recipe}")
    dry = samples / 32768.0
    speech = dry
    if recipe.reverb_rt60_s:
        t = np.arange(int(recipe.reverb_rt60_s * ESPEAK_SAMPLE_RATE)) / ESPEAK_SAMPLE_RATE
        tail = rng.standard_normal(len(t)) * np.exp(-6.9078 * t / recipe.reverb_rt60_s)  # -60 dB at RT60
        tail *= 10 ** (-recipe.direct_to_reverb_db / 20) / np.sqrt(np.sum(tail**2))
        tail[0] += 1.0  # the direct path
        speech = _fft_convolve(dry, tail)
    canvas = np.zeros(round(CLIP_SECONDS * ESPEAK_SAMPLE_RATE))
    speech = speech[: len(canvas)]
    offset = int(recipe.position * (len(canvas) - len(speech)))
    canvas[offset : offset + len(speech)] = speech
    clip = _resample_and_equalise(
        canvas, ESPEAK_SAMPLE_RATE, CORPUS_SAMPLE_RATE, recipe.highpass_hz, recipe.lowpass_hz
    )
    if recipe.noise:
        start = round(offset * CORPUS_SAMPLE_RATE / ESPEAK_SAMPLE_RATE)
        stop = start + round(min(len(dry), len(canvas)) * CORPUS_SAMPLE_RATE / ESPEAK_SAMPLE_RATE)
        speech_power = np.mean(clip[start:stop] ** 2)
        noise = noises[recipe.noise]
        begin = int(rng.integers(len(noise) - len(clip)))
        excerpt = noise[begin : begin + len(clip)]
        clip = clip + excerpt * np.sqrt(speech_power / (np.mean(excerpt**2) * 10 ** (recipe.snr_db / 10)))
    clip *= 10 ** (recipe.peak_dbfs / 20) / max(np.max(np.abs(clip)), 1e-9)
    return np.clip(np.round(clip * 32767), -32768, 32767).astype(np.int16)


def _spectral_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    # Gaussian noise with power spectral density ~ 1 / f^exponent (0 white, 1 pink, 2 brown).
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / CORPUS_SAMPLE_RATE), 20.0)
    return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)


def _babble(rng: np.random.Generator, n: int) -> np.ndarray:
    n_in = round(n * ESPEAK_SAMPLE_RATE / CORPUS_SAMPLE_RATE)
    mix = np.zeros(n_in)
    for _ in range(BABBLE_TALKERS):
        position = int(rng.integers(ESPEAK_SAMPLE_RATE))
        while position < n_in:
            accent = ENGLISH_ACCENTS[rng.integers(len(ENGLISH_ACCENTS))]
            voice = f"{accent}+{SPEAKER_VARIANTS[rng.integers(len(SPEAKER_VARIANTS))]}"
            sentence = BABBLE_SENTENCES[rng.integers(len(BABBLE_SENTENCES))]
            samples, _ = synthesize(sentence, voice, int(rng.integers(140, 220)), int(rng.integers(20, 80)))
            part = samples[: n_in - position] / 32768.0
            mix[position : position + len(part)] += part * rng.uniform(0.5, 1.0)
            position += len(samples) + int(rng.integers(ESPEAK_SAMPLE_RATE // 10, ESPEAK_SAMPLE_RATE // 2))
    return _resample_and_equalise(mix, ESPEAK_SAMPLE_RATE, CORPUS_SAMPLE_RATE)


def _machine_hum(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / CORPUS_SAMPLE_RATE
    mains = 50.0 if rng.random() < 0.5 else 60.0
    hum = sum(
        rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 9)
    )
    rumble = _spectral_noise(rng, n, 2.0)
    rumble *= np.std(hum) / np.std(rumble)
    wobble = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)  # a fan's slow beat
    return (hum + rumble) * wobble


def _make_noise(name: str, seed: int) -> np.ndarray:
    rng = _rng(seed, _STREAM_NOISE, NOISE_NAMES.index(name))
    n = round(NOISE_SECONDS * CORPUS_SAMPLE_RATE)
    generators = {
        "white_noise": lambda: rng.standard_normal(n),
        "pink_noise": lambda: _spectral_noise(rng, n, 1.0),
        "brown_noise": lambda: _spectral_noise(rng, n, 2.0),
        "babble": lambda: _babble(rng, n),
        "machine_hum": lambda: _machine_hum(rng, n),
    }
    noise = generators[name]()
    return np.round(noise * (0.5 * 32767 / np.max(np.abs(noise)))).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    sf.write(path, samples, CORPUS_SAMPLE_RATE, subtype="PCM_16")


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _noises_complete(corpus: Path) -> bool:
    return all((corpus / BACKGROUND_NOISE_DIR / f"{name}.wav").is_file() for name in NOISE_NAMES)


def _ensure_noises(corpus: Path, seed: int) -> dict[str, np.ndarray]:
    folder = corpus / BACKGROUND_NOISE_DIR
    if not _noises_complete(corpus):
        staging = Path(tempfile.mkdtemp(prefix=".tmp-noise-", dir=corpus))
        for name in NOISE_NAMES:
            _write_wav(staging / f"{name}.wav", _make_noise(name, seed))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    # Always read back the 16-bit files, so clips mix the same samples whether or not the noises are new.
    return {name: sf.read(folder / f"{name}.wav", dtype="float64")[0] for name in NOISE_NAMES}


def _generate_word(
    corpus: Path,
    word: str,
    seed: int,
    clips_per_word: int,
    splits: dict[str, str],
    noises: dict[str, np.ndarray],
    progress: Progress,
    task,
) -> dict:
    accents = pronunciations(word)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{word}-", dir=corpus))
    takes: dict[str, int] = {}
    recipes = []
    held_out = dict.fromkeys(("val", "test"), 0)
    for k, speaker in enumerate(_schedule(seed, word, clips_per_word, splits)):
        rng = _recipe_stream(seed, word, k, splits[speaker], held_out)
        recipe = _draw_recipe(rng, word, speaker, sorted(accents))
        text, is_phonemes = accents[recipe.accent]
        take = takes.get(speaker, 0)
        takes[speaker] = take + 1
        name = f"{speaker_id(speaker)}_nohash_{take}.wav"
        _write_wav(staging / name, _render(recipe, text, is_phonemes, rng, noises))
        recipes.append({"file": name, **asdict(recipe)})
        progress.advance(task)
    shutil.rmtree(corpus / word, ignore_errors=True)
    os.replace(staging, corpus / word)
    return {"clips": clips_per_word, "accents": sorted(accents), "recipes": recipes}


def _write_split_lists(corpus: Path, words: Sequence[str], splits: dict[str, str]) -> None:
    split_of_id = {speaker_id(v): s for v, s in splits.items()}
    lists: dict[str, list[str]] = {"val": [], "test": []}
    for word in sorted(words):
        for path in sorted((corpus / word).glob("*.wav")):
            split = split_of_id[path.name.split("_nohash_")[0]]
            if split in lists:
                lists[split].append(f"{word}/{path.name}")
    _write_text_atomic(corpus / VALIDATION_LIST, "".join(f"{line}\n" for line in lists["val"]))
    _write_text_atomic(corpus / TESTING_LIST, "".join(f"{line}\n" for line in lists["test"]))


def corpus_folder(root: str | Path | None, key: str, seed: int, clips_per_word: int) -> Path:
    """``<root>/espeak-seed<seed>-n<clips>-<key>`` (root: ``<cache dir>/corpus``), created."""
    parent = Path(root).expanduser() if root is not None else default_cache_dir() / "corpus"
    corpus = parent / f"espeak-seed{seed}-n{clips_per_word}-{key[:12]}"
    corpus.mkdir(parents=True, exist_ok=True)
    return corpus


def completed_words(corpus: Path, manifest_path: Path) -> dict:
    """The words the manifest records with all their clips on disk; any other folder is removed."""
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    done = {
        w: info
        for w, info in manifest.get("words", {}).items()
        if len(list((corpus / w).glob("*.wav"))) == info["clips"]
    }
    # Staging folders and word folders the manifest does not vouch for are leftovers of an interrupted
    # run; left in place, a reader would take their validation and test voices for training data.
    for leftover in corpus.iterdir():
        if leftover.is_dir() and leftover.name not in done and leftover.name != BACKGROUND_NOISE_DIR:
            shutil.rmtree(leftover)
    return done


def corpus_manifest(engine: str, seed: int, clips_per_word: int, splits: dict, done: dict) -> dict:
    """manifest.json: the corpus recipe, its speakers' splits and the completed words."""
    return {
        "version": CORPUS_VERSION,
        "espeak": engine,
        "seed": seed,
        "clips_per_word": clips_per_word,
        "sample_rate": CORPUS_SAMPLE_RATE,
        "speakers": {v: {"id": speaker_id(v), "split": s} for v, s in sorted(splits.items())},
        "words": dict(sorted(done.items())),
    }


def ensure_embedded_corpus(
    root: str | Path | None = None,
    words: Sequence[str] | None = None,
    seed: int = 0,
    clips_per_word: int = DEFAULT_CLIPS_PER_WORD,
    progress: bool = True,
) -> Path:
    """Generate (on first use) and return the espeak-ng keyword corpus in Speech Commands layout.

    Args:
        root: parent folder of corpora (default ``<cache dir>/corpus``, the cache dir being
            ``$NWTRAIN_CACHE`` or ``~/.cache/nwtrain``).
        words: lower-case words to have in the corpus (default :data:`CORPUS_WORDS`: yes, no, up, down,
            left, right, on, off, stop, go, zero..nine). Words already generated are kept, missing ones
            are added, so later calls may ask for more.
        seed: corpus seed; the same seed, clip count and espeak-ng release give byte-identical files.
        clips_per_word: clips per word, spread over all speakers.
        progress: show a progress bar while generating.

    Returns:
        The corpus folder ``<root>/espeak-seed<seed>-n<clips>-<key>``, for
        ``NWaveDataGen(..., layout="speech_commands")`` or :func:`read_speech_commands`. It holds a folder
        per word, ``validation_list.txt``, ``testing_list.txt`` (voice-disjoint), ``_background_noise_``
        and ``manifest.json``, which records completed words and every clip's recipe; a word folder left
        incomplete by an interrupted run is regenerated.
    """
    words = list(CORPUS_WORDS if words is None else words)
    bad = [w for w in words if not re.fullmatch(r"[a-z]+", str(w))]
    if bad or not words:
        raise ValueError(f"corpus words must be non-empty lower-case ASCII words; got {words}")
    if clips_per_word < 1:
        raise ValueError(f"clips_per_word must be >= 1, got {clips_per_word}")
    engine = espeak_version()
    key = content_key(
        {"version": CORPUS_VERSION, "espeak": engine, "seed": seed, "clips_per_word": clips_per_word}
    )
    corpus = corpus_folder(root, key, seed, clips_per_word)
    with open(corpus / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the words done
        manifest_path = corpus / MANIFEST
        done = completed_words(corpus, manifest_path)
        missing = [w for w in words if w not in done]
        splits = speaker_splits(seed)
        if missing or not (corpus / VALIDATION_LIST).is_file() or not _noises_complete(corpus):
            noises = _ensure_noises(corpus, seed)
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(
                    f"espeak-ng corpus ({len(missing)} words)", total=len(missing) * clips_per_word
                )
                for word in missing:
                    done[word] = _generate_word(corpus, word, seed, clips_per_word, splits, noises, bar, task)
                    manifest = corpus_manifest(engine, seed, clips_per_word, splits, done)
                    _write_text_atomic(manifest_path, json.dumps(manifest, indent=1))
            _write_split_lists(corpus, sorted(done), splits)
    return corpus
