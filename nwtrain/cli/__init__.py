"""Console entry points: ``nwtrain`` (train; ``-m`` sweeps), ``nwtrain-eval`` (evaluate a checkpoint),
``nwtrain-export`` (a chip-ready artefact of a checkpoint) and ``nwtrain-predict`` (classify recordings);
``nwtrain/__main__.py`` launches them.

Configs come from the ``conf/`` folder at the repository root, found next to the package (a checkout or an
editable install, ``pip install -e .``); ``NWTRAIN_CONFIG_DIR`` points at another copy, e.g. for a wheel
install. ``--config-dir`` / ``hydra.searchpath`` add folders of one's own experiments on top.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from nwtrain import config as validation
from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.cli.export import export_checkpoint
from nwtrain.cli.predict import predict
from nwtrain.errors import ConfigError, DiskFullError, NwtrainError, TrainingInterrupted
from nwtrain.runs import train
from nwtrain.training.checkpoint import atomic_write_json
from nwtrain.training.state import CHECKPOINT_DIR, LAST

log = logging.getLogger("nwtrain")

CONFIG_DIR = str(validation.CONFIG_DIR)


def _run(task: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run one job. Errors a user can fix print as one line. In a sweep a failed job is recorded in its
    folder's summary.json and returns NaN (a failed trial for Optuna), so the other jobs go on; a signal
    still stops the whole sweep."""
    try:
        return task(cfg)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        # Ctrl-C before training installs its handler (data, model), or a second one during training.
        log.warning("interrupted (Ctrl-C): stopped at once%s", _resume_hint(cfg))
        raise SystemExit(130) from None
    except DiskFullError as e:
        log.error("%s%s", e, _resume_hint(cfg, "free some space, then resume"))
        raise SystemExit(1) from None
    except Exception as raised:
        # Hydra wraps what a config's builder raises (a data folder's error) in a message of its own.
        wrapped = isinstance(raised, InstantiationException) and raised.__cause__ is not None
        e = raised.__cause__ if wrapped else raised
        if isinstance(e, MissingMandatoryValue):  # a ??? field of the config, e.g. nwtrain-eval's ckpt_path
            e = ConfigError(e.full_key, f"has no value; give {e.full_key}=<value> on the command line")
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            if isinstance(e, NwtrainError):
                log.error("%s", e)
                raise SystemExit(1) from None
            raise
        log.error(
            "job failed, the sweep goes on: %s: %s",
            type(e).__name__,
            e,
            exc_info=not isinstance(e, NwtrainError),
        )
        try:
            atomic_write_json(
                Path(HydraConfig.get().runtime.output_dir) / "summary.json",
                {"status": "failed", "error": f"{type(e).__name__}: {e}"},
            )
        except OSError as write_error:
            log.error("could not record the failure: %s", write_error)
        return math.nan


def _resume_hint(cfg: DictConfig, what: str = "resume") -> str:
    last = Path(cfg.paths.output_dir) / CHECKPOINT_DIR / LAST
    return f"; {what} with the same command plus ckpt_path={last}" if last.is_file() else ""


def check_choices(args: Sequence[str], conf_dir: Path) -> None:
    """Refuse a config group option that does not exist (``experiment=yesno_h1v1_hww``) in one line with
    the nearest names, before Hydra composes and lists every option of the group instead."""
    for arg in args:
        match = re.fullmatch(r"[+]?([\w/]+)=([\w.,-]+)", arg)
        if match is None or not (conf_dir / match.group(1)).is_dir():
            continue  # a field, a sweep expression or a group of Hydra's own plugins
        group, value = match.groups()
        options = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                near = difflib.get_close_matches(choice, options, n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(near)}?" if near else f"options: {', '.join(options)}"
                raise SystemExit(f"nwtrain: {group}={choice} is not an option of {conf_dir / group}; {hint}")


def _entry(command: Callable[[], float]) -> Callable[[], float]:
    @functools.wraps(command)
    def run() -> float:
        check_choices(sys.argv[1:], Path(CONFIG_DIR))
        return command()

    return run


@_entry
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """``nwtrain [experiment=...] [field=value ...]``; returns the best validation score, accuracy or a
    rate regression's R^2 (what sweeps optimise)."""

    def best_score(c: DictConfig) -> float:
        summary = train(c)
        return summary[f"best_val_{summary['metric']}"]

    return _run(best_score, cfg)


@_entry
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def eval_main(cfg: DictConfig) -> float:
    """``nwtrain-eval ckpt_path=... [data=...] [split=test|val|train|all]``; returns the accuracy."""
    return _run(lambda c: evaluate_checkpoint(c, HydraConfig.get().overrides.task)["acc"], cfg)


@_entry
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def predict_main(cfg: DictConfig) -> float:
    """``nwtrain-predict (ckpt_path=... | artefact=...) audio=<wav, folder or list>``; returns the number of
    recordings classified."""
    return _run(lambda c: len(predict(c)["rows"]), cfg)


@_entry
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def export_main(cfg: DictConfig) -> float:
    """``nwtrain-export ckpt_path=... [project=true] [bits=5] [verify_split=test]``; returns the fraction of
    clips on which the artefact's simulator agrees with the model (NaN without verification)."""
    return _run(
        lambda c: export_checkpoint(c, HydraConfig.get().overrides.task).get("class_agreement", math.nan), cfg
    )
