"""The software leaky integrate-and-fire baseline: no chip, so no cores, no budget and no weight memory;
exponential leak, threshold 1, subtraction reset; its hidden neurons may adapt (``AdLIFLayer``, the
research option ``adaptation_taus_s`` of ``KWSNet``). Its front end is a per-channel gain made of its synapse
(``nwtrain.models.kws.diagonal``)."""

# `# fmt: skip` below keeps a layer's keyword arguments on two lines: one per line would make each chip's
# parts a column of names that reads longer than what it builds.

from torch import nn

from nwtrain.chips import ChipParts, ChipSpec, register
from nwtrain.core.layers import AdLIFLayer, LIFLayer, LIFSynapse, diagonal
from nwtrain.core.quant import RangeQuantizer

# LIF has no chip range; its threshold (1.0) is the natural unit: a single weight beyond it makes a spike
# on its own, so the soft wall and the quantiser range of the baseline sit there.
WEIGHT_LIMIT = 1.0
# design: one unit of filterbank envelope moves a front-end membrane by 0.57 of its threshold per step, as
# on H1v1 (0.5 -> 11.7 nA -> 0.117 V of 0.204 V).
FRONTEND_GAIN = 0.57


def _parts() -> ChipParts:
    def quantizer(bits):
        return None if bits is None else RangeQuantizer(bits, WEIGHT_LIMIT)

    def frontend(n_channels, gain, quantization_bit, device):
        return diagonal(LIFSynapse)(
            n_channels, init=lambda w: nn.init.constant_(w, gain), quantizer=quantizer(quantization_bit),
            device=device,
        )  # fmt: skip

    def dense(n_in, n_out, init, quantization_bit, stddev, device):
        return LIFSynapse(n_in, n_out, init=init, quantizer=quantizer(quantization_bit), device=device)

    def neurons(
        n, taus, dt, ileak_mismatch, spike_grad, clamp_grad, device, recurrence=None, adaptation_taus=None
    ):
        # The LIF layer takes its recurrent grid as a quantiser, and has no mismatch.
        rc = {k: v for k, v in (recurrence or {}).items() if k not in ("quantization_bit", "stddev")}
        if recurrence:
            rc["quantizer"] = quantizer(recurrence["quantization_bit"])
        if adaptation_taus is not None:
            rc["adaptation_taus"] = adaptation_taus
        layer = LIFLayer if adaptation_taus is None else AdLIFLayer
        return layer(n, taus=taus, dt=dt, spike_grad=spike_grad, device=device, **rc)

    return ChipParts(LIFLayer, (LIFSynapse,), frontend, dense, neurons)


SPEC = register(
    ChipSpec(
        name="lif",
        label="the LIF baseline",
        parts=_parts,
        weight_limit=WEIGHT_LIMIT,
        weight_bits=None,
        frontend_gain=FRONTEND_GAIN,
        delays=True,
        recurrence=True,
        adaptation=True,
        nir=True,
    )
)
