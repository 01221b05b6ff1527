"""Helpers shared by the CLI, runner and reliability tests (no tests here): config composition, a tiny
run on a tiny embedded corpus, and the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CLIPS_PER_WORD = 30  # 36 train, 12 val, 12 test clips of yes/no: a corpus with every split in seconds


def tiny_cache(tmp_path_factory) -> Path:
    """A cache folder shared by the session: the embedded corpus is synthesised there once (and its
    features cached), as a first `nwtrain` run would do under ~/.cache/nwtrain."""
    from nwtrain.data import ensure_embedded_corpus

    cache = tmp_path_factory.getbasetemp() / "nwtrain-cache"
    ensure_embedded_corpus(
        cache / "corpus", ["yes", "no"], seed=0, clips_per_word=CLIPS_PER_WORD, progress=False
    )
    return cache


def tiny_overrides(cache: Path, *extra: str) -> list[str]:
    """Shrink any experiment to seconds: the tiny corpus, 8 hidden neurons, one epoch, no live display."""
    return [
        f"paths.cache_dir={cache}",
        f"data.data_parent.clips_per_word={CLIPS_PER_WORD}",
        "data.progress=false",
        "model.hidden_size=8",
        "trainer.epochs=1",
        "logger.progress=false",
        *extra,
    ]


def compose_config(overrides, config_name: str = "train", return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def checkpoint_config(config_name: str, ckpt: Path, out: Path, cache: Path, *overrides: str):
    """The composed ``eval`` or ``export`` config for checkpoint ``ckpt``, writing to ``out``."""
    return compose_config(
        [f"ckpt_path={ckpt}", f"paths.output_dir={out}", f"paths.cache_dir={cache}", *overrides],
        config_name=config_name,
    )


def run_cli(args, cwd: Path, entry: str = "main", timeout: float = 300) -> subprocess.CompletedProcess:
    """``nwtrain`` (entry ``main``) or ``nwtrain-eval`` (``eval_main``) in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", f"from nwtrain.cli import {entry}; {entry}()", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env() -> dict:
    # A wide console keeps rich from wrapping the messages the tests look for.
    return {**os.environ, "COLUMNS": "250"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def deterministic(history: list[dict]) -> list[dict]:
    """Epoch records without their timings, which differ between otherwise identical runs."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in history]
