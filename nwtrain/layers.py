"""The vendor SDK's ``nwavesdk.layers`` import path: a tutorial's ``from nwavesdk.layers import ...``
runs as ``from nwtrain.layers import ...``. The code lives in the modules imported below
(docs/architecture.md)."""

from nwtrain.chips.h1v1 import H1v1Frontend, H1v1Layer, H1v1Synapse
from nwtrain.chips.h1v2 import H1v2Layer, H1v2Synapse
from nwtrain.core.layers import (
    TOPOLOGIES,
    AdLIFLayer,
    ChipLayer,
    DelayLine,
    LIFLayer,
    LIFSynapse,
    SpikingLayer,
    Synapse,
    delay_steps,
    diagonal,
    prepare_net,
    recurrent_layers,
    resolve_device,
    routed_weight,
    snap_tau,
    spiking_layers,
    synapses,
)

__all__ = [
    "AdLIFLayer",
    "ChipLayer",
    "DelayLine",
    "H1v1Frontend",
    "H1v1Layer",
    "H1v1Synapse",
    "H1v2Layer",
    "H1v2Synapse",
    "LIFLayer",
    "LIFSynapse",
    "SpikingLayer",
    "Synapse",
    "TOPOLOGIES",
    "delay_steps",
    "diagonal",
    "prepare_net",
    "recurrent_layers",
    "resolve_device",
    "routed_weight",
    "snap_tau",
    "spiking_layers",
    "synapses",
]
