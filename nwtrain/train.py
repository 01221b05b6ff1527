"""The training runner: ``train(cfg)`` turns a composed config into a trained, tested run folder.

Run folder (``paths.output_dir``): ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt``,
``metrics.jsonl``, ``tensorboard/``, ``summary.json``, ``plots/*.png`` (Hydra adds ``.hydra/`` and the log).

Determinism: every random stream is seeded from ``trainer.seed`` and saved in each checkpoint: torch,
numpy, python, and the explicit mismatch generator that draws a chip instance per training batch. The
order of the training batches is a function of (seed, epoch) alone, so a run resumed from any checkpoint,
even one written mid-epoch on a signal, replays exactly the batches and draws the uninterrupted run would
have seen, and ends with the same metrics (on CPU). Evaluation draws its chip instances from generators
re-seeded at every call, so validation accuracy changes only when the weights do.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler, Subset

from . import plots
from .checkpoint import atomic_write_json, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .chips import get_chip
from .chips.common import SIGN_BLOCK_SIZE
from .data import AudioFileError
from .divergence import CLAMP_KEY, DivergenceMonitor, clamped_fraction
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    NonFiniteLossError,
    TrainingInterrupted,
)
from .layers import routed_weight
from .loss import firing_rate_target_mse_loss, topology_loss, weight_magnitude_loss
from .metrics import spike_counts
from .models import KWSNet
from .objectives import Classification
from .optim import load_annealed_state
from .provenance import provenance
from .rundir import lock_run_folder, remove_stale_temps
from .topology import violating_blocks
from .tracking import RunTracker, print_summary
from .validation import check_output_dir, check_real_data_dir, check_words, resolve_device, validate_config

log = logging.getLogger(__name__)
# The config groups whose settings TensorBoard's HParams dashboard compares runs by.
HPARAM_GROUPS = ("experiment_name", "seed", "chip", "variant", "model", "loss", "optim", "trainer", "data")

# Offsets from trainer.seed of the evaluation generators: fixed chip instances, distinct from the training
# draws. Validation and test are scored on the same instances (batch k of either on the same chip), so the
# two lists differ only in their clips: a best epoch picked on one chip sequence is then not measured on
# another, which would widen the gap by the chip-to-chip spread.
EVAL_SEED_OFFSETS = {"val": 1_000_003, "test": 1_000_003, "train": 3_000_017}
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.ckpt", "best.ckpt"


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
    return Data(
        loaders,
        list(datagen.classes),
        int(datagen.n_channels),
        datagen.filterbank.cache_fields(),
    )


def build_model(model_cfg: DictConfig, n_channels: int, n_classes: int, device: torch.device) -> KWSNet:
    """The ``model`` group, built. The SDK's layers announce themselves as they are made (a UserWarning for
    a front end of other than 16 channels, an INFO line from every synapse with mismatch); a run says each
    of those facts once, at INFO."""
    notes = _Notes()
    layers_log = logging.getLogger("nwtrain.layers")
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


@dataclass(frozen=True)
class LossWeights:
    """The ``loss`` group as plain numbers (read once, not per batch)."""

    lam_topology: float
    limit: float
    lam_fr: float
    target_fr: float
    fr_layers: tuple[str, ...]
    objective: object = field(default_factory=Classification)  # nwtrain.objectives: the task loss and score

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> LossWeights:
        return cls(
            float(cfg.lam_topology),
            float(cfg.limit),
            float(cfg.lam_fr),
            float(cfg.target_fr),
            tuple(cfg.fr_layers),
            objective_of(cfg),
        )


def objective_of(loss_cfg: DictConfig):
    """The ``loss`` group's objective (``nwtrain.objectives``); configs from before it existed classify."""
    return instantiate(loss_cfg.objective) if loss_cfg.get("objective") else Classification()


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


def loss_terms(
    model: KWSNet, spikes: torch.Tensor, labels: torch.Tensor, w: LossWeights
) -> dict[str, torch.Tensor]:
    """Tutorial 4's loss stack on the last forward pass: the objective's task loss on the output
    ``spikes`` (a classifier's: cross entropy on the class spike counts), sign topology of the dense
    synapses, weight magnitude, firing-rate target (on the layers' traces)."""
    zero = spikes.new_zeros(())
    n_fr = len(w.fr_layers)
    return {
        w.objective.loss_name: w.objective.loss(spikes, labels),
        "topology": sum((topology_loss(s, w.lam_topology) for s in model.routed_modules().values()), zero)
        if w.lam_topology
        else zero,
        "weight_magnitude": weight_magnitude_loss(model, limit=w.limit),
        "firing_rate": firing_rate_target_mse_loss(
            [model.traces[n] for n in w.fr_layers], [w.target_fr] * n_fr, [w.lam_fr] * n_fr
        )
        if w.lam_fr and n_fr
        else zero,
    }


def epoch_batches(loader: DataLoader, seed: int, epoch: int, limit: int | None) -> list[list[int]]:
    """The sample indices of each training batch of ``epoch``: a permutation seeded by (seed, epoch) when
    the loader shuffles, so any batch of any epoch can be skipped to on resume."""
    n = len(loader.dataset)
    if isinstance(loader.sampler, RandomSampler):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    else:
        order = list(range(n))
    size = loader.batch_size
    batches = [order[i : i + size] for i in range(0, n, size)]
    if loader.drop_last and batches and len(batches[-1]) < size:
        batches.pop()
    return batches[:limit] if limit else batches


def batch_loader(loader: DataLoader, batches: list[list[int]]) -> DataLoader:
    # A generator of its own keeps the loader from drawing its worker seed from torch's global RNG.
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        generator=torch.Generator(),
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------
def train_step(model, x, y, optimizer, weights: LossWeights, grad_clip, generator, where: str):
    """One optimiser step; a NaN or infinite loss or gradient raises before the weights change."""
    optimizer.zero_grad()
    spikes = model(x, generator)
    terms = loss_terms(model, spikes, y, weights)
    loss = sum(terms.values())
    if not torch.isfinite(loss):
        bad = ", ".join(f"{k}={v.item()}" for k, v in terms.items() if not torch.isfinite(v))
        raise NonFiniteLossError(f"loss is {loss.item()} at {where} ({bad}); training stopped")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if not torch.isfinite(norm):
        raise NonFiniteLossError(f"gradient norm is {norm.item()} at {where}; training stopped")
    optimizer.step()
    return loss.detach(), terms, spikes.detach()


def accumulate(sums: dict, loss, terms, spikes, model: KWSNet, labels, objective) -> None:
    """Running sums of one epoch, each weighted by the batch size, and the objective's own."""
    n = len(labels)

    def add(key, value):
        sums[key] = sums.get(key, 0.0) + value

    add("samples", n)
    add("loss/total", loss.item() * n)
    for name, value in terms.items():
        add(f"loss/{name}", value.item() * n)
    objective.add_sums(sums, spikes, labels)
    for name, spk in model.traces.items():
        add(f"firing_rate/{name}", spk.detach().mean().item() * n)
    clamped = clamped_fraction(model.dense_synapses())
    if clamped is not None:
        add(CLAMP_KEY, clamped * n)


@torch.no_grad()
def evaluate(
    model: KWSNet,
    loader: DataLoader | None,
    *,
    device,
    seed: int,
    limit: int | None = None,
    objective=None,
):
    """The objective's score (by its ``metric`` key: ``acc`` for a classifier, the default) and task loss,
    the firing rate per layer and, for a classifier, the confusion matrix (rows: label) and the number of
    ``silent`` clips (no output spike: their class is a tie-break) over ``loader``; None for an empty
    split. ``limit`` batches take clips of every class in turn (:func:`stratified_batches`). Chip
    instances come from a generator seeded with ``seed``."""
    if loader is None or len(loader.dataset) == 0:
        return None
    objective = objective or Classification()
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    sums: dict = {"samples": 0, "loss": 0.0}
    rates = dict.fromkeys(model.layer_names, 0.0)
    for batch in stratified_batches(loader, limit):
        x, y = batch[0].to(device), batch[1].to(device)
        spikes = model(x, generator)
        sums["loss"] += objective.loss(spikes, y).item() * len(y)
        sums["samples"] += len(y)
        objective.add_sums(sums, spikes, y)
        for name, spk in model.traces.items():
            rates[name] += spk.mean().item() * len(y)
    n = sums["samples"]
    return {
        objective.metric: objective.score(sums),
        "loss": sums["loss"] / n,
        "samples": n,
        "firing_rate": {name: r / n for name, r in rates.items()},
        **objective.report(sums),
    }


def stratified_batches(loader: DataLoader, limit: int | None):
    """The batches of ``loader``, or with ``limit`` only that many, filled with the classes in turn: the
    first batches of a split in class order would hold one class, and a one-class evaluation reports any
    network that prefers that class (a silent one among them) as perfect."""
    if limit is None or limit >= len(loader):
        return loader
    if loader.dataset[0][1].is_floating_point():  # regression targets: no classes to take turns
        return itertools.islice(loader, limit)
    labels = torch.as_tensor([loader.dataset[i][1] for i in range(len(loader.dataset))])
    per_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    turns = [i for group in itertools.zip_longest(*per_class) for i in group if i is not None]
    subset = Subset(loader.dataset, turns[: limit * loader.batch_size])
    return DataLoader(subset, batch_size=loader.batch_size, shuffle=False)


def warn_if_silent(result: dict | None, what: str) -> None:
    """A warning when the output layer fired no spike on some clips of an evaluation: their predicted class
    is argmax's tie-break (the first class), not the network's decision."""
    if result and result.get("silent"):
        log.warning(
            "%s: the output layer fired no spike on %d of %d clips; their class is a tie-break towards the "
            "first class, not a decision",
            what,
            result["silent"],
            result["samples"],
        )


def epoch_record(state, val: dict, optimizer, model: KWSNet, hardness: float | None, objective) -> dict:
    """The finished epoch ``state.epoch`` as one flat record; keys are TensorBoard tags."""
    sums, n = state.sums, state.sums["samples"]
    return {
        "epoch": state.epoch + 1,
        **{k: v / n for k, v in sums.items() if k.startswith(("loss/", "firing_rate/"))},
        f"{objective.tag}/train": objective.score(sums),
        f"{objective.tag}/val": val[objective.metric],
        f"loss/val_{objective.loss_name}": val["loss"],
        **{f"firing_rate_val/{k}": v for k, v in val["firing_rate"].items()},
        **{f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups},
        **({"hardware/sign_violations": sign_violations(model)} if get_chip(model.chip).sign_blocks else {}),
        **({CLAMP_KEY: sums[CLAMP_KEY] / n} if CLAMP_KEY in sums else {}),
        **({"hardware/sign_hardness": hardness} if hardness is not None else {}),
        "time/epoch_s": sums["time_s"],
    }


def sign_violations(model: KWSNet) -> int:
    """Blocks of 5 in the programmed (quantised) dense and recurrent weights that mix signs."""
    with torch.no_grad():
        return sum(
            len(violating_blocks(routed_weight(m, programmed=True))) for m in model.routed_modules().values()
        )


# ---------------------------------------------------------------------------------------------------------
# State, checkpoints, signals
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the epoch in progress (non-zero only after a signal)
    sums: dict = field(default_factory=dict)  # running sums of the epoch in progress
    best_val_acc: float = -math.inf  # the objective's best validation score (accuracy, or R^2)
    best_epoch: int = 0
    # The whole checkpoint of the best epoch: last.ckpt carries it, so a resumed run writes the very same
    # best.ckpt into its own folder, whenever its best epoch was.
    best: dict | None = None
    bad_epochs: int = 0
    early_stopped: bool = False
    history: list[dict] = field(default_factory=list)

    def update_best(self, val_acc: float, patience: int | None) -> bool:
        """Track the best epoch (ties go to the later one, as in tutorial 4) and early stopping (patience
        counts epochs without a strict gain); True when this epoch is the new best."""
        self.bad_epochs = 0 if val_acc > self.best_val_acc else self.bad_epochs + 1
        self.early_stopped = patience is not None and self.bad_epochs >= patience
        if val_acc < self.best_val_acc:
            return False
        self.best_val_acc, self.best_epoch = val_acc, self.epoch
        return True

    def payload(self, model, optimizer, generator, config_yaml: str, data: Data, origin: dict) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "sums": dict(self.sums),
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "early_stopped": self.early_stopped,
            "history": self.history,
            "rng": capture_rng(generator),
            "config": config_yaml,
            "classes": data.classes,
            "n_channels": data.n_channels,
            "provenance": origin,
        }


# Settings a resumed run may change: where and how it runs, how long, and the learning rates (honoured from
# the resumed epoch on, and recorded). Any other change would make one history of two different runs.
RESUMABLE_CHANGES = (
    "ckpt_path",
    "experiment_name",
    "paths.",
    "logger.",
    "trainer.epochs",
    "trainer.early_stopping_patience",
    "trainer.device",
    "trainer.num_threads",
    "trainer.limit_eval_batches",
    "trainer.stop_on_divergence",
    "optim.lr_frontend",
    "optim.lr_core",
    "data.progress",
    "data.cache_dir",
    "data.data_parent.root",
    "data.dataloader_config.num_workers",
)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _derived(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` is an interpolation (e.g. ``optim.scheduler.total_epochs: ${trainer.epochs}``): it
    follows the settings it names, which are judged themselves."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf)


# Settings added since a checkpoint may have been written, with the value that reproduces what runs without
# them did: a checkpoint from before them resumes under that value.
ADDED_SETTINGS = {"loss.objective._target_": "nwtrain.objectives.Classification"}


def _default(key: str, value) -> bool:
    return key in ADDED_SETTINGS and ADDED_SETTINGS[key] == value


def resume_changes(ckpt: dict, path, cfg: DictConfig) -> dict[str, list]:
    """The settings ``cfg`` changes from the checkpoint's config, as ``{key: [old, new]}``; a change that
    resume cannot honour (anything but ``RESUMABLE_CHANGES`` and what follows from them) raises a
    ``ConfigError`` that lists them."""
    old = _flat(OmegaConf.to_container(OmegaConf.create(ckpt["config"]), resolve=True))
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    changes = {
        k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)
    }
    refused = [
        k
        for k, (was, now) in changes.items()
        if not k.startswith(RESUMABLE_CHANGES)
        and not _derived(cfg, k)
        and not (was is None and _default(k, now))
    ]
    if refused:
        raise ConfigError(
            "ckpt_path",
            f"{path} was trained with other settings, which a resumed run cannot honour "
            f"({'; '.join(f'{k}: {changes[k][0]!r} -> {changes[k][1]!r}' for k in refused)}); resume with "
            f"the experiment and overrides it was trained with (epochs, learning rates, devices and output "
            f"settings may change)",
        )
    return changes


def restore(ckpt: dict, path, model, optimizer, generator, data: Data, lrs: dict[str, float]) -> TrainState:
    """The training state of ``ckpt``; the optimiser's parameter groups take the configured learning rates
    ``lrs`` (by group name), which a resumed run may have changed."""
    if ckpt["classes"] != data.classes:
        raise CheckpointError(
            f"checkpoint {path} was trained on classes {ckpt['classes']}, the data has {data.classes}"
        )
    try:
        load_annealed_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {e}") from None
    for group in optimizer.param_groups:
        group["lr"] = lrs[group["name"]]
    restore_rng(ckpt["rng"], generator)
    best = ckpt.get("best")
    if best is None and ckpt.get("best_model") is not None:
        # Format 1 kept only the best weights: its best checkpoint is rebuilt as this one with them.
        best = {**{k: v for k, v in ckpt.items() if k != "best_model"}, "model": ckpt["best_model"]}
    return TrainState(
        epoch=ckpt["epoch"],
        batch=ckpt["batch"],
        sums=dict(ckpt["sums"]),
        best_val_acc=ckpt["best_val_acc"],
        best_epoch=ckpt["best_epoch"],
        best=best,
        bad_epochs=ckpt["bad_epochs"],
        early_stopped=ckpt["early_stopped"],
        history=list(ckpt["history"]),
    )


class StopOnSignal:
    """Defers the first SIGINT / SIGTERM to the next batch boundary (``signum`` is set), where the loop
    saves a checkpoint and stops; the previous handlers come back at once, so a second signal acts
    immediately. Signal handlers exist only in the main thread; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        self._restore()

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()


def _interrupted(signum: int, where: str, path: Path) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} received: training stopped {where}. Resumable checkpoint: {path}. "
        f"Resume with the same command plus ckpt_path={path}",
        signum,
    )


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict:
    """Train, checkpoint and test the configured network; returns the run summary (also in summary.json)."""
    started = time.perf_counter()
    validate_config(cfg)
    out_dir = check_output_dir(cfg.paths.output_dir)
    lock_run_folder(out_dir)
    remove_stale_temps(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    ckpt_dir.mkdir(exist_ok=True)
    ckpt_path = cfg.get("ckpt_path")
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    changes = resume_changes(ckpt, ckpt_path, cfg) if ckpt is not None else {}

    trainer = cfg.trainer
    seed = trainer.seed
    seed_everything(seed)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    device = resolve_device(cfg)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    origin = provenance()

    data = build_data(cfg.data)
    train_loader, val_loader = data.loaders["train"], data.loaders["val"]
    for split, loader in (("train", train_loader), ("val", val_loader)):
        if len(loader.dataset) == 0:
            raise DataError(
                f"data: the {split} split is empty; use more data, or a larger val_split for a "
                f"class-folder tree"
            )
    model = build_model(cfg.model, data.n_channels, len(data.classes), device)
    if cfg.get("init") and ckpt is None:  # a resumed run takes its weights from the checkpoint
        first = next(iter(batch_loader(train_loader, epoch_batches(train_loader, seed, 0, 1))))[0]
        instantiate(cfg.init)(model, first.to(device), generator=torch.Generator().manual_seed(seed))
    # Before the optimiser: SignAnnealing parametrises the weights, and the optimiser holds the originals.
    annealer = instantiate(cfg.variant.sign_annealing)(model) if cfg.variant.sign_annealing else None
    optimizer = instantiate(cfg.optim.optimizer)(model.param_groups(cfg.optim.lr_frontend, cfg.optim.lr_core))
    # Built before a checkpoint's optimiser state is loaded: it takes the configured rates as its base.
    schedule = instantiate(cfg.optim.scheduler)(optimizer) if cfg.optim.get("scheduler") else None
    mismatch = torch.Generator().manual_seed(seed)
    lrs = {"frontend": cfg.optim.lr_frontend, "core": cfg.optim.lr_core}
    state = TrainState() if ckpt is None else restore(ckpt, ckpt_path, model, optimizer, mismatch, data, lrs)
    weights = LossWeights.from_cfg(cfg.loss)
    objective = weights.objective
    divergence = DivergenceMonitor(trainer.epochs, model.layer_names[-1])

    def snapshot() -> dict:
        payload = state.payload(model, optimizer, mismatch, config_yaml, data, origin)
        return {**payload, "chip": cfg.model.chip, "variant": cfg.variant.name}

    def save(name: str) -> Path:
        return save_checkpoint(ckpt_dir / name, snapshot())

    def save_both() -> None:
        # best.ckpt first: a kill between the two writes leaves it ahead of last.ckpt, never behind, and a
        # run resumed from last.ckpt writes both again from last.ckpt alone.
        if state.best is not None:
            save_checkpoint(ckpt_dir / BEST, state.best)
        save(LAST)

    if ckpt is not None:
        for key in ("optim.lr_frontend", "optim.lr_core"):
            if key in changes:
                log.warning(
                    "%s changed on resume: %s -> %s from epoch %d on", key, *changes[key], state.epoch + 1
                )
        save_both()  # the resumed run's folder holds both checkpoints from its start, finished or not

    log.info(
        "run folder %s | %s on %s | classes %s | %d train, %d val samples, %d channels%s",
        out_dir,
        cfg.experiment_name,
        device,
        data.classes,
        len(train_loader.dataset),
        len(val_loader.dataset),
        data.n_channels,
        f" | resumed from {ckpt_path} at epoch {state.epoch + 1}" if ckpt is not None else "",
    )
    logger = cfg.logger
    with RunTracker(
        out_dir,
        state.history,
        epochs=trainer.epochs,
        tensorboard=logger.tensorboard,
        weight_histograms=logger.weight_histograms,
        progress=logger.progress,
        objective=objective,
    ) as tracker:
        with StopOnSignal() as stop:
            while state.epoch < trainer.epochs and not state.early_stopped:
                epoch_start = time.perf_counter() - state.sums.get("time_s", 0.0)
                batches = epoch_batches(train_loader, seed, state.epoch, trainer.limit_train_batches)
                if schedule is not None:
                    schedule.set_epoch(state.epoch)
                hardness = annealer.step(model, state.epoch) if annealer is not None else None
                tracker.start_epoch(state.epoch, len(batches), state.batch)
                model.train()
                for x, y in batch_loader(train_loader, batches[state.batch :]):
                    x, y = x.to(device), y.to(device)
                    where = f"epoch {state.epoch + 1} batch {state.batch + 1}"
                    loss, terms, spikes = train_step(
                        model, x, y, optimizer, weights, trainer.grad_clip, mismatch, where
                    )
                    accumulate(state.sums, loss, terms, spikes, model, y, objective)
                    state.batch += 1
                    tracker.batch_done(loss.item())
                    if stop.signum is not None:
                        break
                state.sums["time_s"] = time.perf_counter() - epoch_start
                if state.batch < len(batches):  # a signal cut the epoch short: save its progress
                    path = save(LAST)
                    raise _interrupted(
                        stop.signum, f"in epoch {state.epoch + 1} after {state.batch} batches", path
                    )

                val = evaluate(
                    model,
                    val_loader,
                    device=device,
                    seed=seed + EVAL_SEED_OFFSETS["val"],
                    limit=trainer.limit_eval_batches,
                    objective=objective,
                )
                record = epoch_record(state, val, optimizer, model, hardness, objective)
                state.history.append(record)
                state.epoch, state.batch, state.sums = state.epoch + 1, 0, {}
                if state.update_best(val[objective.metric], trainer.early_stopping_patience):
                    state.best = None  # the snapshot holds no older best of its own
                    state.best = copy.deepcopy(snapshot())
                save_both()
                tracker.epoch_done(record, model)
                diverged = divergence.update(state.history)
                for sign in divergence.new:
                    log.warning(
                        "training looks diverged: %s; lower optim.lr_core or model.input_gain "
                        "(trainer.stop_on_divergence=true stops such a run)",
                        sign,
                    )
                if diverged and trainer.stop_on_divergence:
                    raise DivergenceError(
                        f"training diverged, stopped after epoch {state.epoch} "
                        f"(trainer.stop_on_divergence): {'; '.join(diverged.values())}; its checkpoints "
                        f"are in {ckpt_dir}"
                    )
                if state.early_stopped:
                    log.info("early stopping: no val %s gain in %d epochs", objective.tag, state.bad_epochs)
                if stop.signum is not None:
                    raise _interrupted(stop.signum, f"at the end of epoch {state.epoch}", ckpt_dir / LAST)

        model.load_state_dict(state.best["model"])
        test = evaluate(
            model,
            data.loaders.get("test"),
            device=device,
            seed=seed + EVAL_SEED_OFFSETS["test"],
            limit=trainer.limit_eval_batches,
            objective=objective,
        )
        if test is None:
            log.info(
                "no test split (data.dataloader_config.test_split is 0): test %s not measured", objective.tag
            )
        warn_if_silent(test, "test")
        metric, tag = objective.metric, objective.tag
        tracker.final(
            {f"{tag}/test": test and test[metric], f"{tag}/best_val": state.best_val_acc},
            _flat({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in HPARAM_GROUPS}),
        )

    summary = {
        "status": "early_stopped" if state.early_stopped else "completed",
        "experiment": cfg.experiment_name,
        "chip": cfg.model.chip,
        "variant": cfg.variant.name,
        "placement": model.placement.to_json(),
        "metric": metric,
        f"best_val_{metric}": state.best_val_acc,
        "best_epoch": state.best_epoch,
        f"last_val_{metric}": state.history[-1][f"{tag}/val"],
        f"test_{metric}": test and test[metric],
        **({"test_confusion": test and test["confusion"]} if metric == "acc" else {}),
        "epochs_completed": state.epoch,
        "train_time_s": sum(r["time/epoch_s"] for r in state.history),
        "wall_time_s": time.perf_counter() - started,
        "seed": seed,
        "resumed": {"from": str(ckpt_path), "epoch": ckpt["epoch"], "changed": changes} if ckpt else None,
        "classes": data.classes,
        "run_dir": str(out_dir),
        "checkpoints": {"best": str(ckpt_dir / BEST), "last": str(ckpt_dir / LAST)},
        "provenance": origin,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    if logger.plots:
        write_plots(out_dir / "plots", state, model, data, device, seed, cfg.experiment_name, objective)
    print_summary(summary)
    return summary


def write_plots(
    folder: Path, state: TrainState, model: KWSNet, data: Data, device, seed: int, title: str, objective
) -> None:
    """Training curves, the spike raster of the first validation sample, the programmed weight signs and,
    for a rate regression, that sample's target and produced rates."""
    folder.mkdir(exist_ok=True)
    plots.plot_training_curves(
        state.history,
        folder / "training_curves.png",
        title,
        state.best_epoch,
        objective.tag,
        objective.loss_name,
    )
    x, y = next(iter(data.loaders["val"]))[:2]
    with torch.no_grad():
        out = model(x[:1].to(device), torch.Generator().manual_seed(seed + EVAL_SEED_OFFSETS["val"]))
        spikes = {name: spk[0].cpu().numpy() for name, spk in model.traces.items()}
        programmed = {
            name: routed_weight(m, programmed=True).cpu().numpy()
            for name, m in model.routed_modules().items()
        }
    if isinstance(objective, Classification):
        pred = spike_counts(out).argmax(dim=1).item()
        what = f"{data.classes[y[0].item()]}, predicted {data.classes[pred]}"
    else:
        what = "rate regression"
        plots.plot_rates(
            objective.rates(out)[0].cpu().numpy(),
            y[0].cpu().numpy(),
            model.dt,
            folder / "rates.png",
            f"{title}: target against produced rate, one validation sample",
            data.classes,
        )
    plots.plot_spike_raster(
        spikes,
        model.dt,
        folder / "spike_raster.png",
        f"{title}: one validation sample ({what})",
        classes=data.classes,
        population=model.out_population,
    )
    block = SIGN_BLOCK_SIZE if all(s.SIGN_BLOCKS for s in model.dense_synapses()) else None
    plots.plot_weight_signs(
        programmed, folder / "weight_signs.png", f"{title}: programmed weight signs", block=block
    )
