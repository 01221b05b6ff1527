"""Where a result came from: the versions that computed it, the source revision and the command line."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import numba
import numpy as np
import torch

from nwtrain import __version__

SOURCE_ROOT = Path(__file__).resolve().parent.parent


@cache
def git_commit() -> str | None:
    """The commit of the checkout nwtrain runs from, with ``-dirty`` when tracked files differ; None
    outside a git checkout (a wheel install) or without git."""
    try:
        return (
            subprocess.run(
                ["git", "-C", str(SOURCE_ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """Versions of nwtrain, torch, numba, numpy and Python, the git commit and the command line."""
    return {
        "nwtrain": __version__,
        # torch's version is a TorchVersion (a str subclass) that weights_only loading refuses as a global.
        "torch": str(torch.__version__),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": shlex.join(sys.argv),
    }
