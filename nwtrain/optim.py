"""The vendor SDK's ``nwavesdk.optim`` import path: a tutorial's ``from nwavesdk.optim import ...``
runs as ``from nwtrain.optim import ...``. The code lives in the modules imported below
(docs/architecture.md)."""

from nwtrain.training.annealing import SignAnnealing, SignBlocks, bake_sign_blocks, sign_parametrize
from nwtrain.training.schedule import CosineSchedule

__all__ = ["CosineSchedule", "SignAnnealing", "SignBlocks", "bake_sign_blocks", "sign_parametrize"]
