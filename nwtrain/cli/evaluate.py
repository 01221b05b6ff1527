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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from rich import get_console
from rich.table import Table

from nwtrain.chips import ChipSpec, DesignRuleError, get_chip
from nwtrain.config import check_output_dir
from nwtrain.deploy.export import deploy
from nwtrain.deploy.mismatch import ChipInstance, Mismatch, instance_seed, yield_stats
from nwtrain.errors import ConfigError, DataError
from nwtrain.runs import SPLITS, load_model, load_run, require_classifier
from nwtrain.training import plots
from nwtrain.training.checkpoint import atomic_write_json
from nwtrain.training.evaluation import EVAL_SEED_OFFSETS, evaluate, warn_if_silent
from nwtrain.training.tracking import TENSORBOARD_DIR, pct

log = logging.getLogger(__name__)


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

    model, ideal, chips, projection = eval_models(run, spec, bool(cfg.project))
    results = {}
    for split in splits:
        loader = run.data.loaders[split]
        nominal = evaluate(
            model, loader, device=run.device, seed=seed + EVAL_SEED_OFFSETS[split], limit=limit
        )
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
            nominal["mismatch"] = chip_population(chips, spec, loader, run.device, seed, limit, ideal_acc)
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
        "mismatch": asdict(spec),
        "splits": results,
    }
    atomic_write_json(out_dir / "eval.json", report)
    if spec.instances:
        _write_yield_outputs(out_dir, report)
    _print(report)
    log.info("results written to %s", out_dir)
    return results[next(iter(results))]


def eval_models(run, spec: Mismatch, project: bool):
    """The checkpoint's model; the ideal chip (no mismatch), which sets the relative yield target: the
    model itself unless the model simulates mismatch (then its nominal accuracy is one mismatch draw per
    batch, as in training); the model with ``spec``'s mismatch (None without instances); and, with
    ``project``, all of them programmed as ``nwtrain-export project=true`` would, with the projection's
    report."""
    model = load_model(run)
    trained_with_mismatch = bool(run.config.model.stddev) or bool(run.config.model.ileak_mismatch)
    ideal, chips = model, None
    if spec.instances:
        chips = load_model(run, stddev=spec.stddev, ileak_mismatch=spec.ileak)
        if trained_with_mismatch:
            ideal = load_model(run, stddev=0.0, ileak_mismatch=False)
    projection = None
    if project:
        projection = deploy(model, project_weights=True).projection
        for other in (ideal, chips):
            if other is not None and other is not model:
                deploy(other, project_weights=True)
    return model, ideal, chips, projection


def chip_population(chips, spec: Mismatch, loader, device, seed: int, limit, ideal_acc: float) -> dict:
    """The accuracy of ``spec.instances`` chips of ``chips`` (each one fixed draw of its mismatch) and their
    yield statistics against the target ``spec`` sets from ``ideal_acc``."""
    instances = [ChipInstance(chips, instance_seed(seed, i)) for i in range(spec.instances)]
    accs = [evaluate(c, loader, device=device, seed=0, limit=limit)["acc"] for c in instances]
    return {"ideal_acc": ideal_acc, **yield_stats(accs, spec.target(ideal_acc))}


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


def _print(report: dict) -> None:
    n = report["mismatch"]["instances"]
    table = Table(title=f"nwtrain-eval: {report['ckpt_path']} (epoch {report['epoch']})")
    columns = ["split", "samples", "accuracy", "cross entropy"]
    if n:
        columns += [f"{n} chips: mean ± std", "5th pct", "target", "yield"]
    for column in columns:
        table.add_column(column)
    for split, r in report["splits"].items():
        row = [split, str(r["samples"]), pct(r["acc"]), f"{r['loss']:.4f}"]
        if n:
            mc = r["mismatch"]
            row += [
                f"{pct(mc['mean'])} ± {pct(mc['std'])}",
                pct(mc["p5"]),
                pct(mc["target_acc"]),
                pct(mc["yield"]),
            ]
        table.add_row(*row)
    get_console().print(table)
