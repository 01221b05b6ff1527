"""Monte-Carlo chip yield (`nwtrain-eval mismatch.instances=N`): one fixed chip per instance, statistics that
repeat for a seed and change with it, the chip's mismatch on models trained without it, the histogram and
TensorBoard outputs, and the checks of the `mismatch` options."""

import json

import pytest
import torch
from cli_helpers import checkpoint_config, compose_config, tiny_cache, tiny_overrides
from torch.utils.data import DataLoader

from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.cli.export import export_checkpoint
from nwtrain.deploy.mismatch import ChipInstance, instance_seed, yield_stats
from nwtrain.errors import ConfigError
from nwtrain.runs import load_model, load_run, train
from nwtrain.training.evaluation import evaluate

# A tiny H1v1 run whose output layer fires (see test_deploy.py), trained without mismatch.
TINY = ["model.hidden_size=16", "trainer.epochs=10", "optim.lr_core=1e-2", "model.dense_init_bound=0.9"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpts(cache, tmp_path_factory):
    """``experiment -> best checkpoint`` of tiny runs, trained on first use."""
    root = tmp_path_factory.mktemp("yield_runs")
    done = {}

    def get(experiment):
        if experiment not in done:
            out = root / experiment
            cfg = tiny_overrides(
                cache, f"paths.output_dir={out}", "logger=jsonl", *TINY, f"experiment={experiment}"
            )
            done[experiment] = (out / "checkpoints" / "best.ckpt", train(compose_config(cfg)))
        return done[experiment]

    return get


def eval_cfg(ckpt, out, cache, *overrides):
    return checkpoint_config("eval", ckpt, out, cache, *overrides)


def run_eval(ckpt, out, cache, *overrides) -> dict:
    evaluate_checkpoint(eval_cfg(ckpt, out, cache, *overrides))
    return json.loads((out / "eval.json").read_text())


def test_yield_statistics():
    stats = yield_stats([0.5, 0.6, 0.7, 0.8, 0.9], target=0.7)
    assert stats["mean"] == pytest.approx(0.7) and stats["std"] == pytest.approx(0.158113883)
    assert stats["p5"] == pytest.approx(0.52)  # linear interpolation between the two lowest
    assert (stats["min"], stats["max"], stats["instances"]) == (0.5, 0.9, 5)
    assert stats["yield"] == pytest.approx(0.6)  # 0.7, 0.8 and 0.9 reach the target
    assert yield_stats([0.6 * 0.9 / 0.9], target=0.9 * (0.6 / 0.9))["yield"] == 1.0  # k/n = product target
    assert yield_stats([0.8], target=0.5)["std"] == 0.0


def test_the_same_seed_gives_identical_statistics_another_seed_other_chips(ckpts, cache, tmp_path):
    ckpt, _ = ckpts("yesno_h1v1_hw")
    options = ["split=all", "mismatch.instances=4", "mismatch.stddev=0.1"]
    first = run_eval(ckpt, tmp_path / "a", cache, "seed=1", *options)
    again = run_eval(ckpt, tmp_path / "b", cache, "seed=1", *options)
    other = run_eval(ckpt, tmp_path / "c", cache, "seed=2", *options)
    for split in ("train", "val", "test"):
        assert first["splits"][split]["mismatch"] == again["splits"][split]["mismatch"]
        # the nominal chip of a model trained without mismatch does not depend on the seed
        assert first["splits"][split]["acc"] == other["splits"][split]["acc"]
    accs = [[r["splits"][s]["mismatch"]["accs"] for s in ("train", "val", "test")] for r in (first, other)]
    assert accs[0] != accs[1]


def test_a_chip_instance_is_one_chip_for_every_batch(ckpts, cache, tmp_path):
    ckpt, _ = ckpts("yesno_h1v1_hw")
    run = load_run(eval_cfg(ckpt, tmp_path, cache), device=torch.device("cpu"))
    chips = load_model(run, stddev=0.02, ileak_mismatch=True)
    loader = run.data.loaders["train"]  # 48 clips in batches of 16
    chip = ChipInstance(chips, instance_seed(1, 0))
    draws = []
    for x, _ in loader:
        chip(x)
        draws.append((chips.syn_hidden._offset.clone(), chips.hidden.Vleak.clone()))
    assert len(draws) == 3 and all(
        torch.equal(d[0], draws[0][0]) and torch.equal(d[1], draws[0][1]) for d in draws
    )
    # Its accuracy is that of one draw over the whole split in a single batch.
    whole = DataLoader(loader.dataset, batch_size=len(loader.dataset))
    seed = instance_seed(1, 0)
    assert (
        evaluate(chip, loader, device="cpu", seed=0)["acc"]
        == evaluate(chips, whole, device="cpu", seed=seed)["acc"]
    )
    ChipInstance(chips, instance_seed(1, 1))(x)
    assert not torch.equal(chips.syn_hidden._offset, draws[0][0])


def test_chips_have_mismatch_even_when_training_had_none(ckpts, cache, tmp_path):
    ckpt, summary = ckpts("yesno_h1v1_hw")  # trained with stddev 0 and no leak mismatch
    report = run_eval(ckpt, tmp_path, cache, "mismatch.instances=3")
    assert report["mismatch"] == {
        "instances": 3,
        "stddev": 0.02,
        "ileak": True,
        "target_acc": None,
        "target_fraction": 0.9,
    }
    test = report["splits"]["test"]
    assert test["acc"] == summary["test_acc"]  # the nominal chip: the run's own test accuracy
    assert test["mismatch"]["ideal_acc"] == test["acc"]  # a model without mismatch is its own ideal chip
    assert test["mismatch"]["target_acc"] == pytest.approx(0.9 * test["acc"])
    run = load_run(eval_cfg(ckpt, tmp_path, cache), device=torch.device("cpu"))
    chips = load_model(run, stddev=0.02, ileak_mismatch=True)
    # Tutorial 4's split of the mismatch: dense synapses and the hidden and output leaks, no front end.
    assert (chips.syn_hidden.stddev, chips.syn_out.stddev, chips.frontend.stddev) == (0.02, 0.02, 0.0)
    assert (chips.hidden.ileak_mismatch, chips.out.ileak_mismatch, chips.frontend_layer.ileak_mismatch) == (
        True,
        True,
        False,
    )


def test_yield_outputs_histogram_and_tensorboard(ckpts, cache, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ckpt, _ = ckpts("yesno_h1v1_hw")
    report = run_eval(ckpt, tmp_path, cache, "mismatch.instances=3", "mismatch.target_acc=0.5")
    mc = report["splits"]["test"]["mismatch"]
    assert mc["target_acc"] == 0.5 and mc["yield"] == sum(a >= 0.5 for a in mc["accs"]) / 3
    assert (tmp_path / "mismatch_test.png").stat().st_size > 0
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    keys = ("mean", "std", "p5", "yield", "target_acc", "ideal_acc", "instance_accuracy")
    assert {f"mismatch/test/{k}" for k in keys} <= scalars
    assert "mismatch/test/accuracy" in events.Tags()["histograms"]
    assert [e.value for e in events.Scalars("mismatch/test/instance_accuracy")] == pytest.approx(mc["accs"])


@pytest.mark.parametrize("experiment", ["yesno_h1v1_plain", "yesno_h1v1_mismatch"])
def test_eval_projects_like_the_exporter_and_targets_the_ideal_chip(experiment, ckpts, cache, tmp_path):
    ckpt, _ = ckpts(experiment)
    report = run_eval(ckpt, tmp_path / "eval", cache, "project=true", "mismatch.instances=2")
    exported = export_checkpoint(
        checkpoint_config("export", ckpt, tmp_path / "export", cache, "project=true")
    )
    meta = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report["projection"] == meta["projection"]
    # The ideal chip is the programmed model without mismatch, what the exporter verifies; for the
    # mismatch-aware model it differs from the nominal evaluation, which draws mismatch per batch.
    mc = report["splits"]["test"]["mismatch"]
    assert mc["ideal_acc"] == exported["model_acc"]
    assert mc["target_acc"] == pytest.approx(0.9 * mc["ideal_acc"])


@pytest.mark.parametrize(
    ("experiment", "override", "message"),
    [
        ("yesno_lif", "mismatch.instances=2", "mismatch.instances: the LIF baseline has no mismatch model"),
        (
            "yesno_h1v2_hw",
            "mismatch.stddev=0.02",
            "mismatch.stddev: 0.02: H1v2 has no synaptic mismatch model",
        ),
        ("yesno_h1v1_hw", "mismatch.target_acc=1.5", r"mismatch.target_acc: must be a number in \[0, 1\]"),
        (
            "yesno_h1v1_hw",
            "mismatch.target_fraction=0",
            r"mismatch.target_fraction: must be a number in \(0, 1\]",
        ),
        ("yesno_h1v1_hw", "mismatch.instances=-1", "mismatch.instances: must be an integer >= 0"),
    ],
)
def test_bad_mismatch_options_name_the_field(experiment, override, message, ckpts, cache, tmp_path):
    ckpt, _ = ckpts(experiment)
    with pytest.raises(ConfigError, match=message):
        evaluate_checkpoint(eval_cfg(ckpt, tmp_path, cache, override))
