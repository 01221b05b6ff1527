"""What a run shows people: its plots (class names, legends, the best epoch), its TensorBoard log (steps
that only move forward, the settings on the HParams dashboard) and honest figures from small runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import compose_config, run_cli, tiny_cache, tiny_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader

from nwtrain.data.datagen import FeatureDataset
from nwtrain.runs import train
from nwtrain.training import plots
from nwtrain.training.evaluation import stratified_batches


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.append(fig) or path)
    yield kept
    for fig in kept:
        plots.plt.close(fig)


def history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss/total": 1 / e,
            "loss/cross_entropy": 0.9 / e,
            "loss/val_cross_entropy": 1.1 / e,
            "accuracy/train": 0.5 + e / 100,
            "accuracy/val": 0.5 + e / 120,
        }
        for e in range(1, epochs + 1)
    ]


def test_training_curves_mark_the_best_epoch_with_validation_loss_and_integer_ticks(figures, tmp_path):
    plots.plot_training_curves(history(3), tmp_path / "c.png", "run", best_epoch=2)
    loss_ax, acc_ax = figures[0].axes
    assert "validation cross entropy" in [line.get_label() for line in loss_ax.lines]
    for ax in (loss_ax, acc_ax):
        assert "best epoch (2)" in [line.get_label() for line in ax.lines]
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_raster_labels_the_output_populations_by_class(figures, tmp_path):
    spikes = {"hidden": np.zeros((10, 8)), "out": np.eye(10, 6)}
    plots.plot_spike_raster(spikes, 8e-3, tmp_path / "r.png", "run", classes=["yes", "no"], population=3)
    out_ax = figures[0].axes[-1]
    assert [t.get_text() for t in out_ax.get_yticklabels()] == ["yes", "no"]
    assert list(out_ax.get_yticks()) == [1.0, 4.0]


def test_weight_signs_have_a_legend_and_no_blocks_without_a_block_rule(figures, tmp_path):
    w = {"syn_out": np.array([[0.1, -0.2, 0.3, 0.1, 0.1, 0.2]])}
    plots.plot_weight_signs(w, tmp_path / "w.png", "chip")
    plots.plot_weight_signs(w, tmp_path / "w.png", "lif", block=None)
    chip, lif = figures
    assert chip.axes[0].get_title() == "syn_out: 1/2 blocks mix signs"
    assert [t.get_text() for t in chip.legends[0].get_texts()][-1] == "block of 5 mixing signs"
    assert "blocks" not in lif.axes[0].get_title() and not lif.axes[0].patches
    assert [t.get_text() for t in lif.legends[0].get_texts()] == ["weight -", "weight 0", "weight +"]


def test_tensorboard_steps_only_move_forward_and_hparams_name_the_settings(tmp_path_factory, tmp_path):
    cache = tiny_cache(tmp_path_factory)
    train(compose_config(tiny_overrides(cache, f"paths.output_dir={tmp_path}", "trainer.epochs=3")))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy/test")] == [3]  # after epoch 3's scalars, not before
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.hidden_size"].number_value == 8 and hparams["seed"].number_value == 42
    assert hparams["variant.name"].string_value == "mismatch_aware" and "optim._partial_" not in hparams


def test_limited_evaluation_takes_every_class_in_turn():
    # A split in class order, as the readers build it: the first two batches of 4 hold only class 0.
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 4)
    dataset = FeatureDataset(torch.zeros(20, 3, 2), labels, [f"{i}.wav" for i in range(20)], False)
    loader = DataLoader(dataset, batch_size=4)
    batches = list(stratified_batches(loader, 2))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 0], [1, 2, 0, 1]]
    assert stratified_batches(loader, None) is loader and stratified_batches(loader, 5) is loader


def test_debug_run_evaluates_every_class_and_says_when_the_output_is_silent(tmp_path_factory, tmp_path):
    cache = tiny_cache(tmp_path_factory)
    overrides = ["trainer=debug", "data.dataloader_config.batch_size=2", "model.input_gain=1e-9"]
    proc = run_cli([*tiny_overrides(cache, *overrides), f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    # No input, no spikes: every clip is a tie-break towards "yes", right on half of the balanced clips.
    assert summary["best_val_acc"] == 0.5 and summary["test_acc"] == 0.5
    assert "test: the output layer fired no spike on 4 of 4 clips; their class is a tie-break" in proc.stdout
