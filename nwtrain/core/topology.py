"""The chips' sign-block routing constraint (tutorial 1, section 4f).

Weights are stored ``[inputs, outputs]``. For each input row, output columns ``[0:5), [5:10), ...`` form a
block whose weights must share one sign; a last block shorter than 5 (e.g. 2 outputs) is a block too.

In-core recurrence reaches only the neurons of the spiking neuron's own core: ``core_block_mask``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIGN_BLOCK_SIZE = 5  # tutorial 1 section 4f: per input row, output columns [0:5), [5:10), ... share a sign


def block_view(w: torch.Tensor, block: int = SIGN_BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [I, O]`` as ``[I, ceil(O/block), block]`` zero-padded, with the mask of real entries."""
    n_in, n_out = w.shape
    pad = (-n_out) % block
    padded = F.pad(w, (0, pad)).reshape(n_in, -1, block)
    mask = F.pad(torch.ones_like(w, dtype=torch.bool), (0, pad)).reshape(n_in, -1, block)
    return padded, mask


def sign_per_block(w: torch.Tensor, block: int = SIGN_BLOCK_SIZE) -> torch.Tensor:
    """The sign each block agrees on, ``[I, n_blocks]``: the sign of the block's sum (the larger side by
    magnitude), +1 on a tie."""
    padded, _ = block_view(w.detach(), block)
    return torch.where(padded.sum(-1) >= 0, 1.0, -1.0).to(w.dtype)


def block_signs(w: torch.Tensor, block: int = SIGN_BLOCK_SIZE) -> torch.Tensor:
    """``sign_per_block`` spread over the block's entries, ``[I, O]``."""
    signs = sign_per_block(w, block)
    return signs.repeat_interleave(block, dim=1)[:, : w.shape[1]]


def sign_conflict(w: torch.Tensor, block: int = SIGN_BLOCK_SIZE) -> torch.Tensor:
    """Per-block minority magnitude ``(sum|w| - |sum w|) / 2``, ``[I, n_blocks]``; zero iff sign-uniform."""
    padded, _ = block_view(w, block)
    return 0.5 * (padded.abs().sum(-1) - padded.sum(-1).abs())


def violating_blocks(w: torch.Tensor, block: int = SIGN_BLOCK_SIZE) -> list[tuple[int, int]]:
    """``(input row, block index)`` of every block holding both strictly positive and negative weights."""
    padded, _ = block_view(w.detach(), block)
    bad = (padded > 0).any(-1) & (padded < 0).any(-1)
    return [tuple(ix) for ix in bad.nonzero().tolist()]


def core_block_mask(core_ids: torch.Tensor) -> torch.Tensor:
    """The connections in-core recurrence allows: ``mask[i, j] = core_ids[i] == core_ids[j]``, with
    ``core_ids[i]`` the core of neuron ``i`` (a spike reaches its own core only)."""
    core_ids = torch.as_tensor(core_ids)
    if core_ids.dim() != 1:
        raise ValueError(f"core_ids must be one core per neuron, shape [N], got {list(core_ids.shape)}")
    return core_ids[:, None] == core_ids[None, :]
