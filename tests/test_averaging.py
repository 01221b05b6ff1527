"""The weight average (``trainer.ema_decay``): its recurrence and the configs that refuse it (what a run
scores and saves with it, and its resume: tests/test_runner.py)."""

import pytest
import torch
from cli_helpers import compose_config

from nwtrain.config import validate_config
from nwtrain.errors import ConfigError
from nwtrain.training.averaging import WeightAverage


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
