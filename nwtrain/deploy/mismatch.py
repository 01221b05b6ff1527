"""Monte-Carlo chip instances: a network on one simulated chip, the seeds that make every chip the same on
every split, and the yield statistics of a chip population (``nwtrain-eval mismatch.instances=N``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Chip instance i draws its mismatch from seed + MISMATCH_SEED_OFFSET + i * CHIP_SEED_STRIDE: the same chip
# on every split, and streams apart from training's and the nominal evaluation's.
MISMATCH_SEED_OFFSET = 4_000_037
CHIP_SEED_STRIDE = 7919


@dataclass(frozen=True)
class Mismatch:
    """The chip population: ``instances`` chips with synaptic offsets of ``stddev`` and, if ``ileak``,
    log-normal leak factors; chips are accepted at ``target_acc`` (None: ``target_fraction`` x the
    accuracy of the ideal, mismatch-free chip)."""

    instances: int
    stddev: float
    ileak: bool
    target_acc: float | None
    target_fraction: float

    def target(self, ideal_acc: float) -> float:
        return self.target_acc if self.target_acc is not None else self.target_fraction * ideal_acc


class ChipInstance(nn.Module):
    """``model`` on one chip: its mismatch is drawn from a generator re-seeded with ``seed`` at every
    forward, so every batch sees the same chip (the draws' shapes do not depend on the batch)."""

    def __init__(self, model: nn.Module, seed: int):
        super().__init__()
        self.model = model
        self.seed = int(seed)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model(x, torch.Generator().manual_seed(self.seed))

    @property
    def n_classes(self) -> int:
        return self.model.n_classes

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.model.layer_names

    @property
    def traces(self) -> dict[str, torch.Tensor]:
        return self.model.traces


def instance_seed(seed: int, i: int) -> int:
    return seed + MISMATCH_SEED_OFFSET + i * CHIP_SEED_STRIDE


def yield_stats(accs: list[float], target: float) -> dict:
    """Mean, std (sample, ddof 1), 5th percentile (linear interpolation), extremes and the yield: the
    fraction of instances whose accuracy reaches ``target``."""
    a = np.asarray(accs, dtype=np.float64)
    return {
        "instances": len(a),
        "accs": a.tolist(),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "p5": float(np.percentile(a, 5)),
        "min": float(a.min()),
        "max": float(a.max()),
        "target_acc": target,
        # Accuracies are k / n; the tolerance keeps a target computed as a product from rounding them out.
        "yield": float((a >= target - 1e-9).mean()),
    }
