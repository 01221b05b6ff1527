"""The core map: a network's neurons placed onto its chip's cores.

The front-end neurons (one per filter) are the chip's own and are not placed. The other layers, hidden
layers then the output population, fill the cores in order, greedily: a layer takes what is left of the
current core and goes on into the next, so a feed-forward layer may span cores, as the chips allow.
Recurrent connections exist only inside a core, so a recurrent layer that spans cores is recurrent within
each of its cores: ``Placement.core_ids`` gives the core of every neuron, from which that mask is built.
A chip without cores (the LIF baseline) puts every layer on one core of unbounded size.

No torch at import: the simulator and config validation place networks too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nwtrain.chips import ChipSpec

OFF_CHIP = -1  # the core id of a neuron beyond the chip's last core (the network does not fit)


@dataclass(frozen=True)
class Placement:
    """Where each neuron of each layer sits: ``segments[layer]`` is a list of ``(core, first, stop)``, the
    layer's neurons ``first .. stop - 1`` on ``core`` (``OFF_CHIP`` past the last core)."""

    spec: ChipSpec
    layers: dict[str, int]
    segments: dict[str, list[tuple[int, int, int]]]

    @property
    def needed(self) -> int:
        return sum(self.layers.values())

    @property
    def fits(self) -> bool:
        return not self.spec.core_sizes or self.needed <= self.spec.n_neurons

    def message(self) -> str:
        """``H1v1 has 256 neurons in 4 cores of 64; this model needs 1124 (hidden 1024, out 100)``."""
        counts = ", ".join(f"{name} {n}" for name, n in self.layers.items())
        return f"{self.spec.budget()}; this model needs {self.needed} ({counts})"

    def core_ids(self, layer: str):
        """The core of every neuron of ``layer``, a LongTensor ``[n]`` (``OFF_CHIP`` past the last core)."""
        import torch

        ids = torch.empty(self.layers[layer], dtype=torch.long)
        for core, first, stop in self.segments[layer]:
            ids[first:stop] = core
        return ids

    def to_json(self) -> dict:
        """The placement as export.json and summary.json record it."""
        return {
            "core_sizes": list(self.spec.core_sizes) or None,
            "neurons": self.needed,
            "fits": self.fits,
            "layers": [
                {"name": name, "neurons": n, "cores": [list(s) for s in self.segments[name]]}
                for name, n in self.layers.items()
            ],
        }


def place(spec: ChipSpec, layers: Mapping[str, int]) -> Placement:
    """Place ``layers`` (name -> neurons, in network order: hidden layers, then the output population)
    onto ``spec``'s cores by greedy fill. It never fails: ``Placement.fits`` says whether the network fits,
    ``Placement.message`` what it needs."""
    layers = dict(layers)
    bad = {name: n for name, n in layers.items() if isinstance(n, bool) or not isinstance(n, int) or n < 1}
    if bad:
        raise ValueError(f"layer sizes must be positive ints, got {bad}")
    capacity = list(spec.core_sizes) if spec.core_sizes else [sum(layers.values())]
    core, used = 0, 0
    segments: dict[str, list[tuple[int, int, int]]] = {}
    for name, n in layers.items():
        segments[name], first = [], 0
        while first < n:
            if core == len(capacity):
                segments[name].append((OFF_CHIP, first, n))
                break
            take = min(n - first, capacity[core] - used)
            segments[name].append((core, first, first + take))
            first += take
            used += take
            if used == capacity[core]:
                core, used = core + 1, 0
    return Placement(spec, layers, segments)
