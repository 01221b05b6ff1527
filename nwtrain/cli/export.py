"""``nwtrain-export``: a checkpoint as a chip artefact (``nwtrain.deploy.export``), verified against the
simulator (``nwtrain.deploy.chipsim``) on a split of its data."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nwtrain.config import check_output_dir
from nwtrain.deploy import chipsim
from nwtrain.deploy.export import PROJECTION_LOSS_WARNING, VERIFICATION_FILE, export_model, sha256, verify
from nwtrain.errors import ConfigError
from nwtrain.runs import SPLITS, load_model, load_run, require_classifier
from nwtrain.training.checkpoint import atomic_write_json
from nwtrain.training.evaluation import evaluate

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# The runner behind `nwtrain-export`
# ---------------------------------------------------------------------------------------------------------
def export_checkpoint(cfg, overrides: Sequence[str] = ()) -> dict:
    """Export ``cfg.ckpt_path`` into ``paths.output_dir`` and verify the artefact on ``cfg.verify_split``;
    returns the verification (also in verification.json), or an empty dict without one."""
    bits = check_options(cfg)
    out_dir = check_output_dir(cfg.paths.output_dir)
    run = load_run(cfg, overrides, device=torch.device("cpu"))
    if cfg.verify_split:  # the verification compares class decisions
        require_classifier(
            run.config, cfg.ckpt_path, "nwtrain-export's verification (verify_split=null skips it)"
        )
    model = load_model(run, stddev=0.0, ileak_mismatch=False)
    loader = run.data.loaders[cfg.verify_split] if cfg.verify_split else None
    if loader is not None and len(loader.dataset) == 0:
        raise ConfigError("verify_split", f"the {cfg.verify_split} split of the data is empty; pick another")
    # What projection costs: the model's own accuracy on the split before it is programmed.
    before = (
        evaluate(model, loader, device="cpu", seed=0, limit=cfg.trainer.limit_eval_batches)["acc"]
        if cfg.project and loader is not None
        else None
    )
    data_cfg = run.config.data
    taus = run.config.model.get("taus")
    meta, dep = export_model(
        model,
        out_dir,
        classes=run.data.classes,
        features={**run.data.features, "recording_duration_s": float(data_cfg.recording_duration_s)},
        bits=bits,
        project_weights=cfg.project,
        requested_taus_s=None if taus is None else OmegaConf.to_container(taus),
        provenance={
            "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
            "ckpt_sha256": sha256(Path(cfg.ckpt_path).read_bytes()),
            "ckpt_epoch": run.ckpt["epoch"],
            "experiment": run.config.get("experiment_name"),
        },
    )
    if dep.projection:
        log_projection(dep)
    log.info("artefact written to %s (%s)", out_dir, ", ".join([chipsim.EXPORT_JSON, *meta["files"]]))
    if loader is None:
        return {}
    return verify_artefact(out_dir, model, loader, cfg.verify_split, cfg.trainer.limit_eval_batches, before)


def check_options(cfg) -> int | None:
    """``bits`` and ``verify_split`` checked; returns ``bits``."""
    bits = cfg.bits
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16):
        raise ConfigError("bits", f"must be an integer in 1..16 or null, got {bits!r}")
    if cfg.verify_split not in (None, *SPLITS):
        raise ConfigError("verify_split", f"{cfg.verify_split!r} is not one of {', '.join(SPLITS)} or null")
    return bits


def verify_artefact(out_dir: Path, model, loader, split: str, limit, before: float | None) -> dict:
    """Run the artefact in ``out_dir`` on the simulator against ``model`` over ``split`` (``loader``), write
    verification.json and log the agreement; ``before`` is the model's accuracy before projection."""
    result = {"split": split, **verify(out_dir, model, loader, limit)}
    if before is not None:
        result["model_acc_before_projection"] = before
    atomic_write_json(out_dir / VERIFICATION_FILE, result)
    log.info(
        "verification on %s (%d clips): simulator and model agree on %.1f%% of the clips; accuracy model "
        "%.1f%%, simulator %.1f%%%s; spike trains %s",
        split,
        result["clips"],
        100 * result["class_agreement"],
        100 * result["model_acc"],
        100 * result["sim_acc"],
        "" if before is None else f" (before projection {100 * before:.1f}%)",
        "identical" if result["identical_spike_trains"] else "differ",
    )
    if result["class_agreement"] < 1.0:
        log.warning("the simulator disagrees with the model on clips %s", result["disagreeing_clips"])
    if before is not None and before - result["model_acc"] > PROJECTION_LOSS_WARNING:
        log.warning(
            "projection onto the chip cost %.1f points of accuracy (%.1f%% -> %.1f%% on %s): the network was "
            "not trained for the chip; train it with variant=hardware_aware (or bits=8 for a LIF network)",
            100 * (before - result["model_acc"]),
            100 * before,
            100 * result["model_acc"],
            split,
        )
    return result


def log_projection(dep) -> None:
    """One line on what projecting the weights onto the chip changed."""
    total = {k: sum(c[k] for c in dep.projection.values()) for k in ("moved", "clamped", "sign_flips")}
    log.info(
        "projected onto %d levels: %d weights moved (%d clamped, max change %.4g); %d weights given "
        "their block's sign in %d mixed blocks",
        dep.grid.n_levels,
        total["moved"],
        total["clamped"],
        max(c["max_change"] for c in dep.projection.values()),
        total["sign_flips"],
        sum(c["sign_blocks_fixed"] for c in dep.projection.values()),
    )
