"""What nwtrain trusts in the files it reads back: a stored config is data, never a recipe for calling code.

A checkpoint, a run folder's ``.hydra/config.yaml`` and an artefact's ``export.json`` can come from anyone.
The training config stored in a checkpoint is rebuilt with Hydra's ``instantiate`` (the data set and the
model), which calls whatever a ``_target_`` names, nested nodes included. So every ``_target_`` anywhere in
a config read from a file must be one of ``TRUSTED_TARGETS``, the project's own builders and the torch
optimisers a config may pick, named exactly; anything else refuses the whole file before a single node is
built. A blocklist could not do this: any importable callable with a side effect (``builtins.open``,
``shutil.copyfile``, ``zipimport.zipimporter.load_module``, ``torch.load``) is a gadget.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from nwtrain.errors import UntrustedFileError

# The nwtrain classes and functions a stored training config may name; conf/ names no others (a test
# checks that every _target_ under conf/ outside hydra/ and hparams_search/ is listed).
NWTRAIN_TARGETS = frozenset(
    {
        "nwtrain.data.NWaveDataGen",
        "nwtrain.data.NWaveDataloaderConfig",
        "nwtrain.data.ensure_embedded_corpus",
        "nwtrain.data.ensure_pattern_set",
        "nwtrain.init.auto_init",
        "nwtrain.models.KWSNet",
        "nwtrain.core.quant.BinaryQuantizer",
        "nwtrain.core.quant.FixedPointQuantizer",
        "nwtrain.core.quant.TernaryQuantizer",
        "nwtrain.training.objectives.Classification",
        "nwtrain.training.objectives.RateRegression",
        "nwtrain.optim.CosineSchedule",
        "nwtrain.optim.SignAnnealing",
        "nwtrain.surrogate.atan",
        "nwtrain.surrogate.fast_sigmoid",
        "nwtrain.surrogate.sigmoid",
        "nwtrain.surrogate.straight_through",
        "nwtrain.surrogate.triangle",
    }
)
# Optimisers a user may choose with optim.optimizer._target_; they only take parameters and numbers.
OPTIMIZER_TARGETS = frozenset(
    f"torch.optim.{name}" for name in ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "SGD")
)
TRUSTED_TARGETS = NWTRAIN_TARGETS | OPTIMIZER_TARGETS
# Builders that moved when the package took its core / training / deploy layout: a config stored before
# names the old place, and is read as naming the new one.
MOVED_TARGETS = {
    f"nwtrain.objectives.{name}": f"nwtrain.training.objectives.{name}"
    for name in ("Classification", "RateRegression")
}
TARGET_KEY = "_target_"


def targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted location of its node, value)`` of a ``_target_`` key in a tree of dicts and lists."""
    if isinstance(node, dict):
        if TARGET_KEY in node:  # a node's own target before those of its arguments
            yield where or "the top level", node[TARGET_KEY]
        for key, value in node.items():
            yield from targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from targets(value, f"{where}[{i}]")


def migrate_targets(text: str) -> str:
    """A stored YAML config with each ``_target_`` of ``MOVED_TARGETS`` renamed to its new place."""
    return re.sub(
        rf"({TARGET_KEY}:\s*)(\S+)", lambda m: m.group(1) + MOVED_TARGETS.get(m.group(2), m.group(2)), text
    )


def check_config(tree: Any, source: str) -> None:
    """Refuse ``tree`` (a config as plain dicts and lists) if any ``_target_`` in it is not trusted; the
    message names ``source`` (the file) and each refused target with its location."""
    refused = [(at, t) for at, t in targets(tree) if not isinstance(t, str) or t not in TRUSTED_TARGETS]
    if refused:
        raise UntrustedFileError(
            f"{source}: refused {_listed(refused)}: a stored config may only name nwtrain's own builders and "
            f"torch optimisers (docs/cli.md, 'What loading trusts')"
        )


def check_data(tree: Any, source: str) -> None:
    """Refuse ``tree`` (a file that describes, never builds, e.g. ``export.json``) if it holds any
    ``_target_`` at all."""
    refused = list(targets(tree))
    if refused:
        raise UntrustedFileError(f"{source}: refused {_listed(refused)}: this file is data and names no code")


def _listed(refused: list[tuple[str, Any]]) -> str:
    return ", ".join(f"_target_ {target!r} at {at}" for at, target in refused)
