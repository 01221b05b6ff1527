"""What a run reports while it trains: metrics.jsonl, TensorBoard, the rich progress display, the summary.

Each epoch is one record, a flat dict whose keys are TensorBoard tags (``loss/total``, ``accuracy/val``,
``firing_rate/hidden``, ``lr/core`` ...) plus ``epoch``; ``metrics.jsonl`` holds one record a line and is
rewritten atomically from the full history every epoch, so it always matches the last checkpoint.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from rich import get_console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from torch import nn

from nwtrain.training.annealing import exposed_parameters
from nwtrain.training.checkpoint import atomic_write_jsonl
from nwtrain.training.objectives import Classification

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunTracker:
    """Context manager owning the run's live outputs. ``history`` is the list of epoch records so far
    (restored from a checkpoint on resume); TensorBoard events past it are purged, and a fresh folder gets
    the earlier epochs replayed so its curves are complete."""

    def __init__(
        self,
        out_dir: Path,
        history: list[dict],
        *,
        epochs: int,
        tensorboard: bool = True,
        weight_histograms: bool = True,
        progress: bool = True,
        objective=None,
    ):
        self.out_dir = Path(out_dir)
        self.objective = objective or Classification()
        self.history = history
        self.epochs = epochs
        self.weight_histograms = weight_histograms
        atomic_write_jsonl(self.out_dir / METRICS_FILE, history)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when asked for

            tb_dir = self.out_dir / TENSORBOARD_DIR
            replay = not any(tb_dir.glob("events.*"))
            self.writer = SummaryWriter(str(tb_dir), purge_step=len(history) if history else None)
            for record in history if replay else ():
                self._scalars(record)
        # The console the RichHandler of hydra/job_logging prints to, so log lines scroll above the bar.
        console = get_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not (progress and console.is_terminal),
        )
        self._epoch_task = self._batch_task = None

    def __enter__(self):
        self.progress.start()
        self._epoch_task = self.progress.add_task(
            "epochs", total=self.epochs, completed=len(self.history), status=""
        )
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        if self.writer is not None:
            self.writer.close()

    def start_epoch(self, epoch: int, n_batches: int, done: int) -> None:
        if self._batch_task is not None:
            self.progress.remove_task(self._batch_task)
        self._batch_task = self.progress.add_task(
            f"epoch {epoch + 1}", total=n_batches, completed=done, status=""
        )

    def batch_done(self, loss: float) -> None:
        self.progress.update(self._batch_task, advance=1, status=f"loss {loss:.4f}")

    def epoch_done(self, record: dict, model: nn.Module) -> None:
        """Log the epoch's record everywhere; ``record`` is already the last entry of ``history``."""
        atomic_write_jsonl(self.out_dir / METRICS_FILE, self.history)
        if self.writer is not None:
            self._scalars(record)
            if self.weight_histograms:
                for name, p in exposed_parameters(model):
                    self.writer.add_histogram(f"weights/{name}", p.detach().cpu(), record["epoch"])
            self.writer.flush()
        tag, fmt = self.objective.tag, self.objective.format
        self.progress.update(
            self._epoch_task, completed=record["epoch"], status=f"val {fmt(record[f'{tag}/val'])}"
        )
        log.info(
            "epoch %d/%d | loss %.4f | train %s | val %s | %.1f s",
            record["epoch"],
            self.epochs,
            record["loss/total"],
            fmt(record[f"{tag}/train"]),
            fmt(record[f"{tag}/val"]),
            record["time/epoch_s"],
        )

    def final(self, metrics: dict, hparams: dict) -> None:
        """The run's closing metrics, at the last epoch's step (TensorBoard's steps only move forward), and
        its settings (``hparams``: dotted names to values) for the HParams dashboard, which compares runs
        by them."""
        if self.writer is None:
            return
        step = self.history[-1]["epoch"] if self.history else 0
        final = {tag: value for tag, value in metrics.items() if value is not None}
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        # HParams needs its metrics under other tags than the scalars' (the same tag would plot twice).
        self.writer.add_hparams(
            hparam_values(hparams), {f"hparams/{tag}": value for tag, value in final.items()}, run_name="."
        )

    def _scalars(self, record: dict) -> None:
        for tag, value in record.items():
            if tag != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, record["epoch"])


def hparam_values(settings: dict) -> dict:
    """``settings`` (dotted names to values) as the HParams plugin takes them: lists become strings, None
    "null", and Hydra's ``_target_`` / ``_partial_`` / ``_convert_`` entries go (they name code)."""
    return {
        name: "null" if value is None else str(value) if isinstance(value, (list, tuple)) else value
        for name, value in settings.items()
        if not name.rpartition(".")[2].startswith("_")
    }


def pct(value) -> str:
    """A fraction as a percentage; "-" for a missing or non-finite one."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _r2(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(summary: dict) -> None:
    """The closing table of a run (the same numbers are in ``summary.json``)."""
    table = Table(title=f"nwtrain: {summary['experiment']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    metric = summary.get("metric", "acc")
    name, fmt = ("accuracy", pct) if metric == "acc" else (metric.upper(), _r2)
    rows = [
        ("status", summary["status"]),
        (f"best val {name}", f"{fmt(summary[f'best_val_{metric}'])} (epoch {summary['best_epoch']})"),
        (f"test {name}", fmt(summary[f"test_{metric}"])),
        ("epochs", str(summary["epochs_completed"])),
        ("training time", f"{summary['train_time_s']:.1f} s"),
        ("wall time (this process)", f"{summary['wall_time_s']:.1f} s"),
        ("run folder", summary["run_dir"]),
    ]
    for row in rows:
        table.add_row(*row)
    get_console().print(table)
