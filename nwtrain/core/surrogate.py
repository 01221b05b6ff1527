"""Surrogate gradients for the spike non-linearity.

A spike is ``H(x)`` with ``x = membrane - threshold`` and ``H`` the Heaviside step (``x >= 0`` fires). Its
true derivative is zero almost everywhere, so the backward pass uses a smooth stand-in ``dH/dx ~ g(x)``.
Each surrogate is a small callable object: ``spike = surrogate(x)``; ``surrogate.grad(x)`` is ``g(x)``,
written once so the reference path and the fused kernels share it.
"""

from __future__ import annotations

import math

import torch


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


class Surrogate:
    """Heaviside forward, ``grad`` backward. Subclasses define ``grad`` and ``__repr__``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(x, self)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FastSigmoid(Surrogate):
    """g(x) = 1 / (1 + slope * |x|)^2 (Zenke & Ganguli 2018, SuperSpike)."""

    def __init__(self, slope: float = 25.0):
        self.slope = float(slope)

    def grad(self, x):
        return 1.0 / (1.0 + self.slope * x.abs()) ** 2

    def __repr__(self):
        return f"fast_sigmoid(slope={self.slope})"


class Sigmoid(Surrogate):
    """g(x) = slope * s(slope x) * (1 - s(slope x)), s the logistic function."""

    def __init__(self, slope: float = 25.0):
        self.slope = float(slope)

    def grad(self, x):
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1.0 - s)

    def __repr__(self):
        return f"sigmoid(slope={self.slope})"


class ATan(Surrogate):
    """g(x) = (alpha / 2) / (1 + (pi alpha x / 2)^2), the derivative of arctan (Fang et al. 2021)."""

    def __init__(self, alpha: float = 2.0):
        self.alpha = float(alpha)

    def grad(self, x):
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)

    def __repr__(self):
        return f"atan(alpha={self.alpha})"


class Triangle(Surrogate):
    """g(x) = max(0, 1 - |x| / width) / width: a piecewise-linear bump of unit area."""

    def __init__(self, width: float = 0.5):
        self.width = float(width)

    def grad(self, x):
        return torch.clamp(1.0 - x.abs() / self.width, min=0.0) / self.width

    def __repr__(self):
        return f"triangle(width={self.width})"


class StraightThrough(Surrogate):
    """g(x) = 1: the spike passes gradients unchanged."""

    def grad(self, x):
        return torch.ones_like(x)

    def __repr__(self):
        return "straight_through()"


def fast_sigmoid(slope: float = 25.0) -> FastSigmoid:
    return FastSigmoid(slope)


def sigmoid(slope: float = 25.0) -> Sigmoid:
    return Sigmoid(slope)


def atan(alpha: float = 2.0) -> ATan:
    return ATan(alpha)


def triangle(width: float = 0.5) -> Triangle:
    return Triangle(width)


def straight_through() -> StraightThrough:
    return StraightThrough()
