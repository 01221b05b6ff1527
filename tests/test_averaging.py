"""The weight average (``trainer.ema_decay``): its recurrence, what it scores and saves, resume, and the
configs that refuse it."""

import json

import pytest
import torch
from cli_helpers import compose_config, deterministic, read_jsonl, tiny_cache, tiny_overrides

from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.config import validate_config
from nwtrain.errors import ConfigError
from nwtrain.runs import train
from nwtrain.training.averaging import WeightAverage
from nwtrain.training.checkpoint import load_checkpoint


def _linear(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(value)
    return layer


def _set(layer: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(value)


def test_the_average_follows_its_recurrence_and_applied_weights_come_back():
    layer = _linear(1.0)
    average = WeightAverage(layer, 0.75)
    _set(layer, 5.0)
    average.update(layer)
    _set(layer, -3.0)
    average.update(layer)
    expected = 0.75 * (0.75 * 1.0 + 0.25 * 5.0) + 0.25 * -3.0
    with average.applied(layer) as model:
        assert model is layer
        for p in layer.parameters():
            torch.testing.assert_close(p, torch.full_like(p, expected))
    for p in layer.parameters():
        assert torch.equal(p, torch.full_like(p, -3.0))
    with pytest.raises(RuntimeError, match="inside"), average.applied(layer):
        raise RuntimeError("inside")
    assert all(torch.equal(p, torch.full_like(p, -3.0)) for p in layer.parameters())


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, True, "0.9", None])
def test_a_decay_outside_zero_one_is_named(decay):
    with pytest.raises(ValueError, match=rf"ema decay must be a number in \(0, 1\), got {decay!r}"):
        WeightAverage(_linear(0.0), decay)


def test_loading_an_average_that_lacks_a_weight_is_named():
    average = WeightAverage(_linear(0.0), 0.9)
    with pytest.raises(KeyError, match="lack"):
        average.load({"weight": torch.zeros(2, 3)})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture
def run(cache, tmp_path):
    def _run(name, *overrides):
        out = tmp_path / name
        return train(
            compose_config(
                tiny_overrides(
                    cache,
                    f"paths.output_dir={out}",
                    "logger=jsonl",
                    "experiment=yesno_lif",
                    "trainer.ema_decay=0.9",
                    *overrides,
                )
            )
        )

    return _run


def test_validation_and_the_saved_model_are_the_average(run, tmp_path, cache):
    """The best epoch's validation loss, as the run recorded it, is what ``nwtrain-eval`` measures on the
    best checkpoint: validation scored the weights the checkpoint gives every later command, the average,
    not the trained weights it also holds."""
    summary = run("a", "trainer.epochs=2")
    best = load_checkpoint(tmp_path / "a" / "checkpoints" / "best.ckpt")
    assert best["model"].keys() == best["trained_model"].keys()
    assert any(not torch.equal(best["model"][k], best["trained_model"][k]) for k in best["trained_model"])
    cfg = compose_config(
        [
            f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'best.ckpt'}",
            f"paths.output_dir={tmp_path / 'eval'}",
            f"paths.cache_dir={cache}",
            "split=val",
        ],
        config_name="eval",
    )
    measured = evaluate_checkpoint(cfg)
    record = read_jsonl(tmp_path / "a" / "metrics.jsonl")[summary["best_epoch"] - 1]
    assert measured["acc"] == summary["best_val_acc"] == record["accuracy/val"]
    assert measured["loss"] == pytest.approx(record["loss/val_cross_entropy"], rel=1e-6)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["splits"]["val"]["loss"] == measured["loss"]


def test_a_resumed_run_averages_as_an_uninterrupted_one(run, tmp_path):
    straight = run("straight", "trainer.epochs=3")
    run("first", "trainer.epochs=1")
    resumed = run(
        "resumed", "trainer.epochs=3", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    )
    assert deterministic(read_jsonl(tmp_path / "resumed" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
    for key in ("best_val_acc", "best_epoch", "test_acc", "test_confusion"):
        assert resumed[key] == straight[key]
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.ckpt") for n in ("straight", "resumed"))
    for part in ("model", "trained_model"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_resume_refuses_a_changed_decay(run, tmp_path):
    run("first")
    with pytest.raises(ConfigError, match=r"trainer\.ema_decay: 0\.9 -> 0\.99"):
        run(
            "other", "trainer.ema_decay=0.99", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=yesno_lif", "trainer.ema_decay=1"], r"^trainer\.ema_decay: 1 is out of range: .* < 1"),
        (["experiment=yesno_lif", "trainer.ema_decay=0"], r"^trainer\.ema_decay: 0 is out of range"),
        (["experiment=yesno_lif", "trainer.ema_decay=fast"], r"^trainer\.ema_decay: must be a number"),
        (["experiment=yesno_h1v1_plain", "trainer.ema_decay=0.99"], r"^trainer\.ema_decay: 0\.99: H1v1's"),
        (["experiment=yesno_h1v2_hw", "trainer.ema_decay=0.99"], r"^trainer\.ema_decay: 0\.99: H1v2's"),
    ],
)
def test_configs_that_refuse_a_weight_average_name_the_field(overrides, message):
    cfg = compose_config([*overrides, "paths.output_dir=x"])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
