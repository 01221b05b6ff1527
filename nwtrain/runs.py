"""Runs and their configs: the one place a composed config becomes data, a network and a training run, and a
run folder's checkpoint becomes them again.

``train(cfg)`` is the runner behind ``nwtrain``: ``setup(cfg)`` builds a ``Run`` (``nwtrain.training.loop``),
``fit`` trains it and ``finish`` tests it and writes the summary. Run folder (``paths.output_dir``):
``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt``, ``metrics.jsonl``, ``tensorboard/``,
``summary.json``, ``plots/*.png`` (Hydra adds ``.hydra/`` and the log).

``load_run`` / ``load_model`` rebuild a checkpoint's data and model for ``nwtrain-eval``, ``nwtrain-export``
and ``nwtrain-predict``.

Determinism: every random stream is seeded from ``trainer.seed`` and saved in each checkpoint: torch,
numpy, python, and the explicit mismatch generator that draws a chip instance per training batch.
Evaluation draws its chip instances from generators re-seeded at every call, so validation accuracy changes
only when the weights do.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from nwtrain.config import (
    check_output_dir,
    check_real_data_dir,
    check_words,
    trainer_device,
    validate_config,
    validate_data_config,
)
from nwtrain.data import AudioFileError
from nwtrain.errors import CheckpointError, ConfigError, DataError
from nwtrain.models import KWSNet
from nwtrain.training.annealing import load_annealed_state
from nwtrain.training.averaging import WeightAverage
from nwtrain.training.checkpoint import load_checkpoint
from nwtrain.training.divergence import DivergenceMonitor
from nwtrain.training.loop import (
    Limits,
    LossWeights,
    Run,
    batch_loader,
    epoch_batches,
    finish,
    fit,
    save_both,
)
from nwtrain.training.objectives import Classification
from nwtrain.training.provenance import provenance
from nwtrain.training.rundir import lock_run_folder, remove_stale_temps
from nwtrain.training.state import CHECKPOINT_DIR, TrainState, flat, restore, resume_changes
from nwtrain.training.tracking import RunTracker, print_summary

log = logging.getLogger(__name__)

# The config groups whose settings TensorBoard's HParams dashboard compares runs by.
HPARAM_GROUPS = ("experiment_name", "seed", "chip", "variant", "model", "loss", "optim", "trainer", "data")
SPLITS = ("train", "val", "test")
# The data settings the model's input depends on: with data=<option>, each comes from the checkpoint unless
# the command line sets it.
INPUT_SETTINGS = (
    "words",
    "sample_rate",
    "bands_per_octave",
    "compression",
    "compression_floor_db",
    "recording_duration_s",
    "sim_time_s",
)
# Overrides that would locate other data, which a checkpoint's resolved data config no longer follows.
DATA_LOCATIONS = ("data.", "paths.real_data_dir", "paths.speech_commands_dir")


# ---------------------------------------------------------------------------------------------------------
# Building blocks from the config
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Data:
    loaders: dict[str, DataLoader]
    classes: list[str]
    n_channels: int
    features: dict  # the filterbank settings the features were computed with (ChipFilterbank.cache_fields)


def build_data(data_cfg: DictConfig) -> Data:
    """Instantiate the ``data`` group. A ``data_parent`` that is itself a ``_target_`` (the embedded
    corpus) is built first, so its folder can be checked for ``data.words``."""
    check_real_data_dir(data_cfg)
    parent = data_cfg.data_parent
    if isinstance(parent, DictConfig):
        parent = instantiate(parent)
    check_words(parent, data_cfg.get("words"))
    datagen = instantiate(data_cfg, data_parent=str(parent))
    try:
        loaders = datagen.dataloaders()
    except AudioFileError as e:
        raise DataError(f"{e}; data.on_bad_file=skip leaves such files out") from None
    return Data(loaders, list(datagen.classes), int(datagen.n_channels), datagen.filterbank.cache_fields())


def build_model(model_cfg: DictConfig, n_channels: int, n_classes: int, device: torch.device) -> KWSNet:
    """The ``model`` group, built. The SDK's layers announce themselves as they are made (a UserWarning for
    a front end of other than 16 channels, an INFO line from every synapse with mismatch); a run says each
    of those facts once, at INFO."""
    notes = _Notes()
    layers_log = logging.getLogger("nwtrain.core.layers")
    layers_log.addHandler(notes)
    propagate, layers_log.propagate = layers_log.propagate, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = instantiate(model_cfg, n_channels=n_channels, n_classes=n_classes, device=str(device))
    finally:
        layers_log.removeHandler(notes)
        layers_log.propagate = propagate
    for message in dict.fromkeys([*(str(w.message) for w in caught), *notes.messages]):
        log.info(message)
    return model


class _Notes(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def objective_of(loss_cfg: DictConfig):
    """The ``loss`` group's objective (``nwtrain.training.objectives``); configs from before it existed
    classify."""
    return instantiate(loss_cfg.objective) if loss_cfg.get("objective") else Classification()


def loss_weights(loss_cfg: DictConfig) -> LossWeights:
    """The ``loss`` group as plain numbers (read once, not per batch)."""
    return LossWeights(
        float(loss_cfg.lam_topology),
        float(loss_cfg.limit),
        float(loss_cfg.lam_fr),
        float(loss_cfg.target_fr),
        tuple(loss_cfg.fr_layers),
        objective_of(loss_cfg),
    )


def limits(trainer_cfg: DictConfig) -> Limits:
    return Limits(
        epochs=trainer_cfg.epochs,
        grad_clip=trainer_cfg.grad_clip,
        early_stopping_patience=trainer_cfg.early_stopping_patience,
        limit_train_batches=trainer_cfg.limit_train_batches,
        limit_eval_batches=trainer_cfg.limit_eval_batches,
        stop_on_divergence=bool(trainer_cfg.stop_on_divergence),
    )


def require_classifier(run_cfg: DictConfig, path, command: str) -> None:
    """``command`` scores class decisions: a rate-regression run (``loss=rate_regression``) is refused with
    a message naming the checkpoint and where its scores are."""
    objective = objective_of(run_cfg.loss)
    if not isinstance(objective, Classification):
        raise ConfigError(
            "ckpt_path",
            f"{path} is a rate-regression run (loss.objective: {type(objective).__name__}); {command} scores "
            f"classifiers. Its validation and test R^2 are in the run's summary.json, its rates in plots/",
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# The runner behind `nwtrain`
# ---------------------------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict:
    """Train, checkpoint and test the configured network; returns the run summary (also in summary.json)."""
    run = setup(cfg)
    with run.tracker:
        fit(run)
        summary = finish(run)
    print_summary(summary)
    return summary


def setup(cfg: DictConfig) -> Run:
    """The run ``cfg`` describes, ready to fit: its folder claimed, data and network built, optimiser and
    schedules made, and its state fresh or restored from ``cfg.ckpt_path``."""
    started = time.perf_counter()
    validate_config(cfg)
    ckpt_dir = open_run_folder(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    changes = resume_changes(ckpt, ckpt_path, cfg) if ckpt is not None else {}
    seed = cfg.trainer.seed
    seed_everything(seed)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    device = trainer_device(cfg)
    data = build_data(cfg.data)
    empty = [split for split in ("train", "val") if len(data.loaders[split].dataset) == 0]
    if empty:
        raise DataError(
            f"data: the {empty[0]} split is empty; use more data, or a larger val_split for a class-folder "
            "tree"
        )
    model = build_model(cfg.model, data.n_channels, len(data.classes), device)
    run = build_run(cfg, model, data, device, ckpt_dir, ckpt)
    origin = provenance()
    run.checkpoint_extra = {
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "classes": data.classes,
        "n_channels": data.n_channels,
        "provenance": origin,
        **run_identity(cfg),
    }
    resumed = {"from": str(ckpt_path), "epoch": ckpt["epoch"], "changed": changes} if ckpt else None
    run.report = {
        "experiment": cfg.experiment_name,
        **run_identity(cfg),
        "seed": seed,
        "resumed": resumed,
        "provenance": origin,
    }
    run.started = started
    if ckpt is not None:
        for key in ("optim.lr_frontend", "optim.lr_core"):
            if key in changes:
                log.warning(
                    "%s changed on resume: %s -> %s from epoch %d on", key, *changes[key], run.state.epoch + 1
                )
        save_both(run)  # the resumed run's folder holds both checkpoints from its start, finished or not
    log.info(
        "run folder %s | %s on %s | classes %s | %d train, %d val samples, %d channels%s",
        ckpt_dir.parent,
        cfg.experiment_name,
        device,
        data.classes,
        len(run.train_loader.dataset),
        len(run.val_loader.dataset),
        data.n_channels,
        f" | resumed from {ckpt_path} at epoch {run.state.epoch + 1}" if ckpt is not None else "",
    )
    return run


def open_run_folder(output_dir) -> Path:
    """Claim the run folder ``output_dir`` (a lock held for the process's life; temporary files a killed
    run left are removed) and return its checkpoint folder."""
    out_dir = check_output_dir(output_dir)
    lock_run_folder(out_dir)
    remove_stale_temps(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    ckpt_dir.mkdir(exist_ok=True)
    return ckpt_dir


def run_identity(cfg: DictConfig) -> dict:
    """What a run is, as its checkpoints and summary name it."""
    return {"chip": cfg.model.chip, "variant": cfg.variant.name}


def build_run(cfg: DictConfig, model: KWSNet, data: Data, device, ckpt_dir, ckpt: dict | None) -> Run:
    """The optimiser, schedules, initialisation and state of a run on ``model``."""
    seed, train_loader = cfg.trainer.seed, data.loaders["train"]
    if cfg.get("init") and ckpt is None:  # a resumed run takes its weights from the checkpoint
        first = next(iter(batch_loader(train_loader, epoch_batches(train_loader, seed, 0, 1))))[0]
        instantiate(cfg.init)(model, first.to(device), generator=torch.Generator().manual_seed(seed))
    # Before the optimiser: SignAnnealing parametrises the weights, and the optimiser holds the originals.
    annealer = instantiate(cfg.variant.sign_annealing)(model) if cfg.variant.sign_annealing else None
    ema_decay = cfg.trainer.get("ema_decay")
    average = WeightAverage(model, ema_decay) if ema_decay is not None else None
    optimizer = instantiate(cfg.optim.optimizer)(model.param_groups(cfg.optim.lr_frontend, cfg.optim.lr_core))
    # Built before a checkpoint's optimiser state is loaded: it takes the configured rates as its base.
    schedule = instantiate(cfg.optim.scheduler)(optimizer) if cfg.optim.get("scheduler") else None
    mismatch = torch.Generator().manual_seed(seed)
    lrs = {"frontend": cfg.optim.lr_frontend, "core": cfg.optim.lr_core}
    state = (
        TrainState()
        if ckpt is None
        else restore(ckpt, cfg.ckpt_path, model, optimizer, mismatch, data.classes, lrs, average)
    )
    weights = loss_weights(cfg.loss)
    logger = cfg.logger
    tracker = RunTracker(
        ckpt_dir.parent,
        state.history,
        epochs=cfg.trainer.epochs,
        tensorboard=logger.tensorboard,
        weight_histograms=logger.weight_histograms,
        progress=logger.progress,
        objective=weights.objective,
    )
    hparams = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in HPARAM_GROUPS}
    return Run(
        model=model,
        optimizer=optimizer,
        train_loader=train_loader,
        val_loader=data.loaders["val"],
        device=device,
        seed=seed,
        limits=limits(cfg.trainer),
        weights=weights,
        state=state,
        tracker=tracker,
        ckpt_dir=ckpt_dir,
        checkpoint_extra={},
        schedule=schedule,
        annealer=annealer,
        average=average,
        mismatch=mismatch,
        divergence=DivergenceMonitor(cfg.trainer.epochs, model.layer_names[-1]),
        test_loader=data.loaders.get("test"),
        classes=data.classes,
        hparams=flat(hparams),
        plots=bool(logger.plots),
    )


# ---------------------------------------------------------------------------------------------------------
# A run folder's checkpoint, its data and its model (nwtrain-eval, nwtrain-export, nwtrain-predict)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SavedRun:
    ckpt_path: str
    ckpt: dict
    config: DictConfig  # the training config, with ``data`` (and ``paths``) swapped in when asked for
    data: Data
    device: torch.device


def load_run(cfg: DictConfig, overrides: Sequence[str] = (), device: torch.device | None = None) -> SavedRun:
    """Load ``cfg.ckpt_path`` and build its data: the checkpoint's, or ``cfg.data`` when set, whose
    ``INPUT_SETTINGS`` come from the checkpoint unless ``overrides`` (the command line's) set them; the
    classes and channels must be the checkpoint's. ``device`` None: ``cfg.trainer.device``."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(ckpt["config"])
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if cfg.get("data") is not None:
        other = OmegaConf.masked_copy(cfg, ["data", "paths"])
        for key in INPUT_SETTINGS:
            if f"data.{key}" not in given:
                other.data[key] = run_cfg.data[key]
        run_cfg = OmegaConf.merge(run_cfg, other)
    else:
        moved = sorted(k for k in given if k.startswith(DATA_LOCATIONS))
        if moved:
            raise ConfigError(
                moved[0],
                f"the checkpoint's data config holds resolved paths (data.data_parent: "
                f"{run_cfg.data.data_parent}), so {', '.join(moved)} would change nothing; name the data "
                f"too, e.g. data=sc_excerpt {moved[0]}=...",
            )
    validate_data_config(run_cfg)
    if run_cfg.data.get("train_speed_factors"):
        # scored as recorded: split=train is the training clips, not their speed copies
        run_cfg.data.train_speed_factors = []
    data = build_data(run_cfg.data)
    if data.classes != ckpt["classes"] or data.n_channels != ckpt["n_channels"]:
        stored = OmegaConf.create(ckpt["config"]).data
        changed = [
            f"data.{k}={run_cfg.data[k]} (trained with {stored[k]})"
            for k in INPUT_SETTINGS
            if f"data.{k}" in given
        ]
        raise DataError(
            f"the data ({data.classes}, {data.n_channels} channels) does not match checkpoint "
            f"{cfg.ckpt_path} ({ckpt['classes']}, {ckpt['n_channels']} channels)"
            + (f": {'; '.join(changed)}" if changed else "; set data.words to its classes, in order")
        )
    return SavedRun(
        str(cfg.ckpt_path), ckpt, run_cfg, data, device if device is not None else trainer_device(cfg)
    )


def load_model(run: SavedRun, **model_overrides) -> KWSNet:
    """The checkpoint's model, built with ``model_overrides`` (e.g. its mismatch options) on top of its
    config; the weights are the checkpoint's. A model that does not fit its chip is measured all the same
    (with a warning); exporting it is refused (``nwtrain.deploy.export.deploy``)."""
    model_cfg = OmegaConf.merge(run.config.model, {"fit_chip": False}, model_overrides)
    model = build_model(model_cfg, run.data.n_channels, len(run.data.classes), run.device)
    try:
        load_annealed_state(model, run.ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {run.ckpt_path} does not fit its own model config: {e}") from None
    return model
