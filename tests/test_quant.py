"""Quantisation-aware training: level grids, hard clamp, and exports that reproduce the weights exactly."""

import pytest
import torch

from nwtrain.core.quant import BinaryQuantizer, FixedPointQuantizer, RangeQuantizer, TernaryQuantizer
from nwtrain.core.topology import violating_blocks
from nwtrain.layers import H1v1Frontend, H1v1Synapse, H1v2Synapse, LIFSynapse, prepare_net

ALL = [
    RangeQuantizer(5, 0.9),
    RangeQuantizer(3, 1.66),
    FixedPointQuantizer(8, 4),
    TernaryQuantizer(0.7),
    BinaryQuantizer(),
]


def test_five_bits_give_32_levels_over_the_h1v1_range():
    q = RangeQuantizer(5, 0.9)
    levels = q.levels()
    assert levels.numel() == 32
    torch.testing.assert_close(levels[[0, -1]], torch.tensor([-0.9, 0.9]))
    torch.testing.assert_close(levels.diff(), torch.full((31,), 1.8 / 31))
    w = torch.linspace(-3, 3, 10001)
    wq = q(w)
    assert torch.unique(wq).numel() == 32
    assert wq.min() == levels[0] and wq.max() == levels[-1]
    assert ((wq - w).abs()[w.abs() <= 0.9] <= q.step / 2 + 1e-6).all()


EVEN_GRIDS = [RangeQuantizer(5, 0.9), RangeQuantizer(5, 1.66), RangeQuantizer(4, 1.0)]


@pytest.mark.parametrize("q", EVEN_GRIDS, ids=repr)
def test_a_range_grid_keeps_the_sign_of_the_smallest_weights(q):
    """Zero is not a level of an even grid: a weight too small to move ``w + limit`` in float32 programs to
    the level next to zero on its own side, so a sign-uniform block stays uniform on the chip (a trained
    H1v1 block once programmed a 2.6e-8 to -0.029 next to four positive weights)."""
    w = torch.tensor([2.6e-8, 1e-12, 5e-6, 0.0, -1e-12, -2.6e-8, -5e-6])
    wq = q(w)
    assert (wq[:4] > 0).all() and (wq[4:] < 0).all()
    torch.testing.assert_close(wq.abs(), torch.full_like(wq, q.step / 2))
    block = torch.tensor([[0.24106495, 0.08141389, 0.09132421, 0.33625215, 2.6448969e-08]])
    assert not violating_blocks(q(block)) and not violating_blocks(q(-block))


@pytest.mark.parametrize("q", ALL, ids=repr)
def test_export_reproduces_fake_quantised_weights_bit_for_bit(q):
    w = torch.randn(13, 64) * 0.5
    exported = q.export(w)
    assert exported.codes.dtype == torch.int32
    assert torch.equal(exported.dequantize(), q(w))


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_fixed_point_grid(bits):
    q = FixedPointQuantizer(bits, bits // 2)
    w = torch.randn(5000) * 4
    wq = q(w)
    assert torch.unique(wq).numel() <= 2**bits
    inside = q.pass_mask(w)
    torch.testing.assert_close(wq[inside], torch.round(w[inside] * 2 ** (bits // 2)) / 2 ** (bits // 2))


def test_ternary_codes_threshold_and_scale():
    w = torch.tensor([-1.0, -0.2, 0.05, 0.3, 1.2])
    q = TernaryQuantizer(threshold_ratio=0.7)  # threshold = 0.7 * mean|w| = 0.385
    exported = q.export(w)
    assert exported.codes.tolist() == [-1, 0, 0, 0, 1]
    torch.testing.assert_close(exported.scale, torch.tensor(1.1))
    assert q.sparsity(w) == pytest.approx(0.6)
    assert set(torch.unique(q.export(torch.randn(128, 784) * 0.1).codes).tolist()) == {-1, 0, 1}


def test_binary_codes_and_scale():
    w = torch.tensor([-0.4, 0.0, 0.2])
    exported = BinaryQuantizer().export(w)
    assert exported.codes.tolist() == [-1, 1, 1]
    torch.testing.assert_close(BinaryQuantizer()(w), torch.tensor([-0.2, 0.2, 0.2]))


@pytest.mark.parametrize("cls,limit", [(H1v1Synapse, 0.9), (H1v2Synapse, 1.66)])
def test_chip_synapse_quantization_bit(cls, limit):
    syn = cls(13, 64, quantization_bit=5, init=lambda w: torch.nn.init.uniform_(w, -2, 2))
    prepare_net(syn)
    w = syn.effective_weight().detach()
    levels = RangeQuantizer(5, limit).levels()
    assert torch.isin(w, levels).all()
    assert w.abs().max() <= limit + 1e-6


def test_frontend_quantization():
    fe = prepare_net(H1v1Frontend(16, quantization_bit=5, init=lambda w: w.copy_(torch.linspace(-1, 1, 16))))
    assert torch.isin(fe.effective_weight().detach(), RangeQuantizer(5, 0.9).levels()).all()


def test_lif_synapse_accepts_any_scheme():
    syn = prepare_net(LIFSynapse(6, 4, quantizer=TernaryQuantizer(0.7)))
    scale = syn.quantizer.export(syn.weight).scale
    assert set((syn.effective_weight() / scale).round().unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_invalid_quantizer_arguments():
    with pytest.raises(ValueError, match="quantization_bit"):
        RangeQuantizer(17, 0.9)
    with pytest.raises(ValueError, match="limit"):
        RangeQuantizer(5, 0.0)
    with pytest.raises(ValueError, match="frac_bits"):
        FixedPointQuantizer(4, 4)
