"""Signs that training has diverged while every number stays finite: a learning rate or an input gain far
too large drives the weights into the range clamp, silences the output or freezes the loss, and the run
would otherwise end at chance without a word.

``divergence_signs`` is the pure core: it reads the epoch records (``metrics.jsonl``'s lines) alone.
``DivergenceMonitor`` reports each sign once per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# "Most" of the dense weights, averaged over an epoch's batches: a trained network keeps a few weights at
# the range limit, a diverged one nearly all.
CLAMP_FRACTION = 0.5
# A training loss within this relative distance of its first-epoch value has not moved.
LOSS_TOLERANCE = 1e-3
CLAMP_KEY = "hardware/weights_at_clamp"


def clamped_fraction(synapses: Iterable[nn.Module]) -> float | None:
    """The fraction of the weights of ``synapses`` at or beyond their range clamp (the quantiser's limit);
    None when none of them is clamped (unquantised weights have no range to hit)."""
    at, total = 0, 0
    with torch.no_grad():
        for s in synapses:
            limit = getattr(s.quantizer, "limit", None)
            if limit is not None:
                at += int((s.weight.abs() >= limit * (1 - 1e-6)).sum())
                total += s.weight.numel()
    return at / total if total else None


def divergence_signs(history: list[dict], epochs: int, output_layer: str = "out") -> dict[str, str]:
    """The signs of divergence after the last record of ``history`` (``epochs`` planned), by kind:
    ``clamp`` (most dense weights at the range clamp over the epoch), and from the middle of the run on
    ``silent`` (no output neuron spiked in the whole validation pass) and ``flat_loss`` (the training loss
    has not moved from its first-epoch value). The last two wait for mid-run: a network often starts with
    a silent output and a loss at chance for some epochs."""
    if not history:
        return {}
    last = history[-1]
    epoch = last["epoch"]
    signs = {}
    clamped = last.get(CLAMP_KEY)
    if clamped is not None and clamped > CLAMP_FRACTION:
        signs["clamp"] = f"{clamped:.0%} of the dense weights sat at the range clamp during epoch {epoch}"
    middle = max(2, math.ceil(epochs / 2))
    if epoch >= middle and last.get(f"firing_rate_val/{output_layer}") == 0:
        signs["silent"] = f"every output neuron was silent for the whole validation pass of epoch {epoch}"
    losses = [r["loss/total"] for r in history]
    if len(losses) >= middle and all(
        abs(loss - losses[0]) <= LOSS_TOLERANCE * abs(losses[0]) for loss in losses[1:]
    ):
        signs["flat_loss"] = (
            f"the training loss has not moved from its first-epoch value {losses[0]:.4g} in {epoch} epochs"
        )
    return signs


class DivergenceMonitor:
    """``update(history)`` after each epoch: the signs that hold now, and in ``new`` those not reported
    before in this run."""

    def __init__(self, epochs: int, output_layer: str):
        self.epochs = epochs
        self.output_layer = output_layer
        self.reported: set[str] = set()
        self.new: list[str] = []

    def update(self, history: list[dict]) -> dict[str, str]:
        signs = divergence_signs(history, self.epochs, self.output_layer)
        self.new = [text for kind, text in signs.items() if kind not in self.reported]
        self.reported |= signs.keys()
        return signs
