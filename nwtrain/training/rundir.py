"""Run folders that belong to one run: an exclusive lock per folder, a fresh folder when a timestamp
collides, and the removal of temporary files a killed writer left behind.

Two runs started in the same second resolve the same ``outputs/<experiment>/<time>`` folder; sharing it
would leave one run's ``summary.json`` and ``.hydra/`` over the other's. The lock is ``fcntl.flock`` on
``<folder>/.nwtrain.lock``: the kernel drops it when its holder exits, however it exits, so a lock file
left on disk never blocks anyone. Locks are held until the process ends (a sweep's jobs keep theirs
until the sweep does); a process may take the lock of a folder it already holds.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from pathlib import Path

from nwtrain.errors import OutputDirError

log = logging.getLogger(__name__)

LOCK_FILE = ".nwtrain.lock"
# nwtrain.training.checkpoint's temporary siblings: ".<name>.tmp<writer pid>".
_TEMP = re.compile(r"^\..+\.tmp(\d+)$")
_held: dict[Path, int] = {}  # folder -> descriptor of its locked lock file


def lock_run_folder(folder: str | os.PathLike) -> Path:
    """Take ``folder``'s lock (creating the folder), or raise ``OutputDirError`` naming the process that
    holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        return folder
    if not _try_lock(folder):
        raise OutputDirError(
            f"run folder {folder} is in use by another nwtrain run ({_holder(folder)}): its outputs would "
            f"mix with this run's; choose another folder (hydra.run.dir, paths.output_dir) or wait for it "
            f"to end"
        )
    return folder


def claim_new_run_folder(folder: str | os.PathLike) -> Path:
    """``folder``, or ``folder_1``, ``folder_2``, ... : the first one this call creates, locked. Creating
    the folder is the claim (``mkdir`` is atomic), so two runs never get the same one."""
    base = Path(folder).resolve()
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        if _try_lock(candidate):
            return candidate
    raise OutputDirError(f"run folder {base}: {base.name}_1 .. _999 exist too; choose another hydra.run.dir")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of killed writes under ``folder`` (its top level and ``checkpoints/``).
    Call it with the folder's lock held: no other run writes there, so every temporary file is left over
    from a writer that is gone. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for sub in (folder, folder / "checkpoints"):
        for path in sub.glob(".*.tmp*") if sub.is_dir() else ():
            match = _TEMP.match(path.name)
            if match and path.is_file():
                path.unlink(missing_ok=True)
                log.info("removed %s, left by a killed write (pid %s)", path, match.group(1))
                removed.append(path)
    return removed


def _try_lock(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    # The holder's pid, for the message another run gets.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[folder] = fd
    return True


def _holder(folder: Path) -> str:
    try:
        return f"pid {int((folder / LOCK_FILE).read_text())}"
    except (OSError, ValueError):
        return "pid unknown"
