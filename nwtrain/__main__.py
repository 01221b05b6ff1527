"""``python -m nwtrain`` (= ``nwtrain``) and the console scripts of ``pyproject.toml``.

The entry points import ``nwtrain.cli`` inside the guard: torch and Hydra take seconds to import, and a
Ctrl-C in that time should end the command with one line, not a traceback.
"""

from __future__ import annotations

import sys


def _launch(entry: str) -> None:
    if "--version" in sys.argv[1:]:
        from nwtrain import __version__

        print(f"nwtrain {__version__}")
        return
    try:
        from nwtrain import cli

        getattr(cli, entry)()
    except KeyboardInterrupt:
        print("nwtrain: interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None


def train() -> None:
    _launch("main")


def evaluate() -> None:
    _launch("eval_main")


def export() -> None:
    _launch("export_main")


def predict() -> None:
    _launch("predict_main")


if __name__ == "__main__":
    train()
