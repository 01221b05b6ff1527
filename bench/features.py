"""Feature throughput of the chip filterbank on this machine (clips/s), for the README.

    .venv/bin/python bench/features.py [--clips 2048] [--sample-rate 16000]

Measures (1) the filterbank alone on in-memory 1 s clips and (2) the whole cold path of NWaveDataGen:
hash + decode WAV files + resample + filterbank, with the feature cache disabled, then (3) a warm start
that loads the cached features.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nwtrain.data import ChipFilterbank, NWaveDataGen, NWaveDataloaderConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2048)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    args = parser.parse_args()
    sr, n = args.sample_rate, args.clips
    rng = np.random.default_rng(0)
    t = np.arange(sr) / sr
    # chirps in noise: energy in every band, like speech
    clips = np.stack(
        [
            np.sin(2 * np.pi * (100 + rng.uniform(500, 4000) * t) * t) + 0.1 * rng.standard_normal(sr)
            for _ in range(64)
        ]
    )
    waves = torch.from_numpy(np.resize(clips, (n, sr))).float()
    fb = ChipFilterbank(sr, 8e-3)
    fb(waves[:64])  # warm-up
    start = time.perf_counter()
    fb(waves)
    in_memory = n / (time.perf_counter() - start)
    print(
        f"filterbank only : {in_memory:7.0f} clips/s  ({n} x 1 s @ {sr} Hz -> [{n}, 125, {fb.n_channels}], "
        f"{torch.get_num_threads()} threads)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n):
            folder = Path(tmp) / "data" / f"class{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{k}.wav", (clips[k % 64] * 16000).astype(np.int16), sr, subtype="PCM_16")
        config = NWaveDataloaderConfig(batch_size=64, val_split=0.15, num_workers=args.workers)
        for label, use_cache in (
            ("wav -> features ", False),
            ("cache write     ", True),
            ("warm cache load ", True),
        ):
            start = time.perf_counter()
            dm = NWaveDataGen(
                Path(tmp) / "data",
                sr,
                1.0,
                8e-3,
                config,
                cache_dir=Path(tmp) / "cache",
                use_cache=use_cache,
                progress=False,
            )
            dm.datasets()
            rate = n / (time.perf_counter() - start)
            print(f"{label}: {rate:7.0f} clips/s  (from cache: {dm.loaded_from_cache})")


if __name__ == "__main__":
    main()
