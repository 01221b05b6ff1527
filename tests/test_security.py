"""Issue 24: a checkpoint, a run folder or an artefact never runs code, and a resumed run is what it says.

Hostile files are built from a real run: its checkpoint's stored config (or its run folder's
.hydra/config.yaml, or its artefact's export.json) gets a node whose ``_target_`` would run code if Hydra
instantiated it. Every command that reads them must refuse in one line, naming the file and the target,
and no marker file may appear.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import (
    CONF_DIR,
    checkpoint_config,
    cli_env,
    compose_config,
    deterministic,
    read_jsonl,
    run_cli,
    tiny_cache,
    tiny_overrides,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

import nwtrain.runs as runner
from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.cli.export import export_checkpoint
from nwtrain.deploy import chipsim
from nwtrain.errors import CheckpointError, ConfigError, UntrustedFileError
from nwtrain.training import loop
from nwtrain.training.checkpoint import load_checkpoint, on_cpu
from nwtrain.training.trust import TRUSTED_TARGETS, targets

HW = "experiment=yesno_h1v1_hw"
# The variant anneals to sign-uniform blocks in range, so the run exports without projection.
CLEAN = (HW, "model.dense_init_bound=0.9", "trainer.epochs=2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def good_run(cache, tmp_path_factory) -> Path:
    """A real run folder (through the CLI, so it has .hydra/) and the artefact of its last (annealed)
    checkpoint next to it."""
    root = tmp_path_factory.mktemp("good")
    run_dir = root / "run"
    proc = run_cli([*tiny_overrides(cache, *CLEAN), "logger=jsonl", f"hydra.run.dir={run_dir}"], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli(
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"paths.cache_dir={cache}",
            f"hydra.run.dir={root / 'export'}",
        ],
        root,
        entry="export_main",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir


class _Unpickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def archive_dir(ckpt: Path) -> str:
    """The folder torch.save put the records in, inside the checkpoint's zip (torch.load wants every file
    there)."""
    with zipfile.ZipFile(ckpt) as z:
        return z.namelist()[0].split("/")[0]


def plant_module(ckpt: Path, marker: Path) -> None:
    """The zipimport gadget's module, appended to the checkpoint's own zip: torch.load(weights_only=True)
    still reads the file."""
    folder = archive_dir(ckpt)
    with zipfile.ZipFile(ckpt, "a") as z:
        z.writestr(f"{folder}/payload.py", f"open({str(marker)!r}, 'w').close()\n")


def gadget(kind: str, ckpt: Path, marker: Path) -> dict:
    """A config node that runs code (creates ``marker``) when Hydra instantiates it; the zipimport one
    needs ``plant_module`` once the checkpoint is written."""
    if kind == "zipimport":
        return {
            "_target_": "zipimport.zipimporter.load_module",
            "_args_": [
                {"_target_": "zipimport.zipimporter", "_args_": [f"{ckpt}/{archive_dir(ckpt)}"]},
                "payload",
            ],
        }
    if kind == "open":
        return {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    if kind == "copyfile":
        return {"_target_": "shutil.copyfile", "_args_": [str(ckpt), str(marker)]}
    if kind == "torch_load":
        evil = ckpt.with_name("evil.pt")
        evil.write_bytes(pickle.dumps(_Unpickle(marker)))
        return {"_target_": "torch.load", "_args_": [str(evil)], "weights_only": False}
    raise ValueError(kind)


GADGETS = ("zipimport", "open", "copyfile", "torch_load")
REFUSED = {
    "zipimport": "zipimport.zipimporter.load_module",
    "open": "builtins.open",
    "copyfile": "shutil.copyfile",
    "torch_load": "torch.load",
}


def hostile_run(good_run: Path, tmp_path: Path, kind: str, where: str) -> tuple[Path, Path]:
    """A copy of the good run folder with a gadget in the checkpoint's config (``where="checkpoint"``) or
    in the folder's .hydra/config.yaml; returns (checkpoint, marker)."""
    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    ckpt, marker = run_dir / "checkpoints" / "best.ckpt", tmp_path / "pwned"
    if where == "checkpoint":
        payload = torch.load(ckpt, weights_only=True)
        config = yaml.safe_load(payload["config"])
        config["model"]["surrogate"] = gadget(kind, ckpt, marker)
        payload["config"] = yaml.safe_dump(config)
        with open(ckpt, "wb") as f:  # as nwtrain writes it: through a file object
            torch.save(payload, f)
    else:
        hydra_config = run_dir / ".hydra" / "config.yaml"
        config = yaml.safe_load(hydra_config.read_text())
        config["data"]["dataloader_config"] = gadget(kind, ckpt, marker)
        hydra_config.write_text(yaml.safe_dump(config))
    if kind == "zipimport":
        plant_module(ckpt, marker)
    return ckpt, marker


@pytest.mark.filterwarnings("ignore:zipimport.zipimporter.load_module:DeprecationWarning")
def test_the_gadgets_are_real(good_run, tmp_path):
    """Instantiated, each hostile node does run code: the refusals below are of live gadgets."""
    for kind in GADGETS:
        run_dir = tmp_path / kind
        shutil.copytree(good_run, run_dir)
        marker = tmp_path / f"{kind}.marker"
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        node = gadget(kind, ckpt, marker)
        if kind == "zipimport":
            plant_module(ckpt, marker)
        try:
            instantiate(node)
        except Exception:
            pass  # some gadgets fail after their side effect (load_module of a module without a class)
        assert marker.exists(), kind


@pytest.mark.parametrize("where", ["checkpoint", "run_folder"])
@pytest.mark.parametrize("kind", GADGETS)
def test_eval_export_and_resume_refuse_a_hostile_config(good_run, cache, tmp_path, kind, where):
    ckpt, marker = hostile_run(good_run, tmp_path, kind, where)
    commands = {
        "eval": lambda: evaluate_checkpoint(checkpoint_config("eval", ckpt, tmp_path / "eval", cache)),
        "export": lambda: export_checkpoint(checkpoint_config("export", ckpt, tmp_path / "export", cache)),
        "resume": lambda: runner.train(
            compose_config(
                tiny_overrides(cache, HW, f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'r'}")
            )
        ),
    }
    for name, command in commands.items():
        with pytest.raises(UntrustedFileError) as e:
            command()
        message = str(e.value)
        assert str(ckpt) in message and f"refused _target_ '{REFUSED[kind]}'" in message, (name, message)
        assert not marker.exists(), name


@pytest.mark.parametrize("entry", ["eval_main", "export_main", "main"])
def test_cli_refuses_the_zipimport_gadget_in_one_line(good_run, cache, tmp_path, entry):
    ckpt, marker = hostile_run(good_run, tmp_path, "zipimport", "checkpoint")
    extra = tiny_overrides(cache, HW) if entry == "main" else [f"paths.cache_dir={cache}"]
    proc = run_cli([f"ckpt_path={ckpt}", *extra, f"hydra.run.dir={tmp_path / 'out'}"], tmp_path, entry=entry)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and not marker.exists()
    assert out.count("refused _target_") == 1 and str(ckpt) in out.replace("\n", "")
    assert "'zipimport.zipimporter.load_module' at model.surrogate" in out


def hostile_artefact(good_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "artefact"
    shutil.copytree(good_run.parent / "export", folder)
    return folder


def _chipsim(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nwtrain.deploy.chipsim", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_chipsim_refuses_a_target_in_export_json(good_run, tmp_path):
    folder = hostile_artefact(good_run, tmp_path)
    meta = json.loads((folder / "export.json").read_text())
    marker = tmp_path / "pwned"
    meta["provenance"]["builder"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    (folder / "export.json").write_text(json.dumps(meta))
    features = tmp_path / "features.npy"
    np.save(features, np.zeros((1, 125, meta["features"]["n_channels"]), np.float32))
    proc = _chipsim([folder, features], tmp_path)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "export.json: refused _target_ 'builtins.open' at provenance.builder" in proc.stderr


def tamper_weights(folder: Path) -> None:
    npz = folder / "weights.npz"
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    name = next(k for k in arrays if arrays[k].dtype.kind in "iu" and arrays[k].size)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] += 1
    np.savez(npz, **arrays)


def test_chipsim_and_predict_refuse_tampered_weights(good_run, cache, tmp_path, mini_speech_commands):
    folder = hostile_artefact(good_run, tmp_path)
    tamper_weights(folder)
    n_channels = json.loads((folder / "export.json").read_text())["features"]["n_channels"]
    np.save(tmp_path / "features.npy", np.zeros((1, 125, n_channels), np.float32))
    proc = _chipsim([folder, tmp_path / "features.npy"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{folder / 'weights.npz'} has sha256" in proc.stderr and "changed after export" in proc.stderr

    wav = mini_speech_commands / "yes"
    proc = run_cli(
        [f"artefact={folder}", f"audio={wav}", f"hydra.run.dir={tmp_path / 'p'}"],
        tmp_path,
        entry="predict_main",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (
        "weights.npz has sha256" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    )


def test_predict_with_checkpoint_and_artefact_agree(good_run, tmp_path, mini_speech_commands):
    wavs = mini_speech_commands / "no"
    rows = {}
    for name, source in (
        ("ckpt", f"ckpt_path={good_run / 'checkpoints' / 'last.ckpt'}"),
        ("art", f"artefact={good_run.parent / 'export'}"),
    ):
        out = tmp_path / name
        proc = run_cli([source, f"audio={wavs}", f"hydra.run.dir={out}"], tmp_path, entry="predict_main")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = (out / "predictions.csv").read_text().splitlines()
        assert lines[0] == "file,class,confidence,count_yes,count_no,silent_output"
        rows[name] = [line.split(",") for line in lines[1:]]
    assert len(rows["ckpt"]) == 12  # 4 speakers x 3 takes
    # The artefact is the checkpoint's network on the chip grid: the same classes and spike counts.
    assert [r[:2] + r[3:] for r in rows["ckpt"]] == [r[:2] + r[3:] for r in rows["art"]]


# ---------------------------------------------------------------------------------------------------------
# Resume: the best checkpoint carried over, overrides honoured or refused
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def first_epoch_is_best(monkeypatch):
    """Only epoch 1 can be the best (ties go to the later epoch, and tiny runs tie), so a run resumed at
    a later epoch resumes after its best one."""
    update = loop.TrainState.update_best
    monkeypatch.setattr(
        loop.TrainState,
        "update_best",
        lambda self, acc, patience: update(self, acc if self.epoch == 1 else -1.0, patience),
    )


def _run(cache, tmp_path, name, *overrides):
    cfg = compose_config(
        tiny_overrides(cache, HW, "logger=jsonl", f"paths.output_dir={tmp_path / name}", *overrides)
    )
    return runner.train(cfg)


def _same_best(a: Path, b: Path) -> None:
    x, y = (torch.load(p / "checkpoints" / "best.ckpt", weights_only=True) for p in (a, b))
    for key in ("epoch", "batch", "best_epoch", "best_val_acc", "classes"):
        assert x[key] == y[key], key
    assert deterministic(x["history"]) == deterministic(y["history"])
    for key in x["model"]:
        # torch.load without map_location, as a user loads a file: a GPU run's tensors must be on the CPU
        assert x["model"][key].device.type == y["model"][key].device.type == "cpu", key
        assert torch.equal(x["model"][key], y["model"][key]), key
    assert torch.equal(x["rng"]["torch"], y["rng"]["torch"])
    for i, state in x["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], y["optimizer"]["state"][i]["exp_avg"])


def test_a_snapshot_is_a_cpu_copy():
    """The best epoch kept in memory does not follow the training that goes on, and holds its tensors on
    the CPU (a GPU run covers the device in the resume test below)."""
    w = torch.ones(3, device="cuda" if torch.cuda.is_available() else "cpu")
    state = {"model": {"w": w}, "history": [{"loss": 1.0}], "rng": (3, [1, 2]), "best": None}
    copy = on_cpu(state)
    w.add_(1)
    state["history"].append({"loss": 0.5})
    assert copy["model"]["w"].device.type == "cpu" and torch.equal(copy["model"]["w"], torch.ones(3))
    assert copy == {**copy, "history": [{"loss": 1.0}], "rng": (3, [1, 2]), "best": None}


def test_resumed_runs_end_with_the_uninterrupted_best_checkpoint(cache, tmp_path, first_epoch_is_best):
    _run(cache, tmp_path, "straight", "trainer.epochs=3")
    _run(cache, tmp_path, "first", "trainer.epochs=2")
    resumed = _run(
        cache,
        tmp_path,
        "resumed",
        "trainer.epochs=3",
        f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}",
    )
    assert resumed["best_epoch"] == 1
    _same_best(tmp_path / "straight", tmp_path / "resumed")
    # A finished run resumed: nothing left to train, both checkpoints written all the same.
    _run(
        cache,
        tmp_path,
        "again",
        "trainer.epochs=3",
        f"ckpt_path={tmp_path / 'straight/checkpoints/last.ckpt'}",
    )
    assert load_checkpoint(tmp_path / "again/checkpoints/last.ckpt")["epoch"] == 3
    _same_best(tmp_path / "straight", tmp_path / "again")


def test_a_changed_learning_rate_is_honoured_and_recorded(cache, tmp_path):
    _run(cache, tmp_path, "first", "trainer.epochs=1")
    last = tmp_path / "first/checkpoints/last.ckpt"
    summary = _run(cache, tmp_path, "lr", "trainer.epochs=2", "optim.lr_core=0.5", f"ckpt_path={last}")
    assert summary["resumed"]["changed"]["optim.lr_core"] == [0.001, 0.5]
    history = read_jsonl(tmp_path / "lr" / "metrics.jsonl")
    assert [r["lr/core"] for r in history] == [0.001, 0.5]


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=7", "seed: 42 -> 7"),
        ("loss.lam_fr=1", "loss.lam_fr: 10.0 -> 1"),
        ("model.hidden_size=16", "model.hidden_size: 8 -> 16"),
    ],
)
def test_overrides_resume_cannot_honour_are_refused(cache, tmp_path, override, message):
    _run(cache, tmp_path, "first", "trainer.epochs=1")
    with pytest.raises(ConfigError, match=f"ckpt_path: .*cannot honour .*{message}"):
        _run(cache, tmp_path, "bad", override, f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}")


# ---------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------
def test_checkpoint_messages_say_what_is_wrong(good_run, tmp_path):
    garbage = tmp_path / "random.ckpt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="is not a torch checkpoint: it is truncated, corrupt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file; it holds .*best.ckpt"):
        load_checkpoint(good_run)
    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "nwtrain-checkpoint", "model": _Unpickle(tmp_path / "m")}, evil)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(evil)
    # pickle names io.open "_io.open" from Python 3.12 on
    assert re.search(r"GLOBAL _?io\.open", str(e.value)) and "weights_only=False" not in str(e.value)


@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0])
def test_ctrl_c_during_start_up_is_one_line(cache, tmp_path, after_s):
    # at any moment of the imports (some 2-4 s): an interrupted torch import once gave exit -2 or an abort
    proc = subprocess.Popen(
        [sys.executable, "-m", "nwtrain", *tiny_overrides(cache), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "interrupted" in out


def test_every_target_the_configs_name_is_trusted():
    for path in CONF_DIR.rglob("*.yaml"):
        if {"hydra", "hparams_search"} & set(path.relative_to(CONF_DIR).parts):
            continue
        for at, target in targets(OmegaConf.to_container(OmegaConf.load(path))):
            assert target in TRUSTED_TARGETS, f"{path}: {at} = {target}"


def test_chipsim_artefact_files_are_checked_in_process(good_run, tmp_path):
    folder = hostile_artefact(good_run, tmp_path)
    chipsim.load_artefact(folder)  # the untouched copy loads
    tamper_weights(folder)
    with pytest.raises(UntrustedFileError, match="changed after export"):
        chipsim.load_artefact(folder)
