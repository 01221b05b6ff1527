"""``python -m nwtrain`` (= ``nwtrain``) and the console scripts of ``pyproject.toml``.

The entry points import ``nwtrain.cli`` inside the guard: torch and Hydra take seconds to import, and a
Ctrl-C in that time should end the command with one line and exit status 130, not a traceback.
"""

from __future__ import annotations

import os
import signal
import sys

_INTERRUPTED = "nwtrain: interrupted (Ctrl-C)"


def _leave_while_importing(signum: int, frame: object) -> None:
    # A KeyboardInterrupt raised inside torch's or numpy's import leaves them half-initialised: a later
    # import fails ("cannot load module more than once"), the interpreter aborts while finalising them, or
    # CPython marks the exit as death by SIGINT (-2, not 130). Nothing is written before the import ends,
    # so leaving at once, without finalising, loses nothing.
    os.write(sys.stderr.fileno(), f"{_INTERRUPTED}\n".encode())
    os._exit(130)


def _launch(entry: str) -> None:
    if "--version" in sys.argv[1:]:
        from nwtrain import __version__

        print(f"nwtrain {__version__}")
        return
    default = signal.signal(signal.SIGINT, _leave_while_importing)
    try:
        from nwtrain import cli
    finally:
        signal.signal(signal.SIGINT, default)
    try:
        getattr(cli, entry)()
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
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
