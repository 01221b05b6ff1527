"""``init_weights``: dense and recurrent weights a chip can hold from the first step."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from nwtrain.core.layers import routed_weight
from nwtrain.core.topology import SIGN_BLOCK_SIZE


@torch.no_grad()
def init_weights(
    model: nn.Module,
    bound_fraction: float = 0.5,
    excitatory: float = 0.5,
    generator: torch.Generator | None = None,
) -> None:
    """Draw every routed weight of ``model`` (the dense synapses and RC layers' ``recurrent_weights`` whose
    module has sign blocks) as the chip holds it: each row's blocks of 5 take one sign (+ with probability
    ``excitatory``), and magnitudes are uniform in ``[0, bound_fraction * limit]`` of the module's weight
    range. An RC layer's masked connections stay 0. Front ends (no sign blocks) are left as they are.

    Call it before SignAnnealing parametrises the weights; SignAnnealing then starts from uniform blocks.
    """
    if not 0 < bound_fraction <= 1 or not 0 <= excitatory <= 1:
        raise ValueError(
            f"need 0 < bound_fraction <= 1 and 0 <= excitatory <= 1, got {bound_fraction}, {excitatory}"
        )
    generator = generator or torch.Generator().manual_seed(0)
    for module in model.modules():
        if not getattr(module, "SIGN_BLOCKS", False) or module.WEIGHT_LIMIT_V is None:
            continue
        for name in ("weight", "recurrent_weights"):
            tensor = getattr(module, name, None)
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
                continue
            if parametrize.is_parametrized(module, name):
                raise ValueError("init_weights sets the plain weights: call it before SignAnnealing")
            rows, cols = tensor.shape
            n_blocks = -(-cols // SIGN_BLOCK_SIZE)
            signs = torch.where(torch.rand(rows, n_blocks, 1, generator=generator) < excitatory, 1.0, -1.0)
            magnitude = torch.rand(rows, n_blocks, SIGN_BLOCK_SIZE, generator=generator)
            w = (signs * magnitude * bound_fraction * module.WEIGHT_LIMIT_V).reshape(rows, -1)[:, :cols]
            tensor.copy_(w.to(tensor))
            if name == "recurrent_weights":
                tensor.copy_(routed_weight(module))  # masked connections exactly 0
