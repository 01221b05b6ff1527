"""The training loop: ``fit(run)`` trains a built network epoch by epoch, with checkpoints, logs and stops.

A ``Run`` holds everything the loop touches, built from a config by ``nwtrain.runs.setup``; this module
takes typed values and no config. Determinism: the order of the training batches is a function of (seed,
epoch) alone and every random stream is in each checkpoint, so a run resumed from any checkpoint, even one
written mid-epoch on a signal, replays exactly the batches and draws the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from nwtrain.chips import get_chip
from nwtrain.core.layers import routed_weight
from nwtrain.core.topology import violating_blocks
from nwtrain.errors import DivergenceError, NonFiniteLossError, TrainingInterrupted
from nwtrain.models import KWSNet
from nwtrain.training import plots
from nwtrain.training.annealing import SignAnnealing
from nwtrain.training.averaging import WeightAverage
from nwtrain.training.checkpoint import atomic_write_json, on_cpu, save_checkpoint
from nwtrain.training.divergence import CLAMP_KEY, DivergenceMonitor, clamped_fraction
from nwtrain.training.evaluation import EVAL_SEED_OFFSETS, evaluate, warn_if_silent
from nwtrain.training.losses import firing_rate_target_mse_loss, topology_loss, weight_magnitude_loss
from nwtrain.training.objectives import Classification
from nwtrain.training.schedule import CosineSchedule
from nwtrain.training.state import BEST, LAST, TrainState
from nwtrain.training.tracking import RunTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossWeights:
    """The ``loss`` group as plain numbers (read once, not per batch)."""

    lam_topology: float
    limit: float
    lam_fr: float
    target_fr: float
    fr_layers: tuple[str, ...]
    objective: object = field(
        default_factory=Classification
    )  # nwtrain.training.objectives: the task loss and score


@dataclass(frozen=True)
class Limits:
    """How long and how hard the loop trains (the ``trainer`` group as typed values)."""

    epochs: int
    grad_clip: float | None = None
    early_stopping_patience: int | None = None
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    stop_on_divergence: bool = False


@dataclass
class Run:
    """A training run, built and ready to fit: the network, its optimiser and schedules, its data, its
    state (fresh or restored) and where its outputs go. ``checkpoint_extra`` is stored in every checkpoint
    next to the state (the resolved config, provenance, chip and variant)."""

    model: KWSNet
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader
    device: torch.device
    seed: int
    limits: Limits
    weights: LossWeights
    state: TrainState
    tracker: RunTracker
    ckpt_dir: Path
    checkpoint_extra: dict
    schedule: CosineSchedule | None = None
    annealer: SignAnnealing | None = None
    average: WeightAverage | None = None  # trainer.ema_decay: scored and saved in place of the weights
    mismatch: torch.Generator = field(default_factory=torch.Generator)
    divergence: DivergenceMonitor | None = None
    # What finish() reports and tests on.
    test_loader: DataLoader | None = None
    classes: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # the summary's fixed entries (experiment, chip, seed, ...)
    hparams: dict = field(default_factory=dict)  # the settings TensorBoard's HParams dashboard compares
    plots: bool = True
    started: float = field(default_factory=time.perf_counter)

    @property
    def objective(self):
        return self.weights.objective


def fit(run: Run) -> None:
    """Train ``run`` from its state to ``limits.epochs`` (or early stopping); a checkpoint pair after every
    epoch. A first SIGINT / SIGTERM stops at the next batch with a resumable checkpoint."""
    state, model = run.state, run.model
    with StopOnSignal() as stop:
        while state.epoch < run.limits.epochs and not state.early_stopped:
            # Schedule: the learning rate and the sign hardness of this epoch.
            if run.schedule is not None:
                run.schedule.set_epoch(state.epoch)
            hardness = run.annealer.step(model, state.epoch) if run.annealer is not None else None
            # Batches: resume mid-epoch where a signal stopped it.
            batches = epoch_batches(run.train_loader, run.seed, state.epoch, run.limits.limit_train_batches)
            train_epoch(run, batches, stop)
            if state.batch < len(batches):
                path = save_checkpoint(run.ckpt_dir / LAST, snapshot(run))
                raise interrupted(
                    stop.signum, f"in epoch {state.epoch + 1} after {state.batch} batches", path
                )
            # Validate, and keep the best epoch.
            val = validate(run)
            record = epoch_record(state, val, run.optimizer, model, hardness, run.objective)
            state.history.append(record)
            state.epoch, state.batch, state.sums = state.epoch + 1, 0, {}
            if state.update_best(val[run.objective.metric], run.limits.early_stopping_patience):
                state.best = None  # the snapshot holds no older best of its own
                state.best = snapshot(run)
            # Checkpoint and log.
            save_both(run)
            run.tracker.epoch_done(record, model)
            # Stop: divergence, early stopping, a signal at the epoch's end.
            check_divergence(run)
            if state.early_stopped:
                log.info("early stopping: no val %s gain in %d epochs", run.objective.tag, state.bad_epochs)
            if stop.signum is not None:
                raise interrupted(stop.signum, f"at the end of epoch {state.epoch}", run.ckpt_dir / LAST)


def finish(run: Run) -> dict:
    """Test the best epoch, write summary.json and the plots; returns the summary."""
    state, objective = run.state, run.objective
    run.model.load_state_dict(state.best["model"])
    test = evaluate(
        run.model,
        run.test_loader,
        device=run.device,
        seed=run.seed + EVAL_SEED_OFFSETS["test"],
        limit=run.limits.limit_eval_batches,
        objective=objective,
    )
    if test is None:
        log.info(
            "no test split (data.dataloader_config.test_split is 0): test %s not measured", objective.tag
        )
    warn_if_silent(test, "test")
    metric, tag = objective.metric, objective.tag
    run.tracker.final(
        {f"{tag}/test": test and test[metric], f"{tag}/best_val": state.best_val_acc}, run.hparams
    )
    summary = {
        "status": "early_stopped" if state.early_stopped else "completed",
        **run.report,
        "placement": run.model.placement.to_json(),
        "metric": metric,
        f"best_val_{metric}": state.best_val_acc,
        "best_epoch": state.best_epoch,
        f"last_val_{metric}": state.history[-1][f"{tag}/val"],
        f"test_{metric}": test and test[metric],
        **({"test_confusion": test and test["confusion"]} if metric == "acc" else {}),
        "epochs_completed": state.epoch,
        "train_time_s": sum(r["time/epoch_s"] for r in state.history),
        "wall_time_s": time.perf_counter() - run.started,
        "classes": run.classes,
        "run_dir": str(run.ckpt_dir.parent),
        "checkpoints": {"best": str(run.ckpt_dir / BEST), "last": str(run.ckpt_dir / LAST)},
    }
    atomic_write_json(run.ckpt_dir.parent / "summary.json", summary)
    if run.plots:
        plots.write_run_plots(
            run.ckpt_dir.parent / "plots",
            state.history,
            state.best_epoch,
            run.model,
            run.val_loader,
            run.classes,
            run.device,
            run.seed + EVAL_SEED_OFFSETS["val"],
            run.report["experiment"],
            objective,
        )
    return summary


def train_epoch(run: Run, batches: list[list[int]], stop: StopOnSignal) -> None:
    """The batches of the epoch in progress from ``state.batch`` on, until they end or a signal comes."""
    state = run.state
    epoch_start = time.perf_counter() - state.sums.get("time_s", 0.0)
    run.tracker.start_epoch(state.epoch, len(batches), state.batch)
    run.model.train()
    for x, y in batch_loader(run.train_loader, batches[state.batch :]):
        x, y = x.to(run.device), y.to(run.device)
        where = f"epoch {state.epoch + 1} batch {state.batch + 1}"
        loss, terms, spikes = train_step(
            run.model, x, y, run.optimizer, run.weights, run.limits.grad_clip, run.mismatch, where
        )
        if run.average is not None:
            run.average.update(run.model)
        accumulate(state.sums, loss, terms, spikes, run.model, y, run.objective)
        state.batch += 1
        run.tracker.batch_done(loss.item())
        if stop.signum is not None:
            break
    state.sums["time_s"] = time.perf_counter() - epoch_start


def validate(run: Run) -> dict:
    with scored(run) as model:
        return evaluate(
            model,
            run.val_loader,
            device=run.device,
            seed=run.seed + EVAL_SEED_OFFSETS["val"],
            limit=run.limits.limit_eval_batches,
            objective=run.objective,
        )


def scored(run: Run):
    """The run's model with the weights it is scored and saved with: the average of ``trainer.ema_decay``,
    or its own."""
    return run.average.applied(run.model) if run.average is not None else nullcontext(run.model)


def snapshot(run: Run) -> dict:
    """The checkpoint of the run as it stands: a copy, its tensors on the CPU whatever the run's device (a
    best epoch kept in memory holds no GPU memory, and the files load anywhere). With a weight average,
    ``model`` is the average (what was scored, and what eval, export and predict load) and
    ``trained_model`` the weights training goes on from."""
    payload = on_cpu({**run.state.payload(run.model, run.optimizer, run.mismatch), **run.checkpoint_extra})
    if run.average is None:
        return payload
    with scored(run) as model:
        return {**payload, "trained_model": payload["model"], "model": on_cpu(model.state_dict())}


def save_both(run: Run) -> None:
    """best.ckpt, then last.ckpt: a kill between the two writes leaves best ahead of last, never behind, and
    a run resumed from last.ckpt writes both again from last.ckpt alone."""
    if run.state.best is not None:
        save_checkpoint(run.ckpt_dir / BEST, run.state.best)
    save_checkpoint(run.ckpt_dir / LAST, snapshot(run))


def check_divergence(run: Run) -> None:
    """Warn about each new sign of divergence; with ``stop_on_divergence`` a diverged run stops."""
    if run.divergence is None:
        return
    diverged = run.divergence.update(run.state.history)
    for sign in run.divergence.new:
        log.warning(
            "training looks diverged: %s; lower optim.lr_core or model.input_gain "
            "(trainer.stop_on_divergence=true stops such a run)",
            sign,
        )
    if diverged and run.limits.stop_on_divergence:
        raise DivergenceError(
            f"training diverged, stopped after epoch {run.state.epoch} (trainer.stop_on_divergence): "
            f"{'; '.join(diverged.values())}; its checkpoints are in {run.ckpt_dir}"
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


def interrupted(signum: int, where: str, path: Path) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} received: training stopped {where}. Resumable checkpoint: {path}. "
        f"Resume with the same command plus ckpt_path={path}",
        signum,
    )
