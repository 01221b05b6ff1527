"""``nwtrain-eval``: accuracy of a checkpoint on any data config, over one or more simulated chips.

The model is rebuilt from the resolved config stored in the checkpoint. Without a ``data`` choice it is
evaluated on the data it was trained on; ``data=<option>`` (with its fields) swaps in other data, resolved
against the training config (so ``sim_time_s`` still follows the model's ``dt``). With the defaults
(``split=test``, one chip instance, the training seed) it reproduces the run's test accuracy exactly.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich import get_console
from rich.table import Table

from .checkpoint import atomic_write_json, load_checkpoint
from .errors import CheckpointError, DataError
from .train import EVAL_SEED_OFFSETS, build_data, build_model, evaluate
from .validation import check_output_dir, resolve_device, validate_data_config

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Successive chip instances of one split draw from seeds this far apart.
CHIP_SEED_STRIDE = 7919


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt_path``; writes eval.json to ``paths.output_dir`` and returns the first split's
    result (``acc`` is the mean over chip instances)."""
    out_dir = check_output_dir(cfg.paths.output_dir)
    ckpt = load_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(ckpt["config"])
    if cfg.get("data") is not None:
        run_cfg = OmegaConf.merge(run_cfg, OmegaConf.masked_copy(cfg, ["data", "paths"]))
    validate_data_config(run_cfg)
    splits = list(SPLITS) if cfg.split == "all" else [cfg.split]
    if not set(splits) <= set(SPLITS):
        raise DataError(f"split: {cfg.split!r} is not one of {', '.join(SPLITS)}, all")
    device = resolve_device(cfg)
    seed = run_cfg.trainer.seed if cfg.seed is None else cfg.seed

    data = build_data(run_cfg.data)
    if data.classes != ckpt["classes"] or data.n_channels != ckpt["n_channels"]:
        raise DataError(
            f"the data ({data.classes}, {data.n_channels} channels) does not match checkpoint "
            f"{cfg.ckpt_path} ({ckpt['classes']}, {ckpt['n_channels']} channels); set data.words to its "
            f"classes, in order"
        )
    model = build_model(run_cfg.model, data, device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {cfg.ckpt_path} does not fit its own model config: {e}") from None

    results = {}
    for split in splits:
        runs = [
            evaluate(
                model,
                data.loaders[split],
                device=device,
                seed=seed + EVAL_SEED_OFFSETS.get(split, 0) + i * CHIP_SEED_STRIDE,
                limit=cfg.trainer.limit_eval_batches,
            )
            for i in range(cfg.chip_instances)
        ]
        if runs[0] is None:
            log.info("split %s is empty: skipped", split)
            continue
        accs = [r["acc"] for r in runs]
        results[split] = {
            "acc": statistics.fmean(accs),
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "chip_accs": accs,
            "samples": runs[0]["samples"],
            "loss": statistics.fmean(r["loss"] for r in runs),
            "firing_rate": runs[0]["firing_rate"],
            "confusion": runs[0]["confusion"],
        }
    if not results:
        raise DataError(f"split: every requested split ({', '.join(splits)}) of the data is empty")
    report = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "epoch": ckpt["epoch"],
        "classes": data.classes,
        "chip_instances": cfg.chip_instances,
        "seed": seed,
        "splits": results,
    }
    atomic_write_json(out_dir / "eval.json", report)
    _print(report)
    return results[next(iter(results))]


def _print(report: dict) -> None:
    table = Table(title=f"nwtrain-eval: {report['ckpt_path']} (epoch {report['epoch']})")
    for column in ("split", "samples", "accuracy", "chip spread (std)", "cross entropy"):
        table.add_column(column)
    for split, r in report["splits"].items():
        table.add_row(split, str(r["samples"]), f"{r['acc']:.1%}", f"{r['acc_std']:.1%}", f"{r['loss']:.4f}")
    get_console().print(table)
