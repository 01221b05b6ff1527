"""Quantisation-aware training: fake quantisers with a straight-through estimator (STE).

Every quantiser maps a float weight tensor to integer level codes and back,

    w_q = codes * scale + offset,

and in training returns ``w_q`` forward while the backward pass lets the gradient through unchanged
(``dL/dw = dL/dw_q``), except where a hard clamp cut the weight (there the gradient is zero, so the
optimiser is not pushed further outside the range; the weight-magnitude loss pulls it back).

``export(w)`` returns the codes, scale and offset; ``QuantizedWeights.dequantize()`` reproduces the
fake-quantised weights bit for bit because both go through ``decode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeights:
    """Integer level codes plus the affine map back to weights: ``w_q = codes * scale + offset``."""

    codes: torch.Tensor
    scale: float | torch.Tensor
    offset: float

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return decode(self.codes, self.scale, self.offset, dtype)


def decode(codes: torch.Tensor, scale, offset: float, dtype: torch.dtype) -> torch.Tensor:
    """The one code-to-weight map, shared by the fake-quantiser forward and the exported artefact."""
    return codes.to(dtype) * scale + offset


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
        q = quantizer.export(w)
        ctx.save_for_backward(quantizer.pass_mask(w))
        return q.dequantize(w.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (mask,) = ctx.saved_tensors
        return grad_out * mask.to(grad_out.dtype), None


class Quantizer:
    """Base class: subclasses define ``export`` (and ``pass_mask`` where they clamp)."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return _FakeQuantize.apply(w, self)

    def export(self, w: torch.Tensor) -> QuantizedWeights:
        raise NotImplementedError

    def pass_mask(self, w: torch.Tensor) -> torch.Tensor:
        """Where the STE passes the gradient: everywhere unless a hard clamp cut the weight."""
        return torch.ones_like(w, dtype=torch.bool)

    def levels(self, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """The fixed grid of representable weights, or None when the grid depends on the weights."""
        return None


class RangeQuantizer(Quantizer):
    """``2**bits`` evenly spaced levels spanning ``[-limit, limit]`` inclusive, with a hard clamp.

    This is the chip's weight memory: ``quantization_bit=5`` gives 32 charge levels over the H1v1
    range [-0.9, 0.9] (tutorial 4, section 6). With an even count of levels zero is not a level: every
    programmed weight has a sign, which keeps the sign-block constraint unambiguous.
    """

    def __init__(self, bits: int, limit: float):
        if not 1 <= int(bits) <= 16:
            raise ValueError(f"quantization_bit must be in 1..16, got {bits}")
        if not limit > 0:
            raise ValueError(f"weight limit must be > 0, got {limit}")
        self.bits = int(bits)
        self.limit = float(limit)
        self.n_levels = 2**self.bits
        self.step = 2.0 * self.limit / (self.n_levels - 1)

    def export(self, w):
        # The nearest level, counted from zero rather than from -limit: 2**bits levels sit at the odd
        # multiples of step / 2, so it is floor(w / step) levels above the first positive one. Counted from
        # -limit, a weight too small to change w + limit in floating point (2.6e-8 against 0.9) rounds to
        # either level next to zero and can break a sign-uniform block on the chip.
        codes = torch.floor(w.detach() / self.step) + self.n_levels // 2
        return QuantizedWeights(codes.clamp_(0, self.n_levels - 1).to(torch.int32), self.step, -self.limit)

    def pass_mask(self, w):
        return w.abs() <= self.limit

    def levels(self, dtype=torch.float32):
        return decode(torch.arange(self.n_levels), self.step, -self.limit, dtype)

    def __repr__(self):
        return f"RangeQuantizer(bits={self.bits}, limit={self.limit})"


class FixedPointQuantizer(Quantizer):
    """Signed fixed point Q(bits-frac).frac: ``w_q = round(w * 2**frac) / 2**frac``, saturating."""

    def __init__(self, bits: int = 8, frac_bits: int = 4):
        if not 2 <= int(bits) <= 32 or not 0 <= int(frac_bits) < int(bits):
            raise ValueError(f"need 2 <= bits <= 32 and 0 <= frac_bits < bits, got {bits}, {frac_bits}")
        self.bits, self.frac_bits = int(bits), int(frac_bits)
        self.code_min, self.code_max = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        self.scale = 2.0**-self.frac_bits

    def export(self, w):
        codes = torch.round(w.detach() / self.scale).clamp_(self.code_min, self.code_max)
        return QuantizedWeights(codes.to(torch.int32), self.scale, 0.0)

    def pass_mask(self, w):
        return (w >= self.code_min * self.scale) & (w <= self.code_max * self.scale)

    def levels(self, dtype=torch.float32):
        return decode(torch.arange(self.code_min, self.code_max + 1), self.scale, 0.0, dtype)

    def __repr__(self):
        return f"FixedPointQuantizer(bits={self.bits}, frac_bits={self.frac_bits})"


class TernaryQuantizer(Quantizer):
    """Ternary weights ``{-1, 0, +1} * scale`` (Li & Liu 2016, Ternary Weight Networks).

    Weights with ``|w| <= threshold_ratio * mean|w|`` become 0; the scale is the mean magnitude of the
    surviving weights, the least-squares optimal value for the chosen support.
    """

    def __init__(self, threshold_ratio: float = 0.7):
        self.threshold_ratio = float(threshold_ratio)

    def export(self, w):
        w = w.detach()
        threshold = self.threshold_ratio * w.abs().mean()
        codes = torch.where(w > threshold, 1, torch.where(w < -threshold, -1, 0)).to(torch.int32)
        kept = codes != 0
        scale = w.abs()[kept].mean() if bool(kept.any()) else w.new_tensor(0.0)
        return QuantizedWeights(codes, scale, 0.0)

    def sparsity(self, w: torch.Tensor) -> float:
        return float((self.export(w).codes == 0).float().mean())

    def __repr__(self):
        return f"TernaryQuantizer(threshold_ratio={self.threshold_ratio})"


class BinaryQuantizer(Quantizer):
    """Binary weights ``{-1, +1} * mean|w|`` (Rastegari et al. 2016, XNOR-Net scaling); 0 maps to +1."""

    def export(self, w):
        w = w.detach()
        codes = torch.where(w >= 0, 1, -1).to(torch.int32)
        return QuantizedWeights(codes, w.abs().mean(), 0.0)

    def __repr__(self):
        return "BinaryQuantizer()"
