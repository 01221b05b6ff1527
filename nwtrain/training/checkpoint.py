"""Crash-safe files: atomic writes, checkpoints that load without running code, and RNG state capture.

Every file is written to a temporary sibling, flushed to disk and moved over its target with
``os.replace``, so a reader (or a run killed mid-write) sees either the old file or the new one, never a
torn one. Checkpoints hold only tensors and plain Python data (the config as a YAML string, RNG states as
tensors and lists) so ``torch.load(weights_only=True)`` reads them: loading never unpickles code.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from nwtrain.errors import CheckpointError, DiskFullError, UntrustedFileError
from nwtrain.training.trust import check_config, migrate_targets

FORMAT = "nwtrain-checkpoint"
VERSION = 2  # 2: last.ckpt holds the whole best checkpoint ("best"), not its weights alone
REQUIRED_KEYS = ("model", "optimizer", "epoch", "batch", "config", "rng", "history")
CHECKPOINT_GLOB = "*.ckpt"


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if not _out_of_space(e):
            raise
        tmp.unlink(missing_ok=True)  # before measuring: the partial file's space is free again
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(
            f"disk full writing {path} ({_size(free)} free on {path.parent}); {path.name} keeps its "
            f"previous version"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _out_of_space(e: BaseException | None) -> bool:
    # torch.save reports a failed write as a RuntimeError of its zip writer; the OSError is its context.
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def on_cpu(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists and tuples of tensors and plain data) with every tensor copied to the
    CPU: a checkpoint written by a GPU run then loads on a machine without one, and equals the same state
    carried over a resume (``load_checkpoint`` maps to the CPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    return _atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **payload}, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read an nwtrain checkpoint onto the CPU. A missing, truncated, unsafe or foreign file raises a
    ``CheckpointError`` naming it; a stored config (in the file, or in its run folder's
    ``.hydra/config.yaml``) that names a ``_target_`` nwtrain does not trust raises ``UntrustedFileError``
    (``nwtrain.training.trust``)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in path.glob(f"**/{CHECKPOINT_GLOB}"))[:4]
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is not a torch checkpoint: it is truncated, corrupt or another kind of file"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's text suggests weights_only=False; only its diagnosis, the refused global, is passed on.
        reason = re.search(r"Unsupported global: (GLOBAL \S+)", str(e))
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data "
            f"({reason.group(1) if reason else 'not loadable as weights'}), so it was not loaded (nwtrain "
            f"loads with weights_only=True and never runs code from a file)"
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nwtrain checkpoint (it has no format: {FORMAT!r} entry)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt['version']}; this nwtrain reads up to {VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}")
    if isinstance(ckpt["config"], str):
        ckpt["config"] = migrate_targets(ckpt["config"])
    check_stored_config(ckpt["config"], f"checkpoint {path}")
    run_config = path.parent.parent / ".hydra" / "config.yaml"
    if path.parent.name == "checkpoints" and run_config.is_file():
        check_stored_config(
            migrate_targets(run_config.read_text()),
            f"checkpoint {path}: its run folder's {run_config}",
            resolve=False,
        )
    return ckpt


def check_stored_config(text: Any, source: str, resolve: bool = True) -> None:
    """Refuse a stored YAML config (``source`` names it) that is not a mapping or names an untrusted
    ``_target_``, as written and, with ``resolve``, once its interpolations are resolved (``oc.create``
    builds nodes from a string). A run folder's ``.hydra/config.yaml`` is never built, only checked, and
    holds ``${hydra:...}`` nodes that resolve in a Hydra job alone: it is checked as written."""
    try:
        config = OmegaConf.create(text) if isinstance(text, str) else None
        if not isinstance(config, DictConfig):
            raise ValueError("not a YAML mapping")
        check_config(OmegaConf.to_container(config, resolve=False), source)
        if resolve and "${" in text:
            check_config(OmegaConf.to_container(config, resolve=True), source)
    except UntrustedFileError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{source}: the stored config cannot be read ({type(e).__name__}: {e})"
        ) from None


def capture_rng(generator: torch.Generator) -> dict:
    """Every random stream training draws from: torch (CPU, CUDA), numpy, python and the mismatch
    ``generator``, as tensors and lists."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [version, list(internal), gauss_next],
        "mismatch": generator.get_state(),
    }


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generator.set_state(state["mismatch"])
