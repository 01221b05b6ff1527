"""The vendor SDK's ``nwavesdk.loss`` import path: a tutorial's ``from nwavesdk.loss import ...``
runs as ``from nwtrain.loss import ...``. The code lives in the modules imported below
(docs/architecture.md)."""

from nwtrain.training.losses import (
    balanced_population_mse,
    firing_rate_target_mse_loss,
    population_counts,
    topology_loss,
    weight_magnitude_loss,
)

__all__ = [
    "balanced_population_mse",
    "firing_rate_target_mse_loss",
    "population_counts",
    "topology_loss",
    "weight_magnitude_loss",
]
