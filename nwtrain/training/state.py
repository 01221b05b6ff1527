"""The state of a training run and its checkpoints: what a checkpoint holds, how a run resumes from one, and
which settings a resumed run may change."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from nwtrain.errors import CheckpointError, ConfigError
from nwtrain.training.annealing import load_annealed_state
from nwtrain.training.averaging import WeightAverage
from nwtrain.training.checkpoint import capture_rng, restore_rng

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.ckpt", "best.ckpt"


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

    def payload(self, model, optimizer, generator) -> dict:
        """The state as a checkpoint holds it (the runner adds the config, classes and provenance)."""
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


def flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _derived(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` is an interpolation (e.g. ``optim.scheduler.total_epochs: ${trainer.epochs}``): it
    follows the settings it names, which are judged themselves."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf)


# Settings added since a checkpoint may have been written, with the value that reproduces what runs without
# them did: a checkpoint from before them resumes under that value.
ADDED_SETTINGS = {
    "loss.objective._target_": "nwtrain.training.objectives.Classification",
    "quant.name": "chip",
    "trainer.hard_sign_epochs": 0,
}


def _default(key: str, value) -> bool:
    return key in ADDED_SETTINGS and ADDED_SETTINGS[key] == value


def resume_changes(ckpt: dict, path, cfg: DictConfig) -> dict[str, list]:
    """The settings ``cfg`` changes from the checkpoint's config, as ``{key: [old, new]}``; a change that
    resume cannot honour (anything but ``RESUMABLE_CHANGES`` and what follows from them) raises a
    ``ConfigError`` that lists them."""
    old = flat(OmegaConf.to_container(OmegaConf.create(ckpt["config"]), resolve=True))
    new = flat(OmegaConf.to_container(cfg, resolve=True))
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


def restore(
    ckpt: dict,
    path,
    model,
    optimizer,
    generator,
    classes: list[str],
    lrs: dict[str, float],
    average: WeightAverage | None = None,
) -> TrainState:
    """The training state of ``ckpt``; the optimiser's parameter groups take the configured learning rates
    ``lrs`` (by group name), which a resumed run may have changed. With a weight ``average``, the model
    takes the trained weights and the average the checkpoint's ``model``."""
    if ckpt["classes"] != classes:
        raise CheckpointError(
            f"checkpoint {path} was trained on classes {ckpt['classes']}, the data has {classes}"
        )
    try:
        load_annealed_state(model, ckpt.get("trained_model", ckpt["model"]))
        if average is not None:
            average.load(ckpt["model"])
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
