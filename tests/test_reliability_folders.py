"""Issue 22: runs that share a run folder, temporary files of killed writes, a full disk, bad audio files
and silent divergence, each through the user's path (the CLI) where the defect showed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import cli_env, compose_config, run_cli, tiny_cache, tiny_overrides
from omegaconf import OmegaConf

import nwtrain.runs as runner
from nwtrain.errors import DiskFullError, DivergenceError, OutputDirError
from nwtrain.training import checkpoint
from nwtrain.training.divergence import divergence_signs
from nwtrain.training.rundir import lock_run_folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


def _out(proc) -> str:
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------------
# Two runs, one folder
# ---------------------------------------------------------------------------------------------------------
# Hydra's ${now:} resolver reads hydra.core.utils.datetime: frozen, every run starts "in the same second".
FROZEN_CLOCK = """
import datetime, hydra.core.utils as u
class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2030, 1, 2, 3, 4, 5)
u.datetime = Frozen
from nwtrain.cli import main
main()
"""


def test_two_runs_started_in_the_same_second_get_separate_complete_folders(cache, tmp_path):
    args = [*tiny_overrides(cache), "logger=jsonl", f"paths.log_dir={tmp_path / 'outputs'}"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FROZEN_CLOCK, *args, f"seed={seed}"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    parent = tmp_path / "outputs" / "yesno_h1v1_mismatch"
    folders = sorted(p.name for p in parent.iterdir())
    assert folders == ["2030-01-02_03-04-05", "2030-01-02_03-04-05_1"]
    seeds = set()
    for name in folders:
        run = parent / name
        summary = json.loads((run / "summary.json").read_text())
        overrides = [str(o) for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
        seed = summary["seed"]
        assert f"seed={seed}" in overrides and summary["run_dir"] == str(run)
        assert checkpoint.load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
        log = (run / "train.log").read_text()
        assert log.count("run folder ") == 1 and str(run) in log  # one run's log, not both
        seeds.add(seed)
    assert seeds == {1, 2}


def test_a_folder_named_on_the_command_line_that_a_live_run_holds_is_refused(cache, tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    lock_run_folder(run)  # this test process is the live run
    for extra in ([], [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]):  # a new run; a resume into it
        proc = run_cli([*tiny_overrides(cache), f"hydra.run.dir={run}", *extra], tmp_path)
        out = _out(proc)
        assert (
            proc.returncode == 1
            and f"run folder {run} is in use by another nwtrain run (pid {os.getpid()})" in out
        )
        assert "Traceback" not in out
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"  # Hydra wrote nothing there
    assert not (run / "train.log").exists()


def test_the_library_refuses_an_output_folder_another_process_holds(cache, tmp_path):
    run = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from nwtrain.training.rundir import lock_run_folder; lock_run_folder({str(run)!r}); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = compose_config(tiny_overrides(cache, f"paths.output_dir={run}", "logger=jsonl"))
        with pytest.raises(OutputDirError, match=f"run folder {run} is in use .*pid {holder.pid}"):
            runner.train(cfg)
    finally:
        holder.kill()
        holder.wait()
    runner.train(cfg)  # the lock went with its holder
    assert (run / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------------------
# Temporary files of killed writes
# ---------------------------------------------------------------------------------------------------------
def test_a_writer_killed_mid_checkpoint_leaves_no_temp_file_after_the_next_start(cache, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    # A writer that dies half-way through its temporary file, as nwtrain.training.checkpoint names it.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time; f = open(os.path.join({str(ckpts)!r}, "
            "f'.best.ckpt.tmp{os.getpid()}'), 'wb'); f.write(b'PK half a zip'); f.flush(); "
            "print(flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    writer.stdout.readline()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert [p.name for p in ckpts.iterdir()] == [f".best.ckpt.tmp{writer.pid}"]
    (tmp_path / "run" / f".metrics.jsonl.tmp{writer.pid}").write_text("{")

    proc = run_cli([*tiny_overrides(cache), "logger=jsonl", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, _out(proc)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list((tmp_path / "run").glob("*.tmp*")) and not list((tmp_path / "run").glob(".*.tmp*"))


# ---------------------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------------------
def test_the_atomic_writer_reports_a_full_disk_by_file_and_free_space(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")

    def no_space(obj, f):
        f.write(b"PK\x03\x04")
        raise RuntimeError("PytorchStreamWriter failed writing file") from OSError(28, "No space left")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(
        DiskFullError, match=rf"^disk full writing {target} \([\d.]+ [kM]B free on {tmp_path}\)"
    ):
        checkpoint.save_checkpoint(target, {})
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _unshare_works() -> bool:
    probe = shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return bool(probe) and probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm for a small tmpfs")
def test_a_full_disk_ends_in_one_line_and_the_last_checkpoint_loads(cache, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run"
    last = run / "checkpoints" / "last.ckpt"
    args = [*tiny_overrides(cache), "logger=jsonl", "model.hidden_size=64", f"hydra.run.dir={run}"]
    command = " ".join(
        f"'{a}'" for a in [sys.executable, "-c", "from nwtrain.cli import main; main()", *args]
    )
    # One epoch fits; then the disk fills up to 30 kB, less than a checkpoint (about 45 kB), and the run
    # resumes into its own folder, whose first write is best.ckpt.
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {disk} && {command} > {tmp_path}/first.txt 2>&1 && "
        f"(dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null; truncate -s -30k {disk}/filler; "
        f'{command} trainer.epochs=2 ckpt_path={last}; echo "exit $?"; cp -r {run} {tmp_path}/after)'
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    out = _out(proc)
    assert "exit 1" in out, out + (tmp_path / "first.txt").read_text()
    assert "disk full" in out and "Traceback" not in out, out
    # The console wraps long lines to its width; the log file holds them whole.
    log = (tmp_path / "after" / "train.log").read_text()
    errors = [line for line in log.splitlines() if "disk full" in line]
    assert len(errors) == 1, log
    assert f"disk full writing {last.parent / 'best.ckpt'} (" in errors[0] and " free on " in errors[0]
    assert f"free some space, then resume with the same command plus ckpt_path={last}" in errors[0]
    after = tmp_path / "after" / "checkpoints"
    assert checkpoint.load_checkpoint(after / "last.ckpt")["epoch"] == 1
    assert sorted(p.name for p in after.iterdir()) == ["best.ckpt", "last.ckpt"]


# ---------------------------------------------------------------------------------------------------------
# Bad audio files
# ---------------------------------------------------------------------------------------------------------
def _empty(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("this is not audio\n")


def _zero_frames(path):
    sf.write(path, np.zeros(0), 16000, subtype="PCM_16")


def _nan(path):
    sf.write(path, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_empty, "cannot be read as audio"),
        (_text, "cannot be read as audio"),
        (_zero_frames, "contains no audio samples"),
        (_nan, "contains non-finite samples"),
    ],
)
def test_a_bad_audio_file_is_one_line_naming_it(tone_writer, tmp_path, make, reason):
    tree = _tone_tree(tone_writer, tmp_path)
    bad = tree / "low" / "bad.wav"
    make(bad)
    proc = run_cli(_folder_args(tree, tmp_path), tmp_path)
    out = _out(proc)
    assert proc.returncode == 1 and "Traceback" not in out and "bad.wav" in out, out
    # The console wraps long lines to its width; the log file holds them whole.
    errors = [line for line in (tmp_path / "run" / "train.log").read_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"{bad}: {reason}" in errors[0] and "data.on_bad_file=skip" in errors[0], out


def test_an_empty_class_folder_is_one_line_in_a_run_and_in_a_sweep(tone_writer, tmp_path):
    tree = _tone_tree(tone_writer, tmp_path)
    (tree / "empty").mkdir()
    message = f"class folder {tree / 'empty'} has no audio files"
    proc = run_cli(_folder_args(tree, tmp_path), tmp_path)
    out = _out(proc)
    assert proc.returncode == 1 and message in out and "Traceback" not in out and "Instantiation" not in out

    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *_folder_args(tree, tmp_path)[:-1], f"hydra.sweep.dir={sweep}", "seed=1"], tmp_path)
    assert proc.returncode == 1
    (failure,) = json.loads((sweep / "sweep_summary.json").read_text())[0]["failed"]
    assert failure["error"] == f"DataError: {message} (.wav, .flac, .ogg)"


def _tone_tree(tone_writer, tmp_path):
    tree = tmp_path / "tree"
    for cls, freq in (("low", 300.0), ("high", 2500.0)):
        for i in range(6):
            tone_writer(tree / cls / f"{cls}{i}.wav", freq, seed=i + (10 if cls == "high" else 0))
    return tree


def _folder_args(tree, tmp_path):
    return [
        "data=folder",
        f"data.data_parent={tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.progress=false",
        "model.hidden_size=8",
        "trainer.epochs=1",
        "logger=jsonl",
        "logger.progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


# ---------------------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------------------
def _record(epoch, loss=0.7, clamped=0.0, out_rate=0.1):
    return {
        "epoch": epoch,
        "loss/total": loss,
        "hardware/weights_at_clamp": clamped,
        "firing_rate_val/out": out_rate,
    }


def test_divergence_signs():
    assert divergence_signs([_record(1, clamped=0.3)], 10) == {}
    assert list(divergence_signs([_record(1, clamped=0.9)], 10)) == ["clamp"]
    # A silent output and a loss at its start are normal early on; from mid-run on they are signs.
    silent = [_record(e, out_rate=0.0) for e in range(1, 6)]
    assert divergence_signs(silent[:4], 10) == {}
    assert set(divergence_signs(silent, 10)) == {"silent", "flat_loss"}
    moving = [_record(e, loss=0.7 - 0.01 * e) for e in range(1, 6)]
    assert divergence_signs(moving, 10) == {}
    assert divergence_signs([_record(1, out_rate=0.0)], 1) == {}  # a one-epoch run has no middle


def test_a_huge_learning_rate_warns_within_three_epochs(cache, tmp_path):
    proc = run_cli(
        [
            *tiny_overrides(cache),
            "model.hidden_size=64",
            "optim.lr_core=1e6",
            "trainer.epochs=3",
            "logger=jsonl",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    out = _out(proc)
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if "training looks diverged" in line]
    assert warnings and "at the range clamp during epoch" in warnings[0], out
    assert int(warnings[0].split("during epoch ")[1].split(";")[0]) <= 3


def test_stop_on_divergence_stops_and_keeps_the_checkpoints(cache, tmp_path):
    cfg = compose_config(
        tiny_overrides(
            cache,
            f"paths.output_dir={tmp_path}",
            "logger=jsonl",
            "model.hidden_size=64",
            "optim.lr_core=1e6",
            "trainer.epochs=5",
            "trainer.stop_on_divergence=true",
        )
    )
    start = time.monotonic()
    with pytest.raises(DivergenceError, match=r"training diverged, stopped after epoch 1 .*range clamp"):
        runner.train(cfg)
    assert time.monotonic() - start < 60
    assert checkpoint.load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 1
