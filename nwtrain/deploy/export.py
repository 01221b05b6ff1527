"""Chip-ready export (``nwtrain-export``): integer weight codes a chip team can program, checked against the
chip's constraints, written as an artefact that ``nwtrain.deploy.chipsim`` runs on its own, and verified by
re-simulating the test split with it.

The artefact folder holds ``export.json`` (chip model, layers, leaks, taus, codes' scale and offset, sign
blocks, classes, feature settings, provenance), ``weights.npz`` (int32 codes, per-neuron leaks, block
signs) and, for LIF networks, ``model.nir`` (Neuromorphic Intermediate Representation). Every file is
written atomically and ``export.json`` last, with the sha256 of the others.

The exporter walks a model generically: its synapses and spiking layers, in registration order, must form a
chain ``synapse, layer, synapse, layer, ...`` (a deeper or wider network exports the same way), the first
synapse may be diagonal (the front end), and the input is scaled by ``model.input_gain``.

Constraints of a chip synapse's programmed weight (the quantised weight when the synapse has a quantiser):
inside the chip range, on the chip's level grid (``2**bits`` levels over the range, ``nwtrain.core.quant.
RangeQuantizer``), and for routed (dense) synapses sign-uniform in every block of 5
(``nwtrain.core.topology``).
``deploy`` refuses weights that break them and lists each violation, or with ``project=True`` projects
them: quantise to the grid (clamping the range), then move each block dissenter to the smallest level of
its block's sign (the nearest sign-uniform weights), and reports what moved.

An RC layer's ``recurrent_weights`` (in-core recurrence, one step late) are a routed matrix like a dense
synapse's, named ``<layer>.recurrent_weights``: on the same grid, in sign blocks on the chips, and restricted
to the layer's ``recurrent_mask``: a masked entry is no connection, so it is neither checked nor
programmed, and the artefact carries the mask (the simulator holds 0 there).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nwtrain import __version__
from nwtrain.chips import CHIPS, ChipSpec
from nwtrain.chips.placement import Placement, place
from nwtrain.core.layers import (
    ChipLayer,
    DelayLine,
    Diagonal,
    LIFSynapse,
    SpikingLayer,
    Synapse,
    prepare_net,
    profile_ids,
    routed_weight,
)
from nwtrain.core.quant import RangeQuantizer, decode
from nwtrain.core.topology import SIGN_BLOCK_SIZE, block_signs, block_view, sign_per_block, violating_blocks
from nwtrain.deploy import chipsim
from nwtrain.errors import ExportError
from nwtrain.training.annealing import bake_sign_blocks
from nwtrain.training.checkpoint import atomic_write_bytes, atomic_write_json
from nwtrain.training.provenance import provenance as origin

log = logging.getLogger(__name__)
# An accuracy drop from projection past this (a fraction) is a warning: more than a few clips' worth.
PROJECTION_LOSS_WARNING = 0.03

NIR_FILE = "model.nir"
VIOLATIONS_FILE = "violations.json"
VERIFICATION_FILE = "verification.json"
# Violations quoted in the error message; the file holds them all.
SHOWN_VIOLATIONS = 20
# A programmed weight within this fraction of the range counts as inside it (a float32 level may round
# one ulp past the float64 limit).
RANGE_TOLERANCE = 1e-6
# A chip's leak must follow the documented Vleak = vt * dt / tau to this relative precision (float32).
LEAK_RTOL = 1e-5

DECISION_RULE = (
    "argmax over classes of the output spike counts over the clip, a class's count summed over its "
    "population (output neurons c*P .. c*P+P-1); ties: the lowest index"
)


# ---------------------------------------------------------------------------------------------------------
# The network as a chain of (synapse, layer) stages
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    synapse_name: str
    synapse: Synapse
    layer_name: str
    layer: SpikingLayer

    @property
    def diagonal(self) -> bool:
        """A per-channel gain (front end) rather than a routed dense matrix ``[inputs, outputs]``."""
        return isinstance(self.synapse, Diagonal)

    @property
    def signed(self) -> bool:
        return bool(self.synapse.SIGN_BLOCKS) and not self.diagonal

    @property
    def n_outputs(self) -> int:
        return self.synapse.weight.shape[-1]


@dataclass(frozen=True)
class Routed:
    """A matrix the chip routes: a stage's synapse, or an RC layer's recurrent weights (``name``:
    ``<layer>.recurrent_weights``) with the connections its ``mask`` allows (None: all)."""

    name: str
    module: nn.Module
    signed: bool
    mask: torch.Tensor | None = None


def routed_matrices(stages: list[Stage]) -> list[Routed]:
    """Every synapse and recurrent weight matrix of the chain, in order."""
    out = []
    for s in stages:
        out.append(Routed(s.synapse_name, s.synapse, s.signed))
        if s.layer.recurrent:
            mask = s.layer.recurrent_mask
            out.append(
                Routed(
                    f"{s.layer_name}.recurrent_weights",
                    s.layer,
                    bool(s.layer.SIGN_BLOCKS),
                    None if mask is None else mask.cpu(),
                )
            )
    return out


def network_stages(model: nn.Module) -> list[Stage]:
    """The model's synapses and spiking layers, in registration order, as (synapse, layer) pairs; raises
    ``ExportError`` when they do not form a feed-forward chain."""
    delays = [n for n, m in model.named_modules() if isinstance(m, DelayLine)]
    if delays:
        raise ExportError(
            f"{type(model).__name__}.{delays[0]}: a delay line has no place in the artefact (the chips "
            f"deliver every spike in the step it fires); a network with frontend_delays_s does not export"
        )
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, (Synapse, SpikingLayer))]
    kinds = ["synapse" if isinstance(m, Synapse) else "layer" for _, m in mods]
    if not mods or kinds != ["synapse", "layer"] * (len(mods) // 2):
        raise ExportError(
            f"{type(model).__name__}: its modules {[f'{n} ({k})' for (n, _), k in zip(mods, kinds)]} are not "
            f"a chain synapse, layer, synapse, layer, ...: the artefact describes feed-forward chains only"
        )
    stages = [Stage(mods[i][0], mods[i][1], mods[i + 1][0], mods[i + 1][1]) for i in range(0, len(mods), 2)]
    width = stages[0].n_outputs
    for s in stages:
        n_in = width if s.diagonal else s.synapse.weight.shape[0]
        if n_in != width or s.n_outputs != s.layer.n_neurons or (s.diagonal and s.n_outputs != width):
            raise ExportError(
                f"{s.synapse_name}: weight {tuple(s.synapse.weight.shape)} does not connect {width} inputs "
                f"to {s.layer_name}'s {s.layer.n_neurons} neurons"
            )
        if isinstance(s.synapse, LIFSynapse) and s.synapse.bias is not None:
            raise ExportError(f"{s.synapse_name}: synapse biases have no place in the artefact")
        width = s.layer.n_neurons
    return stages


def network_chip(stages: list[Stage]) -> ChipSpec:
    """The chip whose neuron model every layer has (``ChipParts.layer``), with its synapses."""
    found = {
        spec.name: spec for s in stages for spec in CHIPS.values() if type(s.layer) is spec.parts().layer
    }
    if len(found) != 1 or len({type(s.layer) for s in stages}) != 1:
        kinds = [type(s.layer).__name__ for s in stages]
        raise ExportError(f"layers {kinds}: the artefact needs one neuron model in every layer")
    (spec,) = found.values()
    for s in stages:
        if not isinstance(s.synapse, spec.parts().synapses):
            raise ExportError(f"{s.synapse_name}: a {type(s.synapse).__name__} in a {spec.name} network")
    return spec


def network_placement(spec: ChipSpec, stages: list[Stage]) -> Placement:
    """The layers after the front end (the chip's own neurons, one per filter) on the chip's cores;
    ``ExportError`` naming the budget when they do not fit."""
    placement = place(spec, {s.layer_name: s.layer.n_neurons for s in stages[1:]})
    if not placement.fits:
        raise ExportError(f"export refused: {placement.message()}")
    return placement


def chip_grid(spec: ChipSpec, stages: list[Stage], bits: int | None = None) -> RangeQuantizer:
    """The level grid the weights are programmed on: ``bits`` (None: the chip's weight memory; the LIF
    baseline, which has none, takes its quantiser's) over the chip's range."""
    limit = spec.weight_limit
    if bits is None:
        bits = spec.weight_bits
    if bits is None:
        quantizers = [
            r.module.recurrent_quantizer if isinstance(r.module, SpikingLayer) else r.module.quantizer
            for r in routed_matrices(stages)
        ]
        trained = {(q.bits, q.limit) for q in quantizers if isinstance(q, RangeQuantizer)}
        unquantised = any(q is None for q in quantizers)
        if len(trained) != 1 or next(iter(trained))[1] != limit or unquantised:
            raise ExportError(
                f"bits: {spec.label} has no weight memory and this model was not trained on one "
                f"grid over [-{limit}, {limit}]; set bits=<n> to export it on 2**n levels"
            )
        bits = next(iter(trained))[0]
    return RangeQuantizer(bits, limit)


@torch.no_grad()
def programmed_weights(stages: list[Stage]) -> dict[str, torch.Tensor]:
    """Each routed matrix as the chip would hold it (the quantised value where it has a quantiser; 0 at
    masked recurrent entries), by ``Routed.name``."""
    return {r.name: routed_weight(r.module, programmed=True).float().cpu() for r in routed_matrices(stages)}


# ---------------------------------------------------------------------------------------------------------
# Constraints: violations and projection
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    kind: str  # "range", "grid" or "sign_block"
    synapse: str
    index: tuple[int, ...]  # the weight's index; (input row, block) for a sign block
    message: str

    def __str__(self) -> str:
        return f"{self.synapse}[{', '.join(map(str, self.index))}] {self.kind}: {self.message}"


def find_violations(
    weights: dict[str, torch.Tensor], grid: RangeQuantizer, signed: set[str], masks: dict | None = None
) -> list[Violation]:
    """Every weight outside the range, every weight inside it but off the grid, and every block of a
    ``signed`` synapse that mixes strictly positive and negative weights; where ``masks`` has a matrix's
    connection mask, only its connections count."""
    found = []
    levels = grid.n_levels
    for name, w in weights.items():
        connected = (masks or {}).get(name, torch.ones_like(w, dtype=torch.bool))
        outside = (w.abs() > grid.limit * (1 + RANGE_TOLERANCE)) & connected
        snapped = grid.export(w).dequantize()
        for ix in outside.nonzero().tolist():
            found.append(
                Violation(
                    "range",
                    name,
                    tuple(ix),
                    f"{w[tuple(ix)].item():.6g} is outside [-{grid.limit}, {grid.limit}]",
                )
            )
        for ix in ((snapped != w) & ~outside & connected).nonzero().tolist():
            found.append(
                Violation(
                    "grid",
                    name,
                    tuple(ix),
                    f"{w[tuple(ix)].item():.6g} is not one of the "
                    f"{levels} levels (nearest {snapped[tuple(ix)].item():.6g}, step "
                    f"{grid.step:.6g})",
                )
            )
        if name in signed:
            padded, mask = block_view(w)
            for row, block in violating_blocks(w):
                values = padded[row, block][mask[row, block]].tolist()
                first = block * SIGN_BLOCK_SIZE
                found.append(
                    Violation(
                        "sign_block",
                        name,
                        (row, block),
                        f"input {row}, outputs "
                        f"{first}..{first + len(values) - 1} mix signs: "
                        f"{[round(v, 4) for v in values]}",
                    )
                )
    return found


def connected_weights(codes: torch.Tensor, grid: RangeQuantizer, mask: torch.Tensor | None) -> torch.Tensor:
    """The weights ``codes`` program, 0 where ``mask`` has no connection."""
    w = decode(codes, grid.step, -grid.limit, torch.float32)
    return w if mask is None else torch.where(mask, w, 0.0)


def project(
    weights: dict[str, torch.Tensor], grid: RangeQuantizer, signed: set[str], masks: dict | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Codes of the nearest programmable weights and, per synapse, what changed: quantise to the grid
    (clamping the range), then move every dissenter of a mixed block to the smallest level of its block's
    sign (``+-step/2``: zero is not a level). That is the nearest sign-uniform point; the block keeps the
    sign of its sum, the side with more magnitude, so the least weight moves. A masked entry (``masks``)
    is no connection: it keeps its code, programs nothing and takes no part in its block's sign."""
    codes, changes = {}, {}
    half = grid.n_levels // 2  # code of the smallest positive level; half - 1 is the smallest negative
    for name, w in weights.items():
        mask = (masks or {}).get(name)
        c = grid.export(w).codes
        mixed = 0
        flips = torch.zeros_like(c, dtype=torch.bool)
        if name in signed:
            q = connected_weights(c, grid, mask)
            mixed = len(violating_blocks(q))
            sign = block_signs(q)
            flips = (torch.sign(q) != sign) & (q != 0)
            c = torch.where(flips, torch.where(sign > 0, half, half - 1).to(c.dtype), c)
        new = connected_weights(c, grid, mask)
        delta = (new - w).abs()
        codes[name] = c
        changes[name] = {
            "weights": w.numel(),
            "moved": int((new != w).sum()),
            "clamped": int((w.abs() > grid.limit * (1 + RANGE_TOLERANCE)).sum()),
            "max_change": float(delta.max()),
            "mean_abs_change": float(delta.mean()),
            "sign_blocks_fixed": mixed,
            "sign_flips": int(flips.sum()),
        }
    return codes, changes


@dataclass
class Deployment:
    """A model made chip-ready by ``deploy``: its chip, stages, placement on the chip's cores, grid, integer
    codes and what projection did."""

    chip: ChipSpec
    placement: Placement
    grid: RangeQuantizer
    stages: list[Stage]
    codes: dict[str, torch.Tensor]
    violations: list[Violation]
    projection: dict[str, dict] | None = None


class ExportRefused(ExportError):
    def __init__(self, message: str, violations: list[Violation]):
        super().__init__(message)
        self.violations = violations


def refusal_message(violations: list[Violation], where: str) -> str:
    counts = {k: sum(v.kind == k for v in violations) for k in ("range", "grid", "sign_block")}
    shown = "\n".join(f"  {v}" for v in violations[:SHOWN_VIOLATIONS])
    hidden = len(violations) - SHOWN_VIOLATIONS
    more = f"\n  ... and {hidden} more" if hidden > 0 else ""
    return (
        f"export refused: the programmed weights break the chip's constraints ({counts['range']} outside the "
        f"range, {counts['grid']} off the level grid, {counts['sign_block']} mixed sign blocks):\n"
        f"{shown}{more}\nEvery violation is listed in {where}. project=true projects the weights onto the "
        f"chip (quantise to the grid, clamp the range, move each block dissenter to the smallest level of "
        f"its block's sign) and reports what changed."
    )


@torch.no_grad()
def deploy(model: nn.Module, bits: int | None = None, project_weights: bool = False) -> Deployment:
    """Check ``model``'s programmed weights against its chip and program it with the integer codes.

    Violations raise ``ExportRefused`` (listing them) unless ``project_weights``, which projects them.
    On return every synapse of ``model`` holds exactly ``codes * scale + offset`` with no quantiser left, so
    it computes what the artefact describes (mismatch, if the model has any, still applies on top). A
    SignAnnealing parametrisation is baked in first: the chip holds the weights the model exposes."""
    bake_sign_blocks(model)
    stages = network_stages(model)
    spec = network_chip(stages)
    placement = network_placement(spec, stages)
    grid = chip_grid(spec, stages, bits)
    weights = programmed_weights(stages)
    routed = routed_matrices(stages)
    signed = {r.name for r in routed if r.signed}
    masks = {r.name: r.mask for r in routed if r.mask is not None}
    violations = find_violations(weights, grid, signed, masks)
    if violations and not project_weights:
        raise ExportRefused(refusal_message(violations, "the violations list"), violations)
    codes, changes = project(weights, grid, signed, masks)
    for r in routed:
        w = connected_weights(codes[r.name], grid, r.mask)
        if isinstance(r.module, SpikingLayer):
            r.module.recurrent_quantizer = None
            r.module.recurrent_weights.copy_(w)
        else:
            r.module.quantizer = None
            r.module.weight.copy_(w)
    return Deployment(spec, placement, grid, stages, codes, violations, changes if project_weights else None)


# ---------------------------------------------------------------------------------------------------------
# The artefact
# ---------------------------------------------------------------------------------------------------------
def chip_description(spec: ChipSpec, grid: RangeQuantizer) -> dict:
    """The chip model the artefact is built on: every constant the simulator or a chip team needs (beyond
    the layer class's threshold, capacitance and leak profiles, the spec's ``artefact_constants``)."""
    out = {
        "name": spec.name,
        "weight_limit": grid.limit,
        "weight_bits": grid.bits,
        "weight_levels": grid.n_levels,
        "weight_step": grid.step,
        "core_sizes": list(spec.core_sizes) or None,
    }
    layer = spec.parts().layer
    if issubclass(layer, ChipLayer):
        out.update(
            sign_block_size=SIGN_BLOCK_SIZE,
            v_threshold_v=layer.V_THRESHOLD_V,
            c_mem_f=layer.C_MEM_F,
            tau_profiles_s=list(layer.TAU_PROFILES_S),
            leak_lognormal_sigma=layer.LEAK_LOGNORMAL_SIGMA,
            reset=layer.RESET,
            **spec.artefact_constants,
        )
    return out


def _transfer(spec: ChipSpec, module: nn.Module) -> dict:
    """The chip's transfer for a synapse or an RC layer's recurrent weights; a chip synapse divides the
    weight by the LIF threshold it was designed against."""
    threshold = getattr(module, "lif_threshold", None)
    return dict(spec.transfer) if threshold is None else {**spec.transfer, "lif_threshold": threshold}


def _layer(s: Stage, requested_tau_s, arrays: dict) -> dict:
    layer = s.layer
    out = {"name": s.layer_name, "n_neurons": layer.n_neurons, "dt_s": layer.dt}
    if isinstance(layer, ChipLayer):
        taus = layer.taus.double().cpu()
        ids = profile_ids(taus, layer.TAU_PROFILES_S)
        vleak = layer.Vleak.detach().float().cpu()
        documented = layer.V_THRESHOLD_V * layer.dt / taus
        if not torch.allclose(vleak.double(), documented, rtol=LEAK_RTOL, atol=0):
            raise ExportError(f"{s.layer_name}: its leak {vleak.tolist()} V/step is not vt * dt / tau")
        arrays[f"{s.layer_name}.vleak_v"] = vleak.numpy()
        out["neuron"] = {
            "model": "linear_leak",
            "reset": layer.RESET,
            "vt_v": float(layer._vt),
            "volts_per_input_unit": getattr(layer, "VOLTS_PER_NA", 1.0),
            "tau_requested_s": requested_tau_s,
            "tau_effective_s": sorted(set(taus.tolist())),
            "tau_profile_ids": sorted(set(ids.tolist())),
            "ileak_a": sorted(set(layer._Ileak.double().cpu().tolist())),
            "vleak_per_step_v": sorted(set(vleak.double().tolist())),
            "vleak_v": f"{s.layer_name}.vleak_v",
        }
        arrays[f"{s.layer_name}.tau_profile_id"] = ids.to(torch.int8).numpy()
    else:
        arrays[f"{s.layer_name}.decay"] = layer._d_taus.detach().float().cpu().numpy()
        arrays[f"{s.layer_name}.threshold"] = layer.thresholds.detach().float().cpu().numpy()
        out["neuron"] = {
            "model": "lif",
            "reset": layer.reset_mechanism,
            "tau_requested_s": requested_tau_s,
            "taus_s": sorted(set(layer.taus.double().cpu().tolist())),
            "decay": f"{s.layer_name}.decay",
            "threshold": f"{s.layer_name}.threshold",
        }
    return out


def _routed(r: Routed, kind: str, dep: Deployment, arrays: dict) -> dict:
    """The entry of one routed matrix: its codes (and, for a masked recurrence, its mask) in ``arrays``."""
    codes = dep.codes[r.name].to(torch.int32)
    arrays[f"{r.name}.codes"] = codes.numpy()
    out = {
        "name": r.name,
        "kind": kind,
        "shape": list(codes.shape),
        "codes": f"{r.name}.codes",
        "scale": dep.grid.step,
        "offset": -dep.grid.limit,
        "bits": dep.grid.bits,
        "transfer": _transfer(dep.chip, r.module),
        "sign_blocks": None,
    }
    if kind == "recurrent":
        out["delay_steps"] = 1
        out["mask"] = None
        if r.mask is not None:
            arrays[f"{r.name}.mask"] = r.mask.numpy()
            out["mask"] = f"{r.name}.mask"
            out["connections"] = int(r.mask.sum())
    if r.signed:
        w = routed_weight(r.module).detach().cpu()
        signs = sign_per_block(w).to(torch.int8)
        arrays[f"{r.name}.block_signs"] = signs.numpy()
        out["sign_blocks"] = {
            "size": SIGN_BLOCK_SIZE,
            "signs": f"{r.name}.block_signs",
            "blocks": signs.numel(),
            "positive": int((signs > 0).sum()),
            "negative": int((signs < 0).sum()),
            "mixed": len(violating_blocks(w)),
        }
    return out


def _stage(s: Stage, dep: Deployment, requested_tau_s, arrays: dict) -> dict:
    routed = {r.module: r for r in routed_matrices([s])}
    out = {
        "synapse": _routed(routed[s.synapse], "diagonal" if s.diagonal else "dense", dep, arrays),
        "layer": _layer(s, requested_tau_s, arrays),
    }
    if s.layer.recurrent:
        out["layer"]["recurrent"] = _routed(routed[s.layer], "recurrent", dep, arrays)
    return out


def _check_nominal(model: nn.Module) -> None:
    mismatch = [
        n for n, m in model.named_modules() if getattr(m, "stddev", 0) or getattr(m, "ileak_mismatch", False)
    ]
    if mismatch:
        raise ExportError(f"{mismatch} simulate mismatch: export a nominal chip (build the model without it)")


def build_artefact(
    model: nn.Module,
    dep: Deployment,
    *,
    classes: list[str],
    features: dict,
    requested_taus_s: list | None = None,
    provenance: dict | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """``(export.json contents, weights.npz arrays)`` of a deployed nominal model."""
    _check_nominal(model)
    prepare_net(model, generator=torch.Generator())  # sets each layer's nominal leak
    # Requested taus are a config matter; they are recorded as given (one value or one per neuron) when the
    # config has an entry per layer.
    taus = requested_taus_s if requested_taus_s and len(requested_taus_s) == len(dep.stages) else None
    arrays: dict[str, np.ndarray] = {}
    stages = [_stage(s, dep, taus and taus[i], arrays) for i, s in enumerate(dep.stages)]
    meta = {
        "format": chipsim.FORMAT,
        "version": chipsim.VERSION,
        "chip": chip_description(dep.chip, dep.grid),
        "dt_s": dep.stages[0].layer.dt,
        "input_gain": float(getattr(model, "input_gain", 1.0)),
        "classes": list(classes),
        "decision": DECISION_RULE,
        "population": int(getattr(model, "out_population", 1)),
        "features": {**features, "n_channels": dep.stages[0].n_outputs},
        "placement": dep.placement.to_json(),
        "stages": stages,
        "constraints": {
            "checked": ["range", "grid", "sign_block"],
            "violations_found": len(dep.violations),
            "projected": dep.projection is not None,
        },
        "projection": dep.projection,
        "provenance": {
            **(provenance or {}),
            **origin(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    return meta, arrays


def to_nir(dep: Deployment, input_gain: float):
    """A NIR graph of a deployed LIF network: Input -> Scale (input gain) -> Scale (front end) -> LIF ->
    Linear -> LIF ... -> Output. NIR's LIF ``tau dv/dt = (v_leak - v) + R I`` is discretised by forward
    Euler at ``dt`` (graph metadata), so ``tau = dt / (1 - decay)`` and ``R = tau / dt`` give this model's
    ``v <- decay * v + I``; what NIR cannot say (reset by subtraction, firing at ``v >= threshold``) is in
    the metadata and docs/deploy.md."""
    import nir

    if not dep.chip.nir:
        raise ExportError(
            f"NIR export covers LIF networks; {dep.chip.label} has no NIR neuron (docs/deploy.md)"
        )
    if any(s.layer.recurrent for s in dep.stages):
        raise ExportError("NIR export covers feed-forward chains; NIR has no one-step in-core recurrence")
    n_in = dep.stages[0].n_outputs
    dt = dep.stages[0].layer.dt
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "input_gain": nir.Scale(scale=np.full(n_in, input_gain, dtype=np.float32)),
    }
    for s in dep.stages:
        w = s.synapse.weight.detach().float().cpu().numpy()
        # NIR weights are [outputs, inputs], nwtrain's [inputs, outputs].
        synapse = nir.Scale(scale=w.reshape(-1)) if s.diagonal else nir.Linear(weight=w.T.copy())
        nodes[s.synapse_name] = synapse
        decay = s.layer._d_taus.detach().double().cpu().numpy()
        if not np.all((decay > 0) & (decay < 1)):
            raise ExportError(f"{s.layer_name}: decay {decay.tolist()} has no NIR time constant")
        tau = dt / (1.0 - decay)
        nodes[s.layer_name] = nir.LIF(
            tau=tau.astype(np.float32),
            r=(tau / dt).astype(np.float32),
            v_leak=np.zeros(s.layer.n_neurons, np.float32),
            v_threshold=s.layer.thresholds.detach().float().cpu().numpy(),
            v_reset=np.zeros(s.layer.n_neurons, np.float32),
        )
    nodes["output"] = nir.Output(output_type={"output": np.array([dep.stages[-1].layer.n_neurons])})
    names = list(nodes)
    metadata = {
        "source": f"nwtrain {__version__}",
        "dt": dt,
        "discretisation": "forward Euler at dt: v <- v + dt / tau * (v_leak - v + r * I)",
        "reset": dep.stages[0].layer.reset_mechanism,
        "spike_condition": "v >= v_threshold",
    }
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), metadata=metadata)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artefact(folder: Path, meta: dict, arrays: dict[str, np.ndarray], nir_graph=None) -> dict:
    """weights.npz (and model.nir), then export.json with their sha256; returns export.json's contents."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files = {chipsim.WEIGHTS_NPZ: buf.getvalue()}
    if nir_graph is not None:
        import nir

        buf = io.BytesIO()
        nir.write(buf, nir_graph)
        files[NIR_FILE] = buf.getvalue()
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    meta = {**meta, "files": {name: {"sha256": sha256(d), "bytes": len(d)} for name, d in files.items()}}
    atomic_write_json(folder / chipsim.EXPORT_JSON, meta)
    return meta


def export_model(
    model: nn.Module,
    folder: str | Path,
    *,
    classes: list[str],
    features: dict,
    bits: int | None = None,
    project_weights: bool = False,
    requested_taus_s: list | None = None,
    provenance: dict | None = None,
) -> tuple[dict, Deployment]:
    """Deploy ``model`` (nominal, no mismatch) and write its artefact into ``folder``. A refusal writes
    every violation to ``violations.json`` there and raises ``ExportRefused``."""
    folder = Path(folder)
    try:
        dep = deploy(model, bits, project_weights)
    except ExportRefused as e:
        path = atomic_write_json(folder / VIOLATIONS_FILE, [asdict(v) for v in e.violations])
        raise ExportRefused(refusal_message(e.violations, str(path)), e.violations) from None
    meta, arrays = build_artefact(
        model,
        dep,
        classes=classes,
        features=features,
        requested_taus_s=requested_taus_s,
        provenance=provenance,
    )
    feed_forward = not any(s.layer.recurrent for s in dep.stages)
    graph = to_nir(dep, meta["input_gain"]) if dep.chip.nir and feed_forward else None
    return write_artefact(folder, meta, arrays, graph), dep


# ---------------------------------------------------------------------------------------------------------
# Verification: the artefact's simulator against the model
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def verify(folder: str | Path, model: nn.Module, loader, limit: int | None = None) -> dict:
    """Run ``chipsim`` on the artefact in ``folder`` and ``model`` (the deployed model, CPU, no mismatch)
    on every clip of ``loader``; compare predicted classes and the spike count of every neuron."""
    art = chipsim.load_artefact(folder)
    stages = network_stages(model)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        s.layer.register_forward_hook(lambda m, i, o, name=s.layer_name: captured.__setitem__(name, o[0]))
        for s in stages
    ]
    model.eval()
    labels, model_pred, sim_pred = [], [], []
    counts = {s.layer_name: {"model": 0, "sim": 0, "clips_differing": 0, "max_abs_diff": 0} for s in stages}
    identical = True
    try:
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                break
            x, y = batch[0], batch[1]
            model(x.cpu(), torch.Generator())
            sim = chipsim.simulate(art, x.cpu().numpy())
            for name, c in counts.items():
                m, s_ = captured[name].numpy(), sim[name]
                identical &= bool(np.array_equal(m, s_))
                mc, sc = m.sum(axis=1), s_.sum(axis=1)
                c["model"] += int(mc.sum())
                c["sim"] += int(sc.sum())
                c["clips_differing"] += int((mc != sc).any(axis=1).sum())
                c["max_abs_diff"] = max(c["max_abs_diff"], int(np.abs(mc - sc).max(initial=0)))
            out, population = stages[-1].layer_name, int(art.meta.get("population", 1))
            labels.append(y.numpy())
            model_pred.append(chipsim.class_counts(captured[out].numpy(), population).argmax(axis=1))
            sim_pred.append(chipsim.class_counts(sim[out], population).argmax(axis=1))
    finally:
        for h in hooks:
            h.remove()
    if not labels:
        raise ExportError("verification: the split has no clips")
    labels, model_pred, sim_pred = (np.concatenate(a) for a in (labels, model_pred, sim_pred))
    return {
        "clips": len(labels),
        "class_agreement": float((model_pred == sim_pred).mean()),
        "disagreeing_clips": np.nonzero(model_pred != sim_pred)[0].tolist(),
        "model_acc": float((model_pred == labels).mean()),
        "sim_acc": float((sim_pred == labels).mean()),
        "identical_spike_trains": identical,
        "spike_counts": counts,
    }
