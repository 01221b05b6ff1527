"""The chips a network is built for: one ``ChipSpec`` each, in a module of its own (``h1v1``, ``h1v2``,
``lif``) that holds the chip's constants, the classes a network on it is made of, its capabilities and its
design rules. Models, config validation, evaluation, export and the simulator ask the spec; nothing else
names a chip. Adding a chip is one module calling ``register`` (imported at the end of this file) and one
``conf/chip`` file (docs/chip_model.md, "Chips as specs").

Each chip module defines its layer and synapse classes on the generic ones of ``nwtrain.core.layers``;
a spec hands them out through ``parts()``, called when a network is built.
"""

# `# fmt: skip` below keeps a layer's keyword arguments on two lines: one per line would make each chip's
# parts a column of names that reads longer than what it builds.

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChipParts:
    """What a network on the chip is made of (``nwtrain.models.KWSNet`` builds through these).

    ``frontend(n_channels, gain, quantization_bit, device)`` is the per-channel gain before the first
    layer; ``dense(n_in, n_out, init, quantization_bit, stddev, device)`` a routed synapse;
    ``neurons(n, taus, dt, ileak_mismatch, spike_grad, clamp_grad, device, recurrence=None,
    adaptation_taus=None)`` a spiking layer (``recurrence``: an RC layer's ``layer_topology``,
    ``recurrent_mask``, ``quantization_bit`` and ``stddev``, which the chip maps onto its layer class;
    ``adaptation_taus``: the time constants, s, of an adaptation current, None for none). Options the
    chip lacks are refused by ``ChipSpec.check`` before these are called, so each may ignore them.
    ``layer`` and ``synapses`` are the classes the exporter recognises a network of this chip by.
    """

    layer: type
    synapses: tuple[type, ...]
    frontend: Callable
    dense: Callable
    neurons: Callable


class DesignRuleError(ValueError):
    """An option the chip does not have: ``option``, its ``value`` and ``reason``."""

    def __init__(self, option: str, value, reason: str):
        super().__init__(f"{option}={value!r}: {reason}")
        self.option, self.value, self.reason = option, value, reason


# Option -> (the capability it needs, what a chip without it lacks). An option counts as set when truthy.
RULES = {
    "stddev": ("synaptic_mismatch", "has no synaptic mismatch model"),
    "ileak_mismatch": ("leak_mismatch", "has no leak mismatch model"),
    "clamp_grad": ("membrane_clamp", "has no membrane clamp"),
    "frontend_delays_s": (
        "delays",
        "has no synaptic delays (a spike reaches its targets in the step it fires)",
    ),
    "sign_annealing": ("sign_blocks", "has no sign blocks to anneal"),
    "recurrent": ("recurrence", "has no recurrent connections"),
    "adaptation_taus_s": ("adaptation", "has no neuron adaptation (the vendor documents none)"),
}


@dataclass(frozen=True)
class ChipSpec:
    """One chip: what it is, what it can do and what a network on it is made of.

    ``core_sizes`` are the neurons of each core after the front end (the front-end neurons, one per
    filter, are not counted); empty: no cores and no budget (the LIF baseline). ``weight_bits`` None: no
    weight memory. ``frontend_bands_per_octave`` None: any filterbank density; else the chip's own.
    ``transfer`` describes the dense synapse's transfer in the artefact (``nwtrain.deploy.chipsim``) and
    ``artefact_constants`` the constants export.json records beyond those of the layer class.
    """

    name: str  # model.chip / chip.name
    label: str  # in messages: "H1v1", "the LIF baseline"
    parts: Callable[[], ChipParts] = field(repr=False)
    weight_limit: float
    weight_bits: int | None
    frontend_gain: float  # the initial front-end gain when model.frontend_gain is null
    core_sizes: tuple[int, ...] = ()
    frontend_bands_per_octave: int | None = None
    synaptic_mismatch: bool = False
    leak_mismatch: bool = False
    threshold_variation: bool = False
    recurrence: bool = False
    delays: bool = False
    adaptation: bool = False  # an adaptation current in the hidden neurons (adLIF)
    membrane_clamp: bool = False
    sign_blocks: bool = False
    nir: bool = False  # the artefact gets a NIR graph (NIR has no linear-leak chip neuron)
    syn_offset_stddev: float = 0.0  # empirical synaptic offset of one instance (0: no synaptic mismatch)
    transfer: dict = field(default_factory=lambda: {"kind": "identity"})
    artefact_constants: dict = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return sum(self.core_sizes)

    @property
    def mismatch(self) -> bool:
        return self.synaptic_mismatch or self.leak_mismatch

    def budget(self) -> str:
        """``H1v1 has 256 neurons in 4 cores of 64``."""
        sizes = sorted(set(self.core_sizes))
        cores = (
            f"{len(self.core_sizes)} cores of {sizes[0]}"
            if len(sizes) == 1
            else f"{len(self.core_sizes)} cores of {', '.join(map(str, self.core_sizes[:-1]))} and "
            f"{self.core_sizes[-1]}"
        )
        return f"{self.label} has {self.n_neurons} neurons in {cores}"

    def check(self, **options) -> None:
        """Raise ``DesignRuleError`` for the first option (``RULES``, and ``bands_per_octave``) that is set
        but that this chip does not have."""
        for option, value in options.items():
            if option == "bands_per_octave":
                own = self.frontend_bands_per_octave
                if value is not None and own is not None and value != own:
                    having = _having("frontend_bands_per_octave", None)
                    raise DesignRuleError(
                        option, value, f"{self.label}'s front end is the chip's {own} bands per octave; "
                        f"another filterbank density is an option of {having}"
                    )  # fmt: skip
                continue
            capability, lack = RULES[option]
            if value and not getattr(self, capability):
                having = _having(capability, True)
                offered = f"; {option} is an option of {having}" if having else ""
                raise DesignRuleError(option, value, f"{self.label} {lack}{offered}")


def _having(attribute: str, value) -> str:
    """The labels of the registered chips whose ``attribute`` is ``value``, as prose."""
    labels = [c.label for c in CHIPS.values() if getattr(c, attribute) is value]
    return " and ".join(labels)


CHIPS: dict[str, ChipSpec] = {}


def register(spec: ChipSpec) -> ChipSpec:
    """Make ``spec`` known by its name (a chip module calls this once); returns it."""
    if spec.name in CHIPS:
        raise ValueError(f"chip {spec.name!r} is already registered")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in spec.core_sizes):
        raise ValueError(f"chip {spec.name!r}: core_sizes must be positive ints, got {spec.core_sizes!r}")
    CHIPS[spec.name] = spec
    return spec


def get_chip(name: str) -> ChipSpec:
    """The spec of chip ``name``; ValueError naming the known chips otherwise."""
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r}; choose one of {', '.join(CHIPS)}")
    return CHIPS[name]


# The shipped chips register themselves; the LIF baseline first, the order messages list them in.
from nwtrain.chips import lif, h1v1, h1v2  # noqa: E402, F401, I001
