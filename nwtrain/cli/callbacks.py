"""Hydra callbacks: the run folder's check and claim before Hydra creates it, and the summary table at the
end of a sweep."""

from __future__ import annotations

import json
import logging
import re
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write
from rich import get_console
from rich.table import Table

from nwtrain.config import check_output_dir
from nwtrain.errors import OutputDirError
from nwtrain.training.checkpoint import atomic_write_json
from nwtrain.training.rundir import claim_new_run_folder, lock_run_folder

log = logging.getLogger(__name__)

# Overrides that repeat a setting rather than define one: their jobs are pooled into mean +- std (a
# cross-validation's folds are repeats of one setting on other held-out speakers).
REPLICATE_KEYS = ("seed", "trainer.seed", "data.cv_fold")
SUMMARY_FILE = "sweep_summary.json"
# The data options that hold no data of their own: a user's class-folder tree or Speech Commands copy.
OWN_DATA = ("folder", "speech_commands")


class CheckOutputDir(Callback):
    """Hydra creates the run (or sweep) folder, and writes ``.hydra/`` there, before any task code runs, and
    fails there with a traceback; this checks the folder first and exits with one line naming it (Hydra
    turns a callback's exceptions into warnings, so it exits). A run's folder is also claimed here, before
    Hydra writes to it (``nwtrain.training.rundir``): a folder named by the time that another run already
    has is replaced by a fresh one with a suffix, ``_1``, ``_2``, ...; a folder named by
    the user that a live run holds is refused."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        timestamped = "${now:" in str(config.hydra.run._get_node("dir")._value())
        own = own_data_name(config)
        if timestamped and own and folder.parent.name == config.get("experiment_name"):
            folder = folder.parent.with_name(own) / folder.name
        try:
            check_output_dir(folder.parent if timestamped else folder)
            claimed = claim_new_run_folder(folder) if timestamped else lock_run_folder(folder)
        except OutputDirError as e:
            raise SystemExit(f"nwtrain: {e}") from None
        if claimed != folder.resolve():
            log.warning(
                "run folder %s belongs to another run started in the same second: using %s", folder, claimed
            )
        if claimed != Path(config.hydra.run.dir).resolve():
            with read_write(config.hydra.run):
                config.hydra.run.dir = str(claimed)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_output_dir(config.hydra.sweep.dir)
        except OutputDirError as e:
            raise SystemExit(f"nwtrain: {e}") from None


def own_data_name(config: DictConfig) -> str | None:
    """``<data folder>_<chip>_<variant>`` for a run on one's own data (``data=folder``,
    ``data=speech_commands``), which the run folder is named after: the experiment names only the network
    it trains. None for the experiments' own data."""
    choice = config.hydra.runtime.choices.get("data")
    if choice not in OWN_DATA or "chip" not in config or "variant" not in config:
        return None
    parent = config.data.get("data_parent")
    data = Path(str(parent)).name if isinstance(parent, str) and parent else choice
    return f"{data}_{config.chip.name}_{config.variant.name}"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    """One row per setting over the job folders of ``sweep_dir``: jobs, failures, and the mean and std of
    best and last-epoch validation accuracy and of test accuracy of the completed jobs. A setting is what
    sets a job apart: its overrides less those every job shares and less the seed and the
    cross-validation fold, whose jobs are pooled. Over folds the last-epoch figure is the cross-validated
    one: the best epoch is chosen on the very clips it is scored on."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        summary_file = job_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"status": "missing"}
        jobs.append((job_dir.name, [str(o) for o in OmegaConf.load(overrides_file)], summary))
    shared = set.intersection(*(set(overrides) for _, overrides, _ in jobs)) if jobs else set()
    groups: dict[tuple[str, ...], list[dict]] = {}
    for name, overrides, summary in jobs:
        setting = tuple(
            o for o in overrides if o not in shared and o.split("=", 1)[0].lstrip("+~") not in REPLICATE_KEYS
        )
        groups.setdefault(setting, []).append({"job": name, **summary})
    rows = []
    for setting, members in groups.items():
        done = [j for j in members if j["status"] in ("completed", "early_stopped")]
        val_mean, val_std = _mean_std([_score(j, "best_val") for j in done])
        last_mean, last_std = _mean_std(
            [_score(j, "last_val") for j in done if _score(j, "last_val") is not None]
        )
        test_mean, test_std = _mean_std([_score(j, "test") for j in done if _score(j, "test") is not None])
        rows.append(
            {
                "setting": " ".join(setting) or "(every job)",
                "jobs": [j["job"] for j in members],
                "completed": len(done),
                "failed": [
                    {"job": j["job"], "error": j.get("error", j["status"])} for j in members if j not in done
                ],
                "val_acc_mean": val_mean,
                "val_acc_std": val_std,
                "last_val_acc_mean": last_mean,
                "last_val_acc_std": last_std,
                "test_acc_mean": test_mean,
                "test_acc_std": test_std,
            }
        )
    return rows


def _score(job: dict, split: str):
    """A job's score on ``split`` under its objective's metric (``best_val_acc``, or ``best_val_r2`` for a
    rate regression)."""
    return job.get(f"{split}_{job.get('metric', 'acc')}")


def _pm(mean, std, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1%}" if n < 2 else f"{mean:.1%} ± {std:.1%}"


_NUMBER = re.compile(r"(?<==)-?\d+\.\d{4,}(?:e-?\d+)?\b|(?<==)-?\d+(?:\.\d+)?e-?\d+\b")


def _short(setting: str) -> str:
    """A setting with its long numbers (Optuna's ``optim.lr_core=0.0012345678``) to 3 significant digits."""
    return _NUMBER.sub(lambda m: f"{float(m.group()):.3g}", setting)


def _rank(row: dict) -> tuple:
    # What sweeps optimise (nwtrain returns it): the best validation accuracy; settings without one last.
    return (row["val_acc_mean"] is None, -(row["val_acc_mean"] or 0.0), row["setting"])


class SweepSummary(Callback):
    """After ``nwtrain -m ...``: ``sweep_summary.json`` in the sweep folder and a table on the console,
    best setting first."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna

            # Optuna's own handler colours its lines (escape codes in logs); Hydra's plain one takes them.
            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sorted(summarize_sweep(sweep_dir), key=_rank)
        if not rows:
            return
        atomic_write_json(sweep_dir / SUMMARY_FILE, rows)
        table = Table(
            title=f"sweep {sweep_dir}",
            caption="best setting first; done: completed / jobs; val (best epoch, last epoch) and test "
            "accuracy: mean ± std over seeds and folds; jobs: their folders in the sweep folder",
        )
        # One override a line, folded rather than cropped: they are the row's name.
        table.add_column("setting", overflow="fold")
        for column in ("done", "best val", "last val", "test"):
            table.add_column(column, no_wrap=True)
        table.add_column("jobs", overflow="fold")
        for r in rows:
            n = r["completed"]
            table.add_row(
                _short(r["setting"]).replace(" ", "\n"),
                f"{n} / {len(r['jobs'])}",
                _pm(r["val_acc_mean"], r["val_acc_std"], n),
                _pm(r["last_val_acc_mean"], r["last_val_acc_std"], n),
                _pm(r["test_acc_mean"], r["test_acc_std"], n),
                "\n".join(r["jobs"]),
            )
        get_console().print(table)
        failed = [(r, failure) for r in rows for failure in r["failed"]]
        for r, failure in failed:
            log.warning("job %s (%s) failed: %s", failure["job"], r["setting"], failure["error"])
        if failed:
            # After the summary is written: the sweep's exit status tells scripts and schedulers.
            jobs = sum(len(r["jobs"]) for r in rows)
            raise SystemExit(
                f"nwtrain: {len(failed)} of {jobs} sweep jobs failed (see {sweep_dir / SUMMARY_FILE})"
            )
