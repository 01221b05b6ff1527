"""The vendor SDK's ``nwavesdk.surrogate`` import path: a tutorial's ``from nwavesdk.surrogate import ...``
runs as ``from nwtrain.surrogate import ...``. The code lives in the modules imported below
(docs/architecture.md)."""

from nwtrain.core.surrogate import (
    ATan,
    FastSigmoid,
    Sigmoid,
    StraightThrough,
    Surrogate,
    Triangle,
    atan,
    fast_sigmoid,
    sigmoid,
    straight_through,
    triangle,
)

__all__ = [
    "ATan",
    "FastSigmoid",
    "Sigmoid",
    "StraightThrough",
    "Surrogate",
    "Triangle",
    "atan",
    "fast_sigmoid",
    "sigmoid",
    "straight_through",
    "triangle",
]
