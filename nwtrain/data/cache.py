"""On-disk caches: where they live, content keys, and atomic ``torch.save`` / ``weights_only`` loads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "NWTRAIN_CACHE"


def default_cache_dir() -> Path:
    """``$NWTRAIN_CACHE`` if set, else ``~/.cache/nwtrain``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nwtrain"


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes; an unreadable file gets a marker instead, so it still has a key."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def file_digests(paths: Sequence[Path], num_workers: int = 0) -> list[str]:
    """:func:`file_digest` of every path, on ``num_workers`` threads (hashlib releases the GIL)."""
    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as pool:
            return list(pool.map(file_digest, paths))
    return [file_digest(p) for p in paths]


def content_key(fields: dict) -> str:
    """A stable sha256 hex key over JSON-serialisable ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def save_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(path: Path) -> dict | None:
    """The payload saved at ``path``, or ``None`` when absent or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file must not block training: recompute instead
        logger.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
