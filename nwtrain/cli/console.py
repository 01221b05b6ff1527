"""The console the commands print to: rich on a terminal, full plain lines when the output is piped or
logged (rich would otherwise wrap every line at its default 80 columns, mid-word in tables)."""

from __future__ import annotations

import logging
import os
import sys

import rich
from rich.logging import RichHandler

# The console width when stdout is not a terminal and COLUMNS does not say: tables take the width of their
# content, so this only has to be more than any of them needs.
PIPED_WIDTH = 1000


def console_handler() -> logging.Handler:
    """The console log handler of ``conf/hydra/job_logging/rich.yaml``: rich's (time, level, message
    wrapped to the window) on a terminal, else ``[time] LEVEL message`` on one line each, and the shared
    rich console (tables, the summary) made wide enough that no table wraps."""
    if sys.stdout.isatty():
        return RichHandler(show_path=False)
    rich.reconfigure(width=int(os.environ.get("COLUMNS", 0)) or PIPED_WIDTH)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)-7s %(message)s", "%H:%M:%S"))
    return handler
