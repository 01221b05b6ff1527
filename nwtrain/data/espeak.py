"""In-process espeak-ng speech synthesis through ctypes.

The library and its voice data come from the PyPI package ``espeakng-loader``; no espeak binary, no
subprocess. libespeak-ng keeps its whole state in process globals, including static variables inside its
wave generator that neither ``espeak_Terminate`` nor ``espeak_Initialize`` reset (automatic gain, pitch
flutter phase, resonator memories). Two calls with the same arguments therefore give different samples
when the library stays loaded. For byte-identical output, every call here loads a fresh copy of the
library, seeds both random generators it uses, does its work and unloads it again (about 2 ms). A module
lock serialises callers, because the library is not thread-safe either.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

ESPEAK_SAMPLE_RATE = 22050  # libespeak-ng's native output rate; checked against espeak_Initialize's reply

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # report a data-loading failure instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x0001
_PHONEMES = 0x0100  # honour [[...]] phoneme-mnemonic input
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_TEXT_MODE_UTF8, _PHONEME_MODE_MNEMONIC = 1, 0


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (the ``id`` union read as its ``char string[8]`` member)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_LOCK = threading.Lock()
_chunks: list[np.ndarray] = []
_phonemes: list[str] = []


def _collect(wav, n_samples, events):  # called by libespeak-ng from inside espeak_Synth
    if n_samples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        if events[i].type == _EVENT_PHONEME:
            _phonemes.append(events[i].id.decode("ascii", errors="replace"))
        i += 1
    return 0


_CALLBACK = _SynthCallback(_collect)  # module-level so the C side never holds a dangling pointer


def _library_paths() -> tuple[str, bytes]:
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "the embedded corpus needs the espeakng-loader package: pip install espeakng-loader"
        ) from exc
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path().encode()


@contextmanager
def _fresh_engine() -> Iterator[ctypes.CDLL]:
    """A freshly loaded, initialised and seeded libespeak-ng, unloaded on exit (caller holds ``_LOCK``)."""
    lib_path, data_path = _library_paths()
    lib = ctypes.CDLL(lib_path)
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(
                f"espeak_Initialize failed or returned an unexpected sample rate: {rate} "
                f"(library {lib_path}, data {data_path.decode()})"
            )
        lib.espeak_SetSynthCallback(_CALLBACK)
        # Breath and aspiration noise draw from espeak's own generator and from libc rand(); fixing both
        # makes the waveform a function of the arguments alone.
        lib.espeak_ng_SetRandSeed(1)
        ctypes.CDLL(None).srand(1)
        yield lib
    finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)


def _set_voice(lib: ctypes.CDLL, voice: str) -> None:
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r} (expected 'language' or 'language+variant')")


def synthesize(
    text: str, voice: str, rate_wpm: int = 175, pitch: int = 50, pitch_range: int = 50, phonemes: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Speak ``text`` with ``voice`` and return ``(int16 samples at 22050 Hz, spoken phoneme mnemonics)``.

    ``voice`` is an espeak-ng voice name such as ``en-us``, ``de`` or ``en-gb-scotland+m3``; ``rate_wpm``,
    ``pitch`` (0-99) and ``pitch_range`` (0-99) are espeak parameters. With ``phonemes=True`` the text is
    a phoneme-mnemonic string (written without the ``[[ ]]``) read with the voice's own phoneme table.
    The phoneme list reports what was actually spoken: a mnemonic the voice lacks ends the word early, which
    callers detect by comparing its length. Same arguments give byte-identical samples.
    """
    payload = (f"[[{text}]]" if phonemes else text).encode()
    flags = _CHARS_UTF8 | (_PHONEMES if phonemes else 0)
    with _LOCK, _fresh_engine() as lib:
        _set_voice(lib, voice)
        for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, int(value), 0)
        _chunks.clear()
        _phonemes.clear()
        status = lib.espeak_Synth(payload, len(payload) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r} in voice {voice!r}")
        lib.espeak_Synchronize()
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        spoken = [p for p in _phonemes if not p.startswith("_")]  # "_" entries are pauses
    return samples, spoken


def text_to_phonemes(text: str, voice: str) -> str:
    """espeak-ng's phoneme mnemonics for ``text`` as spoken by ``voice`` (e.g. ``"j'Es"`` for yes, en-us)."""
    with _LOCK, _fresh_engine() as lib:
        _set_voice(lib, voice)
        pointer = ctypes.c_char_p(text.encode())
        result = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _TEXT_MODE_UTF8, _PHONEME_MODE_MNEMONIC)
    return (result or b"").decode()


def espeak_version() -> str:
    """The libespeak-ng version string, part of the corpus cache key (a new release may speak differently)."""
    with _LOCK, _fresh_engine() as lib:
        return lib.espeak_Info(None).decode()
