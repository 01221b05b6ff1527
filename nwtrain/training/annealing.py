"""SignAnnealing, the sign-block parametrisation of the chip synapses, and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from nwtrain.core.topology import block_view

# Parameters a sign-block module routes through the chip's crossbar (``[inputs, outputs]``).
SIGNED_PARAMETERS = ("weight", "recurrent_weights")
# The inverse of the magnitude bound starts a weight at or beyond the range at this fraction of it, where
# tanh' is still 2e-3 (Adam rescales it), rather than at an infinite underlying value.
MAX_INVERTED_FRACTION = 0.999
PARAMETRIZED_KEY = ".parametrizations."


class SignBlocks(nn.Module):
    """``torch.nn.utils.parametrize`` parametrisation of a ``[inputs, outputs]`` weight in row blocks of 5
    (``nwtrain.core.topology``): the underlying tensor ``theta`` maps to the weight the module exposes,

        v    = L * tanh(theta / L)                    magnitude bounded to the chip range [-L, L]
        z_b  = sum_b v / sum_b |v|                    the block's signed mean, in [-1, 1]
        S_b  = tanh(alpha * z_b) / tanh(alpha)        soft block sign (``hard``: sign(z_b), +1 on a tie)
        w    = S_b * |v|                              every weight of block b

    Every block is sign-uniform at every alpha (all its weights carry the sign of S_b); what hardens is
    the block's sign. At small alpha ``S_b ~ z_b``: a block whose weights disagree is weak and its sign
    moves with the gradient of every weight in it. As alpha grows, ``S_b -> sign(z_b)``: the sign stops
    moving and the weights keep their magnitudes; ``hard`` makes it exact. A block that agrees already
    (``|z_b| = 1``) is ``v`` itself at every alpha. ``L`` is None for a module without a chip range.

    ``mask`` (bool, the shape of the weight; None: every entry) are the connections that exist: ``v`` is
    exactly 0 elsewhere, so a missing connection neither shows a weight nor sways its block's sign (an RC
    layer's ``recurrent_mask``, shared with the layer, hence not saved twice).

    ``alpha`` and ``hard`` are buffers, so a checkpoint restores the exposed weights exactly.
    """

    def __init__(self, limit: float | None, alpha: float = 0.5, mask: torch.Tensor | None = None):
        super().__init__()
        self.limit = None if limit is None else float(limit)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("hard", torch.tensor(False))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        v = theta if self.limit is None else self.limit * torch.tanh(theta / self.limit)
        v = v if self.mask is None else torch.where(self.mask, v, 0.0)
        padded, _ = block_view(v)
        total = padded.sum(-1, keepdim=True)
        z = total / padded.abs().sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
        alpha = self.alpha.to(v.dtype)
        soft = torch.tanh(alpha * z) / torch.tanh(alpha)
        sign = torch.where(total >= 0, 1.0, -1.0).to(v.dtype)
        w = torch.where(self.hard, sign, soft) * padded.abs()
        return w.reshape(v.shape[0], -1)[:, : v.shape[1]]

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        """``theta`` of a weight, inverting the magnitude bound (the block sign is not invertible: a mixed
        block is exposed sign-uniform)."""
        if self.limit is None:
            return w
        fraction = (w / self.limit).clamp(-MAX_INVERTED_FRACTION, MAX_INVERTED_FRACTION)
        return self.limit * torch.atanh(fraction)


def _signed_tensors(net: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(module name, module, parameter name)`` of every 2-D ``weight`` / ``recurrent_weights`` of a module
    whose ``SIGN_BLOCKS`` is true (front ends have none), parametrised or not."""
    found = []
    for mod_name, mod in net.named_modules():
        if not getattr(mod, "SIGN_BLOCKS", False):
            continue
        for name in SIGNED_PARAMETERS:
            tensor = getattr(mod, name, None)
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 2:
                found.append((mod_name, mod, name))
    return found


def sign_blocks(net: nn.Module) -> list[SignBlocks]:
    """The ``SignBlocks`` parametrisations registered on ``net``."""
    return [
        p
        for _, mod, name in _signed_tensors(net)
        if parametrize.is_parametrized(mod, name)
        for p in mod.parametrizations[name]
        if isinstance(p, SignBlocks)
    ]


def sign_parametrize(net: nn.Module) -> list[SignBlocks]:
    """Register ``SignBlocks`` on every sign-block tensor of ``net`` not yet parametrised, bounded by its
    module's ``WEIGHT_LIMIT_V`` (and masked by an RC layer's ``recurrent_mask``); returns all of them.
    Build the optimiser afterwards: it must hold the ``original`` tensors."""
    for mod_name, mod, name in _signed_tensors(net):
        if parametrize.is_parametrized(mod, name):
            continue
        if not isinstance(getattr(mod, name), nn.Parameter):
            raise ValueError(f"{mod_name or type(net).__name__}.{name} is not a parameter to parametrise")
        mask = getattr(mod, "recurrent_mask", None) if name == "recurrent_weights" else None
        parametrize.register_parametrization(
            mod, name, SignBlocks(getattr(mod, "WEIGHT_LIMIT_V", None), mask=mask)
        )
    blocks = sign_blocks(net)
    if not blocks:
        raise ValueError(f"{type(net).__name__} has no chip synapse with sign blocks to anneal")
    return blocks


def load_annealed_state(net: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``net.load_state_dict(state)``, first registering the sign-block parametrisation when ``state`` was
    saved with it (its keys hold ``.parametrizations.``); a plain state (written without SignAnnealing, or
    by nwtrain before it was a parametrisation) loads into a plain model as it is."""
    saved_parametrized = any(PARAMETRIZED_KEY in k for k in state)
    if saved_parametrized:
        sign_parametrize(net)
    elif sign_blocks(net):
        raise ValueError(
            "its weights are plain (saved without SignAnnealing, or by an nwtrain from before SignAnnealing "
            "was a parametrisation) and this model anneals its sign blocks: it resumes only with "
            "variant.sign_annealing=null; nwtrain-eval and nwtrain-export load it as it is"
        )
    net.load_state_dict(state)


def exposed_parameters(net: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``net.named_parameters()`` with every parametrised tensor as its module exposes it, under the
    module's own name (``syn_hidden.weight``, not ``syn_hidden.parametrizations.weight.original``)."""
    for name, p in net.named_parameters():
        parts = name.split(".")
        if "parametrizations" not in parts:
            yield name, p
            continue
        i = parts.index("parametrizations")
        owner, tensor = ".".join(parts[:i]), parts[i + 1]
        yield ".".join([*parts[:i], tensor]), getattr(net.get_submodule(owner), tensor)


@torch.no_grad()
def bake_sign_blocks(net: nn.Module) -> None:
    """Replace every sign-block parametrisation of ``net`` by a plain parameter holding the weight it
    exposes (what the chip is programmed with); a model without one is left as it is."""
    for _, mod, name in _signed_tensors(net):
        if parametrize.is_parametrized(mod, name):
            parametrize.remove_parametrizations(mod, name, leave_parametrized=True)


class SignAnnealing:
    """The vendor SDK's SignAnnealing (reference/schedulers): parametrises every sign-block tensor of
    ``net`` with ``SignBlocks`` (see there for the equations) and anneals its sharpness ``alpha``.

    Create it **before the optimiser**: it registers the parametrisations, and the optimiser must hold the
    ``original`` tensors. ``step(net, epoch)`` once per epoch, before its training steps, sets ``alpha`` on
    a geometric schedule from ``alpha_start`` (epoch 0) to ``alpha_end`` (epoch ``total_epochs - 1``); from
    that epoch on the block signs are exact (``hard``), whatever the optimiser does to the underlying
    tensors. The schedule is a function of the epoch alone, so a resumed run needs no saved state, and a
    1-based loop (the tutorials' ``range(1, epochs + 1)``) ends hard too.
    """

    def __init__(self, net: nn.Module, total_epochs: int, alpha_start: float = 0.5, alpha_end: float = 20.0):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        if not 0 < alpha_start <= alpha_end:
            raise ValueError(f"need 0 < alpha_start <= alpha_end, got {alpha_start}, {alpha_end}")
        self.total_epochs = int(total_epochs)
        self.alpha_start, self.alpha_end = float(alpha_start), float(alpha_end)
        self.blocks = sign_parametrize(net)
        self.alpha = self.alpha_start
        self._set(self.alpha_start, hard=False)

    def progress(self, epoch: int) -> float:
        return min(max(epoch / max(self.total_epochs - 1, 1), 0.0), 1.0)

    def alpha_at(self, epoch: int) -> float:
        return self.alpha_start * (self.alpha_end / self.alpha_start) ** self.progress(epoch)

    def hardness(self, epoch: int) -> float:
        """How far the block signs have hardened, ``tanh(alpha)`` (1.0 exactly from the last epoch on): the
        soft sign of a block whose signed mean is ``z`` is ``tanh(alpha z) / tanh(alpha)``."""
        return 1.0 if self.progress(epoch) >= 1.0 else math.tanh(self.alpha_at(epoch))

    def _set(self, alpha: float, hard: bool) -> None:
        for block in self.blocks:
            block.alpha.fill_(alpha)
            block.hard.fill_(hard)

    def step(self, net: nn.Module, epoch: int) -> float:
        """Set ``alpha`` for ``epoch`` on ``net``'s sign blocks; returns the hardness."""
        if {id(b) for b in sign_blocks(net)} != {id(b) for b in self.blocks}:
            raise ValueError(f"{type(net).__name__} is not the network this SignAnnealing was built for")
        self.alpha = self.alpha_at(epoch)
        self._set(self.alpha, hard=self.progress(epoch) >= 1.0)
        return self.hardness(epoch)
