"""``nwtrain-eval``: accuracy of a checkpoint on any data config, nominal and over Monte-Carlo chip instances.

The model is rebuilt from the resolved config stored in the checkpoint. Without a ``data`` choice it is
evaluated on the data it was trained on; ``data=<option>`` (with its fields) swaps in other data, resolved
against the training config (so ``sim_time_s`` still follows the model's ``dt``). With the defaults
(``split=test``, the training seed) the nominal accuracy is the run's own test accuracy.

``mismatch.instances=N`` adds N simulated chips: chip ``i`` is one draw of synaptic offsets (``mismatch.
stddev``, default the chip's empirical value) and per-neuron leak factors (``mismatch.ileak``) on the
synapses and layers the model's mismatch option covers, fixed for every clip of every split and seeded by
(``seed``, ``i``) alone. The draw applies whatever the model was trained with: fabricated chips have
mismatch whether or not training simulated it. Per split: accuracy of each chip, mean, std, 5th percentile
and the yield, the fraction of chips at or above the target accuracy (``mismatch.target_acc``, or
``mismatch.target_fraction`` x the accuracy of the ideal chip, the model without mismatch); eval.json, a
histogram per split and TensorBoard entries in the eval folder. ``project=true`` evaluates the weights as
``nwtrain-export project=true`` programs them (chip grid, sign blocks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich import get_console
from rich.table import Table
from torch import nn

from . import plots
from .checkpoint import atomic_write_json, load_checkpoint
from .chips import ChipSpec, DesignRuleError, get_chip
from .errors import CheckpointError, ConfigError, DataError
from .export import deploy
from .models import KWSNet
from .optim import load_annealed_state
from .train import (
    EVAL_SEED_OFFSETS,
    Data,
    build_data,
    build_model,
    evaluate,
    require_classifier,
    warn_if_silent,
)
from .validation import check_output_dir, resolve_device, validate_data_config

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Chip instance i draws its mismatch from seed + MISMATCH_SEED_OFFSET + i * CHIP_SEED_STRIDE: the same chip
# on every split, and streams apart from training's and the nominal evaluation's.
MISMATCH_SEED_OFFSET = 4_000_037
CHIP_SEED_STRIDE = 7919
TENSORBOARD_DIR = "tensorboard"
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
# A checkpoint, its data and its model
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    ckpt_path: str
    ckpt: dict
    config: DictConfig  # the training config, with ``data`` (and ``paths``) swapped in when asked for
    data: Data
    device: torch.device


def load_run(cfg: DictConfig, overrides: Sequence[str] = (), device: torch.device | None = None) -> Run:
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
    return Run(str(cfg.ckpt_path), ckpt, run_cfg, data, device if device is not None else resolve_device(cfg))


def load_model(run: Run, **model_overrides) -> KWSNet:
    """The checkpoint's model, built with ``model_overrides`` (e.g. its mismatch options) on top of its
    config; the weights are the checkpoint's. A model that does not fit its chip is measured all the same
    (with a warning); exporting it is refused (``nwtrain.export.deploy``)."""
    model_cfg = OmegaConf.merge(run.config.model, {"fit_chip": False}, model_overrides)
    model = build_model(model_cfg, run.data.n_channels, len(run.data.classes), run.device)
    try:
        load_annealed_state(model, run.ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {run.ckpt_path} does not fit its own model config: {e}") from None
    return model


# ---------------------------------------------------------------------------------------------------------
# Monte-Carlo chip instances
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    """The chip population: ``instances`` chips with synaptic offsets of ``stddev`` and, if ``ileak``,
    log-normal leak factors; chips are accepted at ``target_acc`` (None: ``target_fraction`` x the
    accuracy of the ideal, mismatch-free chip)."""

    instances: int
    stddev: float
    ileak: bool
    target_acc: float | None
    target_fraction: float

    def target(self, ideal_acc: float) -> float:
        return self.target_acc if self.target_acc is not None else self.target_fraction * ideal_acc


def mismatch_spec(cfg: DictConfig, chip: ChipSpec) -> Mismatch:
    """``cfg.mismatch`` checked against the checkpoint's chip (whose empirical offset is the default)."""
    m = cfg.mismatch
    instances = m.instances
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
        raise ConfigError("mismatch.instances", f"must be an integer >= 0, got {instances!r}")
    stddev = chip.syn_offset_stddev if m.stddev is None else m.stddev
    if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) or not stddev >= 0:
        raise ConfigError("mismatch.stddev", f"must be a number >= 0 or null, got {m.stddev!r}")
    try:
        chip.check(stddev=stddev)
    except DesignRuleError as e:
        raise ConfigError("mismatch.stddev", f"{stddev}: {e.reason}") from None
    ileak = bool(m.ileak) and chip.leak_mismatch
    if instances and not chip.mismatch:
        raise ConfigError("mismatch.instances", f"{chip.label} has no mismatch model: all chips are one")
    for key, low_open in (("target_acc", False), ("target_fraction", True)):
        value = m[key]
        if value is None and key == "target_acc":
            continue
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or not ((value > 0 if low_open else value >= 0) and value <= 1):
            bounds = "(0, 1]" if low_open else "[0, 1]"
            raise ConfigError(f"mismatch.{key}", f"must be a number in {bounds}, got {value!r}")
    target_acc = None if m.target_acc is None else float(m.target_acc)
    return Mismatch(int(instances), float(stddev), ileak, target_acc, float(m.target_fraction))


class ChipInstance(nn.Module):
    """``model`` on one chip: its mismatch is drawn from a generator re-seeded with ``seed`` at every
    forward, so every batch sees the same chip (the draws' shapes do not depend on the batch)."""

    def __init__(self, model: KWSNet, seed: int):
        super().__init__()
        self.model = model
        self.seed = int(seed)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model(x, torch.Generator().manual_seed(self.seed))

    @property
    def n_classes(self) -> int:
        return self.model.n_classes

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.model.layer_names

    @property
    def traces(self) -> dict[str, torch.Tensor]:
        return self.model.traces


def instance_seed(seed: int, i: int) -> int:
    return seed + MISMATCH_SEED_OFFSET + i * CHIP_SEED_STRIDE


def yield_stats(accs: list[float], target: float) -> dict:
    """Mean, std (sample, ddof 1), 5th percentile (linear interpolation), extremes and the yield: the
    fraction of instances whose accuracy reaches ``target``."""
    a = np.asarray(accs, dtype=np.float64)
    return {
        "instances": len(a),
        "accs": a.tolist(),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "p5": float(np.percentile(a, 5)),
        "min": float(a.min()),
        "max": float(a.max()),
        "target_acc": target,
        # Accuracies are k / n; the tolerance keeps a target computed as a product from rounding them out.
        "yield": float((a >= target - 1e-9).mean()),
    }


# ---------------------------------------------------------------------------------------------------------
# The runner behind `nwtrain-eval`
# ---------------------------------------------------------------------------------------------------------
def evaluate_checkpoint(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict:
    """Evaluate ``cfg.ckpt_path``; writes eval.json (and with ``mismatch.instances`` a histogram per split
    and TensorBoard entries) to ``paths.output_dir`` and returns the first split's result. ``overrides``:
    the command line's, which decide the data settings (``load_run``)."""
    out_dir = check_output_dir(cfg.paths.output_dir)
    run = load_run(cfg, overrides)
    require_classifier(run.config, cfg.ckpt_path, "nwtrain-eval")
    splits = list(SPLITS) if cfg.split == "all" else [cfg.split]
    if not set(splits) <= set(SPLITS):
        raise DataError(f"split: {cfg.split!r} is not one of {', '.join(SPLITS)}, all")
    chip = run.config.model.chip
    spec = mismatch_spec(cfg, get_chip(chip))
    seed = run.config.trainer.seed if cfg.seed is None else cfg.seed
    limit = cfg.trainer.limit_eval_batches

    model = load_model(run)
    # The ideal chip (no mismatch) sets the relative yield target; it is the model itself unless the model
    # simulates mismatch (then its nominal accuracy is one mismatch draw per batch, as in training).
    trained_with_mismatch = bool(run.config.model.stddev) or bool(run.config.model.ileak_mismatch)
    ideal, chips = model, None
    if spec.instances:
        chips = load_model(run, stddev=spec.stddev, ileak_mismatch=spec.ileak)
        if trained_with_mismatch:
            ideal = load_model(run, stddev=0.0, ileak_mismatch=False)
    projection = None
    if cfg.project:
        projection = deploy(model, project_weights=True).projection
        for other in (ideal, chips):
            if other is not None and other is not model:
                deploy(other, project_weights=True)

    results = {}
    for split in splits:
        loader = run.data.loaders[split]
        nominal_seed = seed + EVAL_SEED_OFFSETS[split]
        nominal = evaluate(model, loader, device=run.device, seed=nominal_seed, limit=limit)
        if nominal is None:
            log.info("split %s is empty: skipped", split)
            continue
        warn_if_silent(nominal, split)
        if chips is not None:
            ideal_acc = (
                nominal["acc"]
                if ideal is model
                else evaluate(ideal, loader, device=run.device, seed=0, limit=limit)["acc"]
            )
            instances = [ChipInstance(chips, instance_seed(seed, i)) for i in range(spec.instances)]
            accs = [evaluate(c, loader, device=run.device, seed=0, limit=limit)["acc"] for c in instances]
            nominal["mismatch"] = {"ideal_acc": ideal_acc, **yield_stats(accs, spec.target(ideal_acc))}
        results[split] = nominal
    if not results:
        raise DataError(f"split: every requested split ({', '.join(splits)}) of the data is empty")
    report = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "epoch": run.ckpt["epoch"],
        "experiment": run.config.get("experiment_name"),
        "chip": chip,
        "classes": run.data.classes,
        "seed": seed,
        "project": bool(cfg.project),
        "projection": projection,
        "mismatch": {
            "instances": spec.instances,
            "stddev": spec.stddev,
            "ileak": spec.ileak,
            "target_acc": spec.target_acc,
            "target_fraction": spec.target_fraction,
        },
        "splits": results,
    }
    atomic_write_json(out_dir / "eval.json", report)
    if spec.instances:
        _write_yield_outputs(out_dir, report)
    _print(report)
    log.info("results written to %s", out_dir)
    return results[next(iter(results))]


def _write_yield_outputs(out_dir: Path, report: dict) -> None:
    """A histogram PNG per split and TensorBoard scalars and histograms."""
    from torch.utils.tensorboard import SummaryWriter  # slow import, only when asked for

    name = report["experiment"] or Path(report["ckpt_path"]).name
    title = f"{name}{' (projected)' if report['project'] else ''}: {report['mismatch']['instances']} chips"
    with SummaryWriter(str(out_dir / TENSORBOARD_DIR)) as writer:
        for split, r in report["splits"].items():
            mc = r["mismatch"]
            png = out_dir / f"mismatch_{split}.png"
            plots.plot_accuracy_histogram(
                mc["accs"], mc["ideal_acc"], mc["target_acc"], png, f"{title}, {split}"
            )
            writer.add_histogram(f"mismatch/{split}/accuracy", np.asarray(mc["accs"]), 0)
            for i, acc in enumerate(mc["accs"]):
                writer.add_scalar(f"mismatch/{split}/instance_accuracy", acc, i)
            for key in ("mean", "std", "p5", "yield", "target_acc", "ideal_acc"):
                writer.add_scalar(f"mismatch/{split}/{key}", mc[key], 0)
            writer.add_scalar(f"accuracy/{split}", r["acc"], 0)


def _pct(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "-"


def _print(report: dict) -> None:
    n = report["mismatch"]["instances"]
    table = Table(title=f"nwtrain-eval: {report['ckpt_path']} (epoch {report['epoch']})")
    columns = ["split", "samples", "accuracy", "cross entropy"]
    if n:
        columns += [f"{n} chips: mean ± std", "5th pct", "target", "yield"]
    for column in columns:
        table.add_column(column)
    for split, r in report["splits"].items():
        row = [split, str(r["samples"]), _pct(r["acc"]), f"{r['loss']:.4f}"]
        if n:
            mc = r["mismatch"]
            row += [
                f"{_pct(mc['mean'])} ± {_pct(mc['std'])}",
                _pct(mc["p5"]),
                _pct(mc["target_acc"]),
                _pct(mc["yield"]),
            ]
        table.add_row(*row)
    get_console().print(table)
