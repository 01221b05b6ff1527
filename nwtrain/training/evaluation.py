"""Scoring a network on a split: the objective's score and loss, firing rates and, for a classifier, the
confusion matrix. The runner validates with it after every epoch and tests the best epoch; ``nwtrain-eval``
and ``nwtrain-export`` measure checkpoints with it."""

from __future__ import annotations

import itertools
import logging

import torch
from torch.utils.data import DataLoader, Subset

from nwtrain.training.objectives import Classification

log = logging.getLogger(__name__)

# Offsets from trainer.seed of the evaluation generators: fixed chip instances, distinct from the training
# draws. Validation and test are scored on the same instances (batch k of either on the same chip), so the
# two lists differ only in their clips: a best epoch picked on one chip sequence is then not measured on
# another, which would widen the gap by the chip-to-chip spread.
EVAL_SEED_OFFSETS = {"val": 1_000_003, "test": 1_000_003, "train": 3_000_017}


@torch.no_grad()
def evaluate(
    model,
    loader: DataLoader | None,
    *,
    device,
    seed: int,
    limit: int | None = None,
    objective=None,
):
    """The objective's score (by its ``metric`` key: ``acc`` for a classifier, the default) and task loss,
    the firing rate per layer and, for a classifier, the confusion matrix (rows: label) and the number of
    ``silent`` clips (no output spike: their class is a tie-break) over ``loader``; None for an empty
    split. ``limit`` batches take clips of every class in turn (:func:`stratified_batches`). Chip
    instances come from a generator seeded with ``seed``."""
    if loader is None or len(loader.dataset) == 0:
        return None
    objective = objective or Classification()
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    sums: dict = {"samples": 0, "loss": 0.0}
    rates = dict.fromkeys(model.layer_names, 0.0)
    for batch in stratified_batches(loader, limit):
        x, y = batch[0].to(device), batch[1].to(device)
        spikes = model(x, generator)
        sums["loss"] += objective.loss(spikes, y).item() * len(y)
        sums["samples"] += len(y)
        objective.add_sums(sums, spikes, y)
        for name, spk in model.traces.items():
            rates[name] += spk.mean().item() * len(y)
    n = sums["samples"]
    return {
        objective.metric: objective.score(sums),
        "loss": sums["loss"] / n,
        "samples": n,
        "firing_rate": {name: r / n for name, r in rates.items()},
        **objective.report(sums),
    }


def stratified_batches(loader: DataLoader, limit: int | None):
    """The batches of ``loader``, or with ``limit`` only that many, filled with the classes in turn: the
    first batches of a split in class order would hold one class, and a one-class evaluation reports any
    network that prefers that class (a silent one among them) as perfect."""
    if limit is None or limit >= len(loader):
        return loader
    if loader.dataset[0][1].is_floating_point():  # regression targets: no classes to take turns
        return itertools.islice(loader, limit)
    labels = torch.as_tensor([loader.dataset[i][1] for i in range(len(loader.dataset))])
    per_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    turns = [i for group in itertools.zip_longest(*per_class) for i in group if i is not None]
    subset = Subset(loader.dataset, turns[: limit * loader.batch_size])
    return DataLoader(subset, batch_size=loader.batch_size, shuffle=False)


def warn_if_silent(result: dict | None, what: str) -> None:
    """A warning when the output layer fired no spike on some clips of an evaluation: their predicted class
    is argmax's tie-break (the first class), not the network's decision."""
    if result and result.get("silent"):
        log.warning(
            "%s: the output layer fired no spike on %d of %d clips; their class is a tie-break towards the "
            "first class, not a decision",
            what,
            result["silent"],
            result["samples"],
        )
