"""What the commands print when something is wrong or the output is piped: one line naming the fix, lines
that do not wrap."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from cli_helpers import CONF_DIR, compose_config, run_cli, tiny_cache, tiny_overrides

from nwtrain.cli import check_choices
from nwtrain.config import PROJECT_ROOT


@pytest.mark.parametrize(
    "args, message",
    [
        (["experiment=yesno_h1v1_hww"], "experiment=yesno_h1v1_hww is not an option of"),
        (["experiment=yesno_h1v1_hw,yesno_lfi", "seed=1,2"], "did you mean yesno_lif or"),
        (["chip=h3"], "chip=h3 is not an option of"),
    ],
)
def test_a_mistyped_group_option_is_one_line_with_the_nearest_names(args, message):
    with pytest.raises(SystemExit, match=message) as caught:
        check_choices(args, CONF_DIR)
    assert "\n" not in str(caught.value)


def test_fields_sweeps_and_existing_options_pass():
    check_choices(
        [
            "experiment=yesno_h1v1_hw,yesno_lif",
            "model.hidden_size=30",
            "seed=range(1,3)",
            "hydra/launcher=local",
            "hydra/sweeper=optuna",
            "data.words=[yes,no]",
            "trainer=debug",
        ],
        CONF_DIR,
    )


def test_the_command_refuses_a_mistyped_experiment_in_one_line(tmp_path):
    proc = run_cli(["experiment=yesno_h1v1_hww"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"nwtrain: experiment=yesno_h1v1_hww is not an option of {CONF_DIR / 'experiment'}; did you mean "
        "yesno_h1v1_hw or yesno_h1v2_hw or yesno_sc_h1v1_hw?"
    ]


def test_a_missing_mandatory_value_is_one_line(tmp_path):
    proc = run_cli([f"hydra.run.dir={tmp_path / 'e'}"], tmp_path, entry="eval_main")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(lines) == 1
    assert lines[0].endswith("ckpt_path: has no value; give ckpt_path=<value> on the command line")


def test_real_data_dir_is_relative_to_the_checkout_and_a_missing_one_says_where_from(tmp_path, monkeypatch):
    monkeypatch.delenv("NWTRAIN_REAL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert compose_config([]).paths.real_data_dir == f"{PROJECT_ROOT}/../shared/data"
    proc = run_cli(["experiment=yesno_sc_lif", f"paths.real_data_dir={tmp_path / 'nope'}"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    nope = tmp_path / "nope"
    assert (
        f"paths.real_data_dir: {nope} is not a folder (a command-line value, else the default "
        f"{PROJECT_ROOT}/../shared/data); data.data_parent {nope}/speech_commands lies in it. Set "
        "paths.real_data_dir=<folder> or NWTRAIN_REAL_DATA to the folder that holds speech_commands/ and "
        "fsdd/"
    ) in proc.stdout
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_piped_output_prints_whole_lines(tmp_path_factory, tmp_path):
    """``nwtrain ... | cat``: no console width to wrap at, so every log line and table row is whole."""
    cache = tiny_cache(tmp_path_factory)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nwtrain",
            f"hydra.run.dir={tmp_path / 'run'}",
            *tiny_overrides(cache, "experiment=yesno_h1v1_hw", "trainer.epochs=2"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    log_lines = [line for line in lines if re.match(r"\[\d\d:\d\d:\d\d\] ", line)]
    epochs = [line for line in log_lines if " INFO    epoch " in line]
    assert len(epochs) == 2
    assert all(re.search(r"epoch \d/2 \| loss .* \| val .*% \| [\d.]+ s$", e) for e in epochs)
    run_folder = [line for line in lines if "run folder" in line and "│" in line]
    assert run_folder and str(tmp_path / "run") in run_folder[0]
    # Everything else is the closing table: no line continues another.
    assert all(line.startswith(("[", " ", "┌", "│", "└", "├")) or not line for line in lines), lines


def test_a_run_on_ones_own_data_is_named_after_it(speaker_tree, tmp_path):
    args = [
        "data=folder",
        f"data.data_parent={speaker_tree}",
        "data.progress=false",
        "model.hidden_size=8",
        "trainer.epochs=1",
        "logger=jsonl",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = (tmp_path / "outputs").iterdir()
    assert run.name == "tones_h1v1_mismatch_aware" and (next(run.iterdir()) / "summary.json").is_file()
