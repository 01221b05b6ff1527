"""The vendor SDK's ``nwavesdk.metrics`` import path: a tutorial's ``from nwavesdk.metrics import ...``
runs as ``from nwtrain.metrics import ...``. The code lives in the modules imported below
(docs/architecture.md)."""

from nwtrain.training.metrics import accuracy, accuracy_population, spike_counts

__all__ = ["accuracy", "accuracy_population", "spike_counts"]
