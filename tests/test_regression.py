"""Rate regression (SDK tutorial 7): the SDK's regression layout, the synthetic pattern set, the rate
objective, and ``experiment=pattern_h1v2`` as a user runs it."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import checkpoint_config, compose_config, read_jsonl

from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.data import NWaveDataGen, NWaveDataloaderConfig, ensure_pattern_set, read_regression
from nwtrain.errors import ConfigError, DataError
from nwtrain.runs import train
from nwtrain.training.objectives import RateRegression


def _regression_root(tmp_path, tone_writer, n=6, steps=125, channels=2):
    root = tmp_path / "reg"
    (root / "target").mkdir(parents=True)
    for i in range(n):
        tone_writer(root / "wavs" / f"clip{i}.wav", 500.0 + 100 * i, seed=i)
        torch.save(torch.full((steps, channels), 0.1 * i), root / "target" / f"clip{i}.pt")
    return root


def test_regression_layout_loads_targets_per_clip(tmp_path, tone_writer):
    root = _regression_root(tmp_path, tone_writer)
    gen = NWaveDataGen(
        root,
        task="regression",
        dataloader_config=NWaveDataloaderConfig(batch_size=2, val_split=0.34, test_split=0.0),
        use_cache=False,
        progress=False,
    )
    data = gen.datasets()
    assert [len(data[s]) for s in ("train", "val", "test")] == [4, 2, 0]
    assert gen.classes == ["channel 0", "channel 1"]
    x, y = next(iter(gen.dataloaders()["val"]))
    assert x.shape == (2, 125, gen.n_channels) and y.shape == (2, 125, 2) and y.dtype == torch.float32
    # Each clip keeps its own target: clip i's target is 0.1 * i everywhere.
    names = [int(n.removeprefix("wavs/clip").removesuffix(".wav")) for n in data["val"].filenames]
    assert torch.allclose(data["val"].labels[:, 0, 0], 0.1 * torch.tensor(names, dtype=torch.float32))


def test_a_one_dimensional_target_is_one_channel(tmp_path, tone_writer):
    root = _regression_root(tmp_path, tone_writer, n=3)
    for i in range(3):
        torch.save(torch.zeros(125), root / "target" / f"clip{i}.pt")
    gen = NWaveDataGen(root, task="regression", use_cache=False, progress=False)
    assert gen.datasets()["train"].labels.shape[1:] == (125, 1)


def _save_target(value):
    return lambda root: torch.save(value, root / "target" / "clip1.pt")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: (root / "target" / "clip1.pt").unlink(),
            r"no target for 1 clip\(s\), e\.g\. \['clip1\.wav'\]",
        ),
        (_save_target(torch.zeros(124, 2)), r"clip1\.pt: target has 124 steps, the clip has 125"),
        (
            _save_target({"rate": [1]}),
            r"clip1\.pt: a target must be a tensor of shape \(T,\) or \(T, C\), got dict",
        ),
        (lambda root: (root / "target" / "clip1.pt").write_bytes(b"junk"), r"clip1\.pt: cannot be read"),
        (_save_target(torch.full((125, 2), float("nan"))), r"clip1\.pt: target holds non-finite values"),
    ],
)
def test_bad_regression_data_names_the_file(tmp_path, tone_writer, damage, message):
    root = _regression_root(tmp_path, tone_writer, n=3)
    damage(root)
    with pytest.raises(DataError, match=message):
        NWaveDataGen(root, task="regression", use_cache=False, progress=False).datasets()


def test_a_class_folder_tree_is_not_regression_data(speaker_tree):
    with pytest.raises(
        DataError, match=r"is not regression data: it needs wavs/<stem>\.wav and target/<stem>\.pt"
    ):
        read_regression(speaker_tree)


def test_pattern_set_is_deterministic_in_the_regression_layout(tmp_path):
    a = ensure_pattern_set(tmp_path / "a", n_clips=3, seed=1)
    b = ensure_pattern_set(tmp_path / "b", n_clips=3, seed=1)
    assert a.name == b.name and ensure_pattern_set(tmp_path / "a", n_clips=3, seed=1) == a
    assert sorted(p.name for p in (a / "wavs").iterdir()) == [f"pattern_{i:04d}.wav" for i in range(3)]
    for i in range(3):
        ta = torch.load(a / "target" / f"pattern_{i:04d}.pt")
        assert torch.equal(ta, torch.load(b / "target" / f"pattern_{i:04d}.pt"))
        assert (a / "wavs" / f"pattern_{i:04d}.wav").read_bytes() == (
            b / "wavs" / f"pattern_{i:04d}.wav"
        ).read_bytes()
        # One channel per tone, a rate in [0, peak] rising while its tone sounds: some channel is on at
        # every step past the first rise, and at most one tone sounds at a time.
        assert ta.shape == (125, 4) and 0 <= ta.min() and ta.max() <= 1.0
        assert (ta[10:].max(dim=1).values > 0.5).all()
    assert not list(tmp_path.glob("**/*.partial-*"))


def _reference_rates(spikes, w):
    out = torch.zeros_like(spikes)
    for t in range(spikes.shape[1]):
        lo = max(0, t - w + 1)
        out[:, t] = spikes[:, lo : t + 1].mean(dim=1)
    return out


def test_rate_objective_is_a_causal_moving_average_with_r2_score():
    objective = RateRegression(window_steps=4)
    spikes = (torch.rand(3, 20, 2, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    assert torch.allclose(objective.rates(spikes), _reference_rates(spikes, 4))
    target = objective.rates(spikes)
    assert objective.loss(spikes, target) == 0
    sums = {}
    objective.add_sums(sums, spikes, target)
    assert objective.score(sums) == pytest.approx(1.0)
    # A constant rate at each channel's mean target scores 0: R^2 is measured against that.
    flat = torch.ones_like(spikes) * target.mean(dim=(0, 1))
    sums = {}
    objective.add_sums(sums, flat, target)
    assert objective.score(sums) == pytest.approx(0.0, abs=1e-9)
    # The loss passes gradients to every spike in the window (surrogate gradients reach the network).
    x = spikes.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: objective.loss(s, target), (x,))
    with pytest.raises(ValueError, match="window_steps must be >= 1"):
        RateRegression(window_steps=0)


def _pattern_overrides(tmp_path, *extra):
    return [
        "experiment=pattern_h1v2",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'run'}",
        "data.data_parent.n_clips=24",
        "data.progress=false",
        "logger.progress=false",
        *extra,
    ]


def test_pattern_experiment_trains_scores_r2_and_plots_rates(tmp_path):
    summary = train(
        compose_config(_pattern_overrides(tmp_path, "trainer.epochs=2", "trainer.anneal_epochs=2"))
    )
    out = tmp_path / "run"
    assert summary["metric"] == "r2" and summary["chip"] == "h1v2" and summary["variant"] == "hardware_aware"
    history = read_jsonl(out / "metrics.jsonl")
    assert summary["best_val_r2"] == max(r["r2/val"] for r in history)
    assert np.isfinite(summary["test_r2"]) and "test_acc" not in summary
    assert {"loss/rate_mse", "loss/val_rate_mse", "r2/train"} <= set(history[0])
    assert (out / "plots" / "rates.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["placement"]["fits"]
    # Class-decision tools refuse it by name rather than score targets as labels.
    with pytest.raises(ConfigError, match=r"^ckpt_path: .*best\.ckpt is a rate-regression run"):
        evaluate_checkpoint(
            checkpoint_config("eval", out / "checkpoints" / "best.ckpt", tmp_path / "e", tmp_path)
        )


@pytest.mark.slow
def test_pattern_experiment_loss_falls_tenfold(tmp_path):
    """Issue 18's acceptance: the shipped experiment, as the README runs it, ends with a rate error a
    tenth of its first epoch's or less."""
    summary = train(compose_config(_pattern_overrides(tmp_path, "data.data_parent.n_clips=400")))
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    first, last = history[0], history[-1]
    assert last["loss/rate_mse"] <= first["loss/rate_mse"] / 10
    assert last["loss/val_rate_mse"] <= first["loss/val_rate_mse"] / 10
    assert summary["best_val_r2"] > 0.8
