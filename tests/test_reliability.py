"""Issue 7: signals save a resumable checkpoint, kill -9 loses at most the current epoch and resumes to the
same result, atomic and safe checkpoint files, NaN losses, config validation and unwritable folders."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import (
    cli_env,
    compose_config,
    deterministic,
    read_jsonl,
    run_cli,
    tiny_cache,
    tiny_overrides,
)

import nwtrain.runs as runner
from nwtrain.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    OutputDirError,
    TrainingInterrupted,
)
from nwtrain.training import checkpoint, loop


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture
def config(cache, tmp_path):
    """``config(name, *overrides)``: a tiny config writing into ``tmp_path/name``."""
    return lambda name, *overrides: compose_config(
        tiny_overrides(cache, f"paths.output_dir={tmp_path / name}", "logger=jsonl", *overrides)
    )


# ---------------------------------------------------------------------------------------------------------
# Signals and kill -9
# ---------------------------------------------------------------------------------------------------------
def test_sigterm_mid_epoch_saves_a_checkpoint_that_resumes_exactly(config, tmp_path, monkeypatch):
    straight = runner.train(config("straight", "trainer.epochs=3"))

    calls = []
    accumulate = loop.accumulate

    def signal_on_fifth_batch(*args):
        accumulate(*args)
        calls.append(1)
        if len(calls) == 5:  # epoch 2, batch 2 of 3
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "accumulate", signal_on_fifth_batch)
    with pytest.raises(
        TrainingInterrupted, match="SIGTERM received: training stopped in epoch 2 after 2"
    ) as e:
        runner.train(config("cut", "trainer.epochs=3"))
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    ckpt = checkpoint.load_checkpoint(last)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 2)

    monkeypatch.setattr(loop, "accumulate", accumulate)
    resumed = runner.train(config("resumed", "trainer.epochs=3", f"ckpt_path={last}"))
    assert deterministic(read_jsonl(tmp_path / "resumed" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
    assert (resumed["best_val_acc"], resumed["test_acc"]) == (straight["best_val_acc"], straight["test_acc"])


def _start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-c", "from nwtrain.cli import main; main()", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_epochs(metrics, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    raise AssertionError(f"{metrics} did not reach {n} epochs")


# Long enough epochs (many small batches, the full hidden layer) that a signal usually lands mid-epoch.
LONG = ("data.dataloader_config.batch_size=2", "model.hidden_size=64")


def test_sigint_on_the_cli_saves_and_exits_cleanly(cache, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(cache, *LONG), "trainer.epochs=500", "logger=jsonl", f"hydra.run.dir={run_dir}"]
    proc = _start(args, tmp_path)
    _wait_for_epochs(run_dir / "metrics.jsonl", 1, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert "SIGINT received" in out and "ckpt_path=" in out and "Traceback" not in out
    assert checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] >= 1


def test_kill_9_then_resume_loses_at_most_the_current_epoch(cache, tmp_path):
    args = [*tiny_overrides(cache, *LONG), "trainer.epochs=6", "logger=jsonl"]
    straight = run_cli([*args, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    killed = tmp_path / "killed"
    proc = _start([*args, f"hydra.run.dir={killed}"], tmp_path)
    _wait_for_epochs(killed / "metrics.jsonl", 2, proc)
    proc.kill()
    proc.communicate()
    done = len((killed / "metrics.jsonl").read_text().splitlines())
    last = killed / "checkpoints" / "last.ckpt"
    assert checkpoint.load_checkpoint(last)["epoch"] in (done, done + 1)  # nothing but the running epoch lost

    resumed = run_cli([*args, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert deterministic(read_jsonl(tmp_path / "resumed" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("straight", "resumed")]
    assert summaries[0]["test_acc"] == summaries[1]["test_acc"]


# ---------------------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def good_checkpoint(config, tmp_path):
    runner.train(config("good"))
    return tmp_path / "good" / "checkpoints" / "last.ckpt"


def test_an_interrupted_write_leaves_the_previous_file(good_checkpoint, monkeypatch):
    before = good_checkpoint.read_bytes()

    def torn_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(good_checkpoint, {"model": {}})
    assert good_checkpoint.read_bytes() == before
    assert sorted(p.name for p in good_checkpoint.parent.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp


def test_truncated_checkpoint_names_the_file(good_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"{truncated}.*truncated"):
        checkpoint.load_checkpoint(truncated)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"state_dict": {"w": torch.zeros(2)}}, "is not an nwtrain checkpoint"),
        ([torch.zeros(2)], "is not an nwtrain checkpoint"),
        ({"format": "nwtrain-checkpoint", "version": 1, "model": {}}, "is incomplete: it lacks optimizer"),
        ({"format": "nwtrain-checkpoint", "version": 99}, "format version 99"),
    ],
)
def test_foreign_checkpoints_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "foreign.ckpt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=f"{path}.*{message}|{message}"):
        checkpoint.load_checkpoint(path)


def test_missing_and_garbage_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_checkpoint(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(512))
    with pytest.raises(CheckpointError, match=str(garbage)):
        checkpoint.load_checkpoint(garbage)


class _Payload:
    """Unpickling this would run code: it must never happen when loading a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_executes_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "nwtrain-checkpoint", "version": 1, "model": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=f"{path}.*weights_only=True"):
        checkpoint.load_checkpoint(path)
    assert not marker.exists()


def test_cli_bad_checkpoint_is_one_clear_line(good_checkpoint, cache, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good_checkpoint.read_bytes()[:1000])
    proc = run_cli(
        [*tiny_overrides(cache), f"ckpt_path={truncated}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and str(truncated) in out and "Traceback" not in out


# ---------------------------------------------------------------------------------------------------------
# NaN loss
# ---------------------------------------------------------------------------------------------------------
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(config, tmp_path, monkeypatch):
    loss_terms = loop.loss_terms
    calls = []

    def nan_in_epoch_two(model, logits, labels, weights):
        terms = loss_terms(model, logits, labels, weights)
        calls.append(1)
        if len(calls) > 3:  # 3 batches per epoch: from epoch 2 on
            terms["cross_entropy"] = terms["cross_entropy"] * float("nan")
        return terms

    monkeypatch.setattr(loop, "loss_terms", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2 batch 1 \(cross_entropy=nan\)"):
        runner.train(config("nan", "trainer.epochs=3"))
    out = tmp_path / "nan"
    assert checkpoint.load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert checkpoint.load_checkpoint(out / "checkpoints" / "best.ckpt")["epoch"] == 1
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


# ---------------------------------------------------------------------------------------------------------
# Config validation and output folders
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["chip.name=h3"], "chip.name: unknown chip 'h3'; choose one of lif, h1v1, h1v2"),
        (["model.chip=h3"], "model.chip: unknown chip 'h3'"),
        (["variant.quantization_bit=17"], "variant.quantization_bit: 17 is out of range: must be in 1..16"),
        (["variant.quantization_bit=0"], "variant.quantization_bit: 0 is out of range"),
        (["model.quantization_bit=4.5"], "model.quantization_bit: must be an integer"),
        (["loss.limit=1.2"], "loss.limit: 1.2 is beyond the h1v1 weight range"),
        (["experiment=yesno_h1v2_hw", "loss.limit=2.0"], "loss.limit: 2.0 is beyond the h1v2 weight range"),
        (["chip.weight_limit=3.0"], "chip.weight_limit: 3.0 is beyond the h1v1 weight range"),
        (["model.dt=0"], "model.dt: 0 is out of range: must be > 0"),
        (["model.dt=-0.008"], "model.dt: -0.008 is out of range"),
        (["data.sim_time_s=0.004"], "data.sim_time_s: 0.004 s differs from model.dt"),
        (["chip=lif"], "variant.ileak_mismatch: True: the LIF baseline has no leak mismatch model"),
        (
            ["experiment=yesno_h1v1_mismatch", "variant.stddev_margin=-1"],
            "variant.stddev_margin: -1 is out of range: must be >= 0",
        ),
        (
            ["experiment=yesno_h1v2_plain", "variant.stddev=0.02"],
            "variant.stddev: 0.02: H1v2 has no synaptic mismatch model; stddev is an option of H1v1",
        ),
        (["data.words=[true,false]"], "data.words: [True, False] are not words"),
        (["trainer.epochs=0"], "trainer.epochs: 0 is out of range"),
        (["trainer.device=tpu"], "trainer.device: unknown device 'tpu'"),
        (["loss.fr_layers=[out,middle]"], "loss.fr_layers: unknown layers ['middle']"),
        (
            ["+loss.objective.label_smoothing=1.0"],
            "loss.objective.label_smoothing: 1.0 is out of range: must be >= 0 and < 1",
        ),
        (["model.hidden_size=[8,0]"], "model.hidden_size.1: 0 is out of range: must be >= 1"),
        (["model.hidden_size=[]"], "model.hidden_size: is an empty list"),
        (["model.hidden_size=[8,8]"], "model.taus: needs 4 entries, one per layer"),
        (["model.taus=[0.01,[0.01,-1],0.01]"], "model.taus.1.1: -1 is out of range: must be > 0"),
        (["model.taus=[0.01,[],0.01]"], "model.taus.1: is an empty list"),
        (["model.out_population=0"], "model.out_population: 0 is out of range: must be >= 1"),
        (["model.frontend_delays_s=[0,0.008]"], "model.frontend_delays_s: [0, 0.008]: H1v1 has no synaptic"),
        (
            ["chip=lif", "variant=plain", "model.frontend_delays_s=[0,0.01]"],
            "model.frontend_delays_s.1: 0.01 s is not a multiple >= 0 of dt = 0.008 s (model.dt)",
        ),
        (
            ["chip=lif", "variant=plain", "model.frontend_delays_s=0.008"],
            "model.frontend_delays_s: must be a list",
        ),
        (
            ["model.adaptation_taus_s=0.2"],
            "model.adaptation_taus_s: 0.2: H1v1 has no neuron adaptation (the vendor documents none)",
        ),
        (
            ["chip=lif", "variant=plain", "model.adaptation_taus_s=[0.1,0]"],
            "model.adaptation_taus_s.1: 0 is out of range: must be > 0",
        ),
        (["data.bands_per_octave=6"], "data.bands_per_octave: 6: H1v1's front end is the chip's 2 bands per"),
        (["chip=lif", "variant=plain", "data.bands_per_octave=0"], "data.bands_per_octave: 0 is out of"),
        (["chip=lif", "variant=plain", "data.bands_per_octave=2.5"], "data.bands_per_octave: must be an"),
        (["data.cv_folds=1"], "data.cv_folds: 1 fold is no cross-validation"),
        (["data.train_speed_factors=[0.9,0]"], "data.train_speed_factors.1: 0 is out of range: must be > 0"),
        (["data.train_speed_factors=1.1"], "data.train_speed_factors: must be a list of speeds, got 1.1"),
        (["data.cv_folds=5", "data.cv_fold=5"], "data.cv_fold: 5 is out of range: must be in 0..4"),
    ],
)
def test_config_errors_name_the_field(config, overrides, message):
    with pytest.raises(ConfigError) as e:
        runner.train(config("bad", *overrides))
    assert message in str(e.value)


def test_words_missing_from_the_data_set_are_named(cache, mini_speech_commands, tmp_path):
    cfg = compose_config(
        [
            "data=speech_commands",
            f"paths.speech_commands_dir={mini_speech_commands}",
            "data.words=[yes,maybe]",
            f"paths.cache_dir={cache}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(
        ConfigError, match=r"data.words: \['maybe'\] not in the data set at .* \(it has: no, up, yes\)"
    ):
        runner.train(cfg)


def test_cli_config_error_is_one_clear_line(cache, tmp_path):
    proc = run_cli([*tiny_overrides(cache), "loss.limit=1.2", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "loss.limit: 1.2 is beyond the h1v1 weight range" in out
    assert "Traceback" not in out


def test_unwritable_output_folder_fails_before_any_data_or_training(config, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(runner, "build_data", lambda *a: pytest.fail("data loaded before the folder check"))
    with pytest.raises(OutputDirError, match=f"output folder {blocker / 'run'} is not writable"):
        runner.train(config("unused", f"paths.output_dir={blocker / 'run'}"))


def test_cli_unwritable_run_folder_is_one_clear_line(cache, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for flags, where in (
        ([], [f"hydra.run.dir={blocker / 'run'}"]),
        (["-m"], [f"hydra.sweep.dir={blocker / 'sweep'}", "seed=1,2"]),
    ):
        proc = run_cli([*flags, *tiny_overrides(cache), *where], tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and f"output folder {blocker}" in out and "Traceback" not in out, out
