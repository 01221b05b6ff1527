"""``nwtrain-predict``: the class of each recording, by a checkpoint's model or by an exported chip artefact.

``audio`` is a WAV file, a folder (its ``*.wav``, recursively) or a list of either. Each recording is read
as the model was trained (its sample rate, resampled if need be; its clip duration, cut or zero-padded),
turned into filterbank features and classified by its output spike counts. ``artefact=<export folder>``
runs the artefact through ``nwtrain.deploy.chipsim`` instead of the trained model: what the chip would answer.
``chip_instance=i`` runs the checkpoint's model on Monte-Carlo chip ``i``, the one ``nwtrain-eval
mismatch.instances`` scores as instance ``i``.
The artefact's files must match the sha256 that ``export.json`` records.

Per recording: the class, the spike count of each class and a confidence, the softmax of the counts (the
probability the training loss assigns). A recording with no output spike at all is flagged: its class is a
tie-break, not a decision. The results go to ``predictions.csv`` in the output folder and to the console.

``stream=true`` treats each recording as a long stream instead (``nwtrain.deploy.streaming``): every
stretch of sound that stands out of the background is a candidate keyword, classified by the model's window
slid over it; the onsets and classes go to ``detections.csv``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich import get_console
from rich.table import Table

from nwtrain.chips import get_chip
from nwtrain.chips.common import constant_q_bank
from nwtrain.config import check_output_dir, trainer_device
from nwtrain.data import ChipFilterbank, ClipRef, load_clips
from nwtrain.deploy import chipsim
from nwtrain.deploy.mismatch import ChipInstance, instance_seed
from nwtrain.deploy.streaming import Detection, StreamSettings, detect_keywords
from nwtrain.errors import ConfigError, DataError
from nwtrain.runs import build_model
from nwtrain.training.annealing import load_annealed_state
from nwtrain.training.checkpoint import atomic_write_text, load_checkpoint
from nwtrain.training.metrics import spike_counts

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"
DETECTIONS_CSV = "detections.csv"


@dataclass(frozen=True)
class Features:
    """How a recording becomes the model's input: the filterbank and the clip duration."""

    filterbank: ChipFilterbank
    duration_s: float

    def __call__(self, files: list[Path]) -> torch.Tensor:
        rate = self.filterbank.sample_rate
        waves, failures = load_clips([ClipRef(f) for f in files], rate, self.duration_s)
        if failures:
            raise DataError(f"{failures[0][1]} (nwtrain-predict reads WAV files that hold audio)")
        return self.filterbank(waves)

    def recording(self, path: Path) -> torch.Tensor:
        """All of the recording at ``path``, mono, at the model's sample rate."""
        try:
            duration_s = sf.info(str(path)).duration
        except (RuntimeError, OSError) as e:
            raise DataError(f"{path}: cannot be read as audio ({e})") from None
        waves, failures = load_clips([ClipRef(path)], self.filterbank.sample_rate, duration_s)
        if failures:
            raise DataError(f"{failures[0][1]} (nwtrain-predict reads WAV files that hold audio)")
        return waves[0]


def audio_files(audio) -> list[Path]:
    """The recordings ``audio`` names: a WAV file, a folder of them (recursively) or a list of either."""
    entries = list(audio) if isinstance(audio, (list, tuple, ListConfig)) else [audio]
    files: list[Path] = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".wav")
            if not found:
                raise DataError(f"audio: the folder {path} holds no .wav file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"audio: {path} does not exist")
    if not files:
        raise ConfigError("audio", "names no recording; give a WAV file, a folder or a list of them")
    return files


def checkpoint_classifier(ckpt_path: str, device: torch.device, chip_instance: int | None = None):
    """``(classes, features, counts_fn)`` of a checkpoint's model (``checkpoint_model``)."""
    ckpt = load_checkpoint(ckpt_path)
    config = OmegaConf.create(ckpt["config"])
    data = config.data
    freqs, q = constant_q_bank(int(data.get("bands_per_octave", 2)))
    filterbank = ChipFilterbank(
        int(data.sample_rate),
        float(data.sim_time_s),
        freqs,
        q,
        str(data.get("compression", "none")),
        float(data.get("compression_floor_db", -60.0)),
    )
    chip = checkpoint_model(ckpt, device, chip_instance)

    @torch.no_grad()
    def counts(features: torch.Tensor) -> np.ndarray:
        return spike_counts(chip(features.to(device))).cpu().numpy()

    return list(ckpt["classes"]), Features(filterbank, float(data.recording_duration_s)), counts


def checkpoint_model(ckpt: dict, device: torch.device, chip_instance: int | None = None) -> ChipInstance:
    """A loaded checkpoint's model on one chip: the nominal one (no mismatch), or with ``chip_instance=i``
    Monte-Carlo chip ``i`` of ``nwtrain-eval mismatch.instances`` (the same draw: the chip's empirical
    synaptic offset and leak mismatch, seeded from the run's seed)."""
    config = OmegaConf.create(ckpt["config"])
    chip = get_chip(config.model.chip)
    seed = 0
    mismatch = {"stddev": 0.0, "ileak_mismatch": False}
    if chip_instance is not None:
        if isinstance(chip_instance, bool) or not isinstance(chip_instance, int) or chip_instance < 0:
            raise ConfigError("chip_instance", f"must be an integer >= 0 or null, got {chip_instance!r}")
        if not chip.mismatch:
            raise ConfigError("chip_instance", f"{chip.label} has no mismatch model: every chip is the same")
        seed = instance_seed(int(config.trainer.seed), chip_instance)
        mismatch = {"stddev": chip.syn_offset_stddev, "ileak_mismatch": chip.leak_mismatch}
    # A trained model answers whether or not it fits its chip (build_model logs that it does not).
    model_cfg = OmegaConf.merge(config.model, {**mismatch, "fit_chip": False})
    model = build_model(model_cfg, int(ckpt["n_channels"]), len(ckpt["classes"]), device)
    load_annealed_state(model, ckpt["model"])
    model.eval()
    return ChipInstance(model, seed)


def artefact_classifier(folder: str):
    """``(classes, features, counts_fn)`` of an exported artefact, simulated by ``nwtrain.deploy.chipsim``."""
    art = chipsim.load_artefact(folder)
    fields = art.meta["features"]
    try:
        filterbank = ChipFilterbank.from_fields(fields)
    except (KeyError, ValueError) as e:
        raise chipsim.ArtefactError(f"{Path(folder) / chipsim.EXPORT_JSON}: features {e}") from None
    return (
        art.classes,
        Features(filterbank, float(fields["recording_duration_s"])),
        lambda x: chipsim.predict(art, x.numpy())[1],
    )


def classify(files: list[Path], classes: list[str], features: Features, counts_fn, batch: int = 64) -> list:
    """One row per file: path, class, confidence, spike counts per class, whether the output was silent."""
    rows = []
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        counts = np.asarray(counts_fn(features(chunk)), dtype=np.float64)
        prob = np.exp(counts - counts.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        for f, c, p in zip(chunk, counts, prob):
            k = int(c.argmax())
            rows.append(
                {
                    "file": str(f),
                    "class": classes[k],
                    "confidence": float(p[k]),
                    "counts": c.astype(int).tolist(),
                    "silent": not c.any(),
                }
            )
    return rows


def stream(files: list[Path], features: Features, counts_fn, settings: StreamSettings) -> list[dict]:
    """One row per stretch of sound in each recording: its onset and end, class, confidence and counts."""
    rows = []
    for f in files:
        wave = features.recording(f)
        found = detect_keywords(
            wave,
            features.filterbank.sample_rate,
            features.duration_s,
            lambda w: counts_fn(features.filterbank(w)),
            settings,
        )
        rows += [_detection_row(f, d) for d in found]
    return rows


def _detection_row(file: Path, d: Detection) -> dict:
    return {
        "file": str(file),
        "onset_s": d.onset_s,
        "end_s": d.end_s,
        "class_index": d.label,
        "confidence": d.confidence,
        "counts": list(d.counts),
        "silent": d.silent,
    }


def predict(cfg: DictConfig) -> dict:
    """The runner behind ``nwtrain-predict``: classify ``cfg.audio`` with ``cfg.ckpt_path`` or
    ``cfg.artefact`` (or, with ``cfg.stream``, find the keywords in it); writes ``predictions.csv`` (or
    ``detections.csv``) to ``paths.output_dir`` and returns the rows."""
    if (cfg.ckpt_path is None) == (cfg.artefact is None):
        raise ConfigError(
            "ckpt_path", "give exactly one of ckpt_path=<checkpoint> or artefact=<export folder>"
        )
    files = audio_files(cfg.audio)
    out_dir = check_output_dir(cfg.paths.output_dir)
    if cfg.artefact is not None:
        if cfg.chip_instance is not None:
            raise ConfigError("chip_instance", "draws a chip for a checkpoint; an artefact is one chip")
        classes, features, counts_fn = artefact_classifier(cfg.artefact)
    else:
        device = trainer_device(cfg)
        classes, features, counts_fn = checkpoint_classifier(cfg.ckpt_path, device, cfg.chip_instance)
    if cfg.stream:
        try:
            settings = StreamSettings(**OmegaConf.to_container(cfg.streaming))
        except (TypeError, ValueError) as e:
            raise ConfigError("streaming", str(e)) from None
        rows = stream(files, features, counts_fn, settings)
        for r in rows:
            r["class"] = classes[r.pop("class_index")]
        columns = ["file", "onset_s", "end_s"]
        csv_name = DETECTIONS_CSV
    else:
        rows = classify(files, classes, features, counts_fn)
        columns = ["file"]
        csv_name = PREDICTIONS_CSV
    lines = [[*columns, "class", "confidence", *(f"count_{c}" for c in classes), "silent_output"]]
    lines += [
        [*(r[c] for c in columns), r["class"], f"{r['confidence']:.4f}", *r["counts"], int(r["silent"])]
        for r in rows
    ]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    atomic_write_text(out_dir / csv_name, text.getvalue())
    silent = sum(r["silent"] for r in rows)
    if silent:
        what = "stretches of sound" if cfg.stream else "recordings"
        log.warning("%d of %d %s made no output spike: their class is a tie-break", silent, len(rows), what)
    _print(rows, columns, classes, cfg.artefact or cfg.ckpt_path)
    log.info("%s written to %s", "detections" if cfg.stream else "predictions", out_dir / csv_name)
    return {"rows": rows, "output_dir": str(out_dir)}


def _print(rows: list[dict], columns: list[str], classes: list[str], source: str) -> None:
    table = Table(title=f"nwtrain-predict: {source}")
    for column in (*columns, "class", "confidence", *classes):
        table.add_column(column, overflow="fold")
    for r in rows:
        name = r["class"] + (" (no spikes)" if r["silent"] else "")
        cells = (f"{r[c]:.3f}" if isinstance(r[c], float) else r[c] for c in columns)
        table.add_row(*cells, name, f"{r['confidence']:.1%}", *(str(c) for c in r["counts"]))
    get_console().print(table)
