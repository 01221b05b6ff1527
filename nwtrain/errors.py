"""Errors the CLI reports as one clear line (no traceback): each names the file, field or value at fault."""

from __future__ import annotations


class NwtrainError(Exception):
    """Base of the errors a user can fix from the message alone."""


class ConfigError(NwtrainError, ValueError):
    """A config field holds a value nwtrain cannot use; the message starts with the field's dotted name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class CheckpointError(NwtrainError):
    """A checkpoint file is missing, truncated, foreign or incompatible; the message names the file."""


class UntrustedFileError(NwtrainError):
    """A file nwtrain reads back (checkpoint, run folder, artefact) names code to call, or does not match
    the hash recorded for it; the message names the file and what was refused."""


class DataError(NwtrainError, ValueError):
    """The data set does not match the config (missing words or folders), or a file of it is unusable."""


class OutputDirError(NwtrainError):
    """The run folder cannot be written, or another run holds it."""


class DiskFullError(NwtrainError, OSError):
    """A write ran out of disk space; the message names the file and the free space. The file's previous
    version is untouched (atomic writes) and the partial temporary file is removed."""


class ExportError(NwtrainError):
    """A network cannot be exported as a chip artefact (its weights break the chip's constraints, or its
    structure is not a chain the artefact describes); the message lists what is wrong."""


class NonFiniteLossError(NwtrainError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


class DivergenceError(NwtrainError):
    """Training diverged (``trainer.stop_on_divergence``); the checkpoints of the last epoch are kept."""


class TrainingInterrupted(NwtrainError):
    """SIGINT / SIGTERM stopped training after a resumable checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "terminated by signal signum"
