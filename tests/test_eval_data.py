"""Evaluating a checkpoint on other data (issue 20): the checkpoint's input settings carry over, a
test-only tree needs no training loader, and overrides that would change nothing are refused."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import CONF_DIR, checkpoint_config, compose_config, tiny_cache, tiny_overrides

import nwtrain
from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.config import validate_config
from nwtrain.errors import ConfigError, DataError
from nwtrain.runs import train
from nwtrain.training.provenance import provenance


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def lif_checkpoint(cache, tmp_path_factory) -> Path:
    """A LIF run on the sixth-octave bank (38 channels at 16 kHz, as the LIF real-speech experiments)."""
    out = tmp_path_factory.mktemp("lif")
    train(
        compose_config(
            tiny_overrides(
                cache,
                "experiment=yesno_lif",
                "data.bands_per_octave=6",
                "logger=jsonl",
                f"paths.output_dir={out}",
            )
        )
    )
    return out / "checkpoints" / "best.ckpt"


def _eval(ckpt, tmp_path, cache, *overrides):
    cfg = checkpoint_config("eval", ckpt, tmp_path / "eval", cache, *overrides)
    return evaluate_checkpoint(cfg, overrides)


def test_other_data_takes_the_checkpoints_input_settings(
    lif_checkpoint, cache, tmp_path, mini_speech_commands
):
    # data=speech_commands has the chip bank (2 bands per octave) and all its words: the model's 6 bands
    # and its two words come from the checkpoint.
    result = _eval(
        lif_checkpoint,
        tmp_path,
        cache,
        "data=speech_commands",
        f"paths.speech_commands_dir={mini_speech_commands}",
    )
    assert result["samples"] == 6


def test_a_changed_input_setting_is_named(lif_checkpoint, cache, tmp_path, mini_speech_commands):
    with pytest.raises(DataError, match=r"38 channels\): data.bands_per_octave=2 \(trained with 6\)"):
        _eval(
            lif_checkpoint,
            tmp_path,
            cache,
            "data=speech_commands",
            "data.bands_per_octave=2",
            f"paths.speech_commands_dir={mini_speech_commands}",
        )


def test_a_test_only_tree_evaluates(lif_checkpoint, cache, tmp_path, mini_speech_commands):
    clips = sorted(
        p.relative_to(mini_speech_commands).as_posix() for p in mini_speech_commands.glob("*/*.wav")
    )
    clips = [c for c in clips if not c.startswith("_")]
    (mini_speech_commands / "testing_list.txt").write_text("\n".join(clips) + "\n")
    (mini_speech_commands / "validation_list.txt").write_text("")
    result = _eval(
        lif_checkpoint,
        tmp_path,
        cache,
        "data=speech_commands",
        f"paths.speech_commands_dir={mini_speech_commands}",
    )
    assert result["samples"] == 24  # yes and no: 4 speakers x 3 takes each


def test_a_data_path_without_data_is_refused(lif_checkpoint, cache, tmp_path):
    with pytest.raises(
        ConfigError, match=r"paths.real_data_dir: the checkpoint's data config holds resolved"
    ):
        _eval(lif_checkpoint, tmp_path, cache, f"paths.real_data_dir={tmp_path}")


def test_folder_data_needs_its_folder(tmp_path):
    cfg = compose_config(["data=folder", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^data.data_parent: is not set"):
        validate_config(cfg)


def test_the_fsdd_example_composes():
    """The example command in conf/data/fsdd.yaml's header."""
    [line] = [x for x in (CONF_DIR / "data" / "fsdd.yaml").read_text().splitlines() if "nwtrain " in x]
    overrides = shlex.split(line.split("nwtrain", 1)[1])
    cfg = compose_config([*overrides, "paths.output_dir=/tmp/unused"])
    assert cfg.data.dataloader_config.test_split == 0 and list(cfg.data.test_speakers) == ["george"]


@pytest.mark.parametrize(
    "entry, words",
    [
        ("train", ["nwtrain: train", "== Config groups", "experiment: digits_embedded, digits_embedded_lif"]),
        ("predict", ["nwtrain-predict: the class", "audio: ???"]),
    ],
)
def test_help_describes_each_command(entry, words, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", f"from nwtrain.__main__ import {entry}; {entry}()", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(w in out for w in words) and "powered by Hydra" not in out


def test_version_and_provenance(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nwtrain", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"nwtrain {nwtrain.__version__}\n"
    origin = provenance()
    assert origin["torch"] == torch.__version__ and origin["nwtrain"] == nwtrain.__version__
    assert origin["git_commit"] is None or len(origin["git_commit"].removesuffix("-dirty")) == 40


def test_the_readme_python_snippet_runs(tmp_path):
    """The README's runnable Python block, as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [snippet] = [b for b in readme.split("```python\n")[1:] if "prepare_net(torch.nn.Sequential" in b]
    code = snippet.split("```")[0]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("torch.Size([4, 125, 32]) firing rate ")


def test_speed_copies_train_and_evaluation_scores_the_recordings(cache, tmp_path, caplog):
    out = tmp_path / "run"
    cfg = compose_config(
        tiny_overrides(
            cache,
            "experiment=yesno_lif",
            "data.train_speed_factors=[0.9,1.1]",
            "logger=jsonl",
            f"paths.output_dir={out}",
        )
    )
    with caplog.at_level("INFO", logger="nwtrain"):
        train(cfg)
    assert "| 108 train, 12 val samples" in caplog.text  # 36 recorded training clips and two copies each
    result = _eval(out / "checkpoints" / "best.ckpt", tmp_path, cache, "split=train")
    assert result["samples"] == 36
