"""Reference simulator of a chip artefact (``nwtrain-export``): numpy only, no training code.

It reads ``export.json`` and ``weights.npz``, decodes the integer weight codes with the stored scale and
offset, and runs the network on filterbank features ``[B, T, C]`` from the equations of
``docs/chip_model.md``, written here a second time on purpose: agreement with the trained model is then a
check of the artefact and of both implementations, not of one against itself.

    x      = features * input_gain
    per stage (synapse, layer):
      w    = codes * scale + offset                          programmed weights
      g    = transfer(w)                                     h1v1_tanh: I_B * tanh(w / (lif_threshold * W_S))
                                                             linear:    gain / lif_threshold * w
                                                             identity:  w
      I[t] = x[t] * g (diagonal)  or  sum_i x_i[t] g[i, :] (dense, inputs added in index order)
      recurrent layer (``layer.recurrent``, in-core recurrence one step late):
      I[t] = I[t] + sum_i s_i[t-1] G[i, :]     G = transfer(w_rec), 0 where ``mask`` has no connection,
                                               s[-1] = 0; rows added in index order
      linear_leak: v = max(0, max(0, v - Vleak) + I[t] * volts_per_unit); s = v >= vt; reset; v = max(v, 0)
      lif:         v = decay * v + I[t]; s = v >= threshold; reset
      x    = s
    class  = argmax over classes of the output spike counts (ties: lowest index); with a population of
             P output neurons per class (``population``), class c counts neurons c*P .. c*P + P - 1

Arithmetic is float32 in the training model's order of operations, so a spike decided at the threshold
is decided the same way; two places differ by design and are exact for the chip grids: the transfer's
tanh is evaluated in float64 and rounded once, and a dense synapse adds its inputs one by one in input
order (what the float32 matrix product of the model does for spike inputs).

``python -m nwtrain.deploy.chipsim <artefact folder> <features.npy>`` prints the predicted class of each clip.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nwtrain.errors import NwtrainError, UntrustedFileError
from nwtrain.training.trust import check_data

FORMAT = "nwtrain-chip-artefact"
VERSION = 2  # 2: layers may carry in-core recurrent weights (``layer.recurrent``)
EXPORT_JSON = "export.json"
WEIGHTS_NPZ = "weights.npz"
F32 = np.float32


class ArtefactError(NwtrainError, ValueError):
    """The artefact folder is missing a file or holds something this simulator does not know."""


@dataclass
class Artefact:
    """``export.json`` as a dict and the arrays of ``weights.npz`` by name."""

    meta: dict
    arrays: dict[str, np.ndarray]
    folder: Path

    def array(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ArtefactError(f"{self.folder / WEIGHTS_NPZ} has no array {key!r} (named in {EXPORT_JSON})")
        return self.arrays[key]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


def load_artefact(folder: str | Path) -> Artefact:
    folder = Path(folder)
    meta_path, npz_path = folder / EXPORT_JSON, folder / WEIGHTS_NPZ
    for path in (meta_path, npz_path):
        if not path.is_file():
            raise ArtefactError(f"{path} does not exist: not an nwtrain-export folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtefactError(f"{meta_path} is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtefactError(f"{meta_path} is not an nwtrain chip artefact (no format: {FORMAT!r})")
    if meta.get("version", 0) > VERSION:
        raise ArtefactError(
            f"{meta_path} has version {meta['version']}; this simulator reads up to {VERSION}"
        )
    check_data(meta, str(meta_path))
    verify_files(folder, meta)
    check_placement(meta, meta_path)
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Artefact(meta, arrays, folder)


def verify_files(folder: Path, meta: dict) -> None:
    """Every file ``export.json`` lists (``weights.npz`` always among them) must have the sha256 recorded
    there: an artefact edited after export is refused, not simulated."""
    files = meta.get("files")
    if not isinstance(files, dict) or WEIGHTS_NPZ not in files:
        raise ArtefactError(
            f"{folder / EXPORT_JSON} records no sha256 of {WEIGHTS_NPZ}: not an nwtrain-export"
        )
    for name, entry in files.items():
        path = folder / name
        if Path(name).name != name or not isinstance(entry, dict) or "sha256" not in entry:
            raise ArtefactError(f"{folder / EXPORT_JSON}: bad files entry {name!r}")
        if not path.is_file():
            raise ArtefactError(f"{path} does not exist (listed in {EXPORT_JSON})")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise UntrustedFileError(
                f"{path} has sha256 {digest[:16]}..., {EXPORT_JSON} records {str(entry['sha256'])[:16]}...: "
                f"the artefact was changed after export and is refused"
            )


def check_placement(meta: dict, meta_path: Path) -> None:
    """The recorded core map (``placement``) against the chip's cores (``chip.core_sizes``): every layer
    after the front end placed, in order, no core over its size. An artefact of a chip without cores (the
    LIF baseline), or one exported before placements were recorded, has nothing to check."""
    cores, record = meta["chip"].get("core_sizes"), meta.get("placement")
    if not cores or record is None:
        return
    names = [stage["layer"]["name"] for stage in meta["stages"][1:]]
    placed = [layer["name"] for layer in record["layers"]]
    if placed != names:
        raise ArtefactError(
            f"{meta_path}: placement places layers {placed}, the stages after the front end are {names}"
        )
    try:
        check_recorded(record, cores, str(meta_path))
    except ValueError as e:
        raise ArtefactError(str(e)) from None


def programmed_weights(art: Artefact, synapse: dict) -> np.ndarray:
    """The weights the chip holds: ``codes * scale + offset`` in float32 (two roundings, as the model)."""
    codes = art.array(synapse["codes"])
    if list(codes.shape) != list(synapse["shape"]):
        raise ArtefactError(
            f"{synapse['codes']}: shape {list(codes.shape)}, export.json says {synapse['shape']}"
        )
    return codes.astype(F32) * F32(synapse["scale"]) + F32(synapse["offset"])


def transfer(w: np.ndarray, spec: dict) -> np.ndarray:
    """What a programmed weight delivers to the next layer per input unit."""
    kind = spec["kind"]
    if kind == "h1v1_tanh":
        x = w / F32(spec["lif_threshold"] * spec["linear_range_v"])
        return F32(spec["bias_current"]) * np.tanh(x.astype(np.float64)).astype(F32)
    if kind == "linear":
        return F32(spec["gain"] / spec["lif_threshold"]) * w
    if kind == "identity":
        return w
    raise ArtefactError(f"unknown synapse transfer {kind!r}")


def synapse_input(x: np.ndarray, g: np.ndarray, kind: str) -> np.ndarray:
    """``x [B, T, I]`` through the transferred weights ``g``: element-wise (diagonal ``[C]``) or dense
    ``[I, O]``, the inputs added one at a time in index order."""
    if kind == "diagonal":
        return x * g.reshape(-1)
    if kind != "dense":
        raise ArtefactError(f"unknown synapse kind {kind!r}")
    out = np.zeros((*x.shape[:-1], g.shape[1]), F32)
    for i in range(g.shape[0]):
        out += x[..., i : i + 1] * g[i]
    return out


def _reset(u: np.ndarray, fired: np.ndarray, threshold, reset: str) -> np.ndarray:
    if reset == "zero":
        return np.where(fired, F32(0), u)
    if reset == "subtraction":
        return np.where(fired, u - threshold, u)
    return u


def recurrent_matrix(art: Artefact, layer: dict) -> np.ndarray | None:
    """A recurrent layer's transferred recurrent weights ``G [N, N]`` (0 off its mask), or None."""
    rec = layer.get("recurrent")
    if rec is None:
        return None
    n = layer["n_neurons"]
    if rec.get("kind") != "recurrent" or list(rec["shape"]) != [n, n] or rec.get("delay_steps") != 1:
        raise ArtefactError(f"layer {layer['name']}: a recurrence must be [{n}, {n}] and one step late")
    w = programmed_weights(art, rec)
    if rec.get("mask") is not None:
        w = np.where(art.array(rec["mask"]).astype(bool), w, F32(0))
    return transfer(w, rec["transfer"])


def run_layer(art: Artefact, layer: dict, current: np.ndarray) -> np.ndarray:
    """Spikes ``[B, T, N]`` (float32 0/1) of one layer driven by ``current [B, T, N]`` (and its own spikes
    of the step before, when it is recurrent)."""
    neuron = layer["neuron"]
    batch, steps, n = current.shape
    if n != layer["n_neurons"]:
        raise ArtefactError(f"layer {layer['name']}: {n} inputs for {layer['n_neurons']} neurons")
    reset = neuron["reset"]
    if reset not in ("zero", "subtraction", "none"):
        raise ArtefactError(f"layer {layer['name']}: unknown reset {reset!r}")
    g_rec = recurrent_matrix(art, layer)
    v = np.zeros((batch, n), F32)
    spikes = np.zeros((batch, steps + 1, n), F32)  # spikes[:, t + 1] of step t; spikes[:, 0] = s[-1] = 0

    def step_input(t):
        return current[:, t] if g_rec is None else current[:, t] + synapse_input(spikes[:, t], g_rec, "dense")

    if neuron["model"] == "linear_leak":
        vleak, vt = art.array(neuron["vleak_v"]).astype(F32), F32(neuron["vt_v"])
        scale = F32(neuron["volts_per_input_unit"])
        for t in range(steps):
            u = np.maximum(np.maximum(v - vleak, F32(0)) + step_input(t) * scale, F32(0))
            fired = u >= vt
            v = np.maximum(_reset(u, fired, vt, reset), F32(0))
            spikes[:, t + 1] = fired
    elif neuron["model"] == "lif":
        decay, theta = art.array(neuron["decay"]).astype(F32), art.array(neuron["threshold"]).astype(F32)
        for t in range(steps):
            u = decay * v + step_input(t)
            fired = u >= theta
            v = _reset(u, fired, theta, reset)
            spikes[:, t + 1] = fired
    else:
        raise ArtefactError(f"layer {layer['name']}: unknown neuron model {neuron['model']!r}")
    return spikes[:, 1:]


def simulate(art: Artefact, features: np.ndarray) -> dict[str, np.ndarray]:
    """Spikes ``[B, T, N]`` of every layer, by layer name, for filterbank features ``[B, T, C]``."""
    x = np.asarray(features, dtype=F32)
    n_channels = art.meta["features"]["n_channels"]
    if x.ndim != 3 or x.shape[-1] != n_channels:
        raise ArtefactError(f"features must be [B, T, {n_channels}], got {list(x.shape)}")
    x = x * F32(art.meta["input_gain"])
    out = {}
    for stage in art.meta["stages"]:
        syn, layer = stage["synapse"], stage["layer"]
        g = transfer(programmed_weights(art, syn), syn["transfer"])
        x = run_layer(art, layer, synapse_input(x, g, syn["kind"]))
        out[layer["name"]] = x
    return out


def class_counts(spikes: np.ndarray, population: int = 1) -> np.ndarray:
    """Spike counts per class ``[B, n_classes]`` of output spikes ``[B, T, n_classes * population]``."""
    counts = spikes.sum(axis=1)
    return counts.reshape(counts.shape[0], -1, population).sum(axis=2)


def predict(art: Artefact, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class indices [B], output spike counts per class [B, n_classes])``."""
    out = simulate(art, features)[art.meta["stages"][-1]["layer"]["name"]]
    population = int(art.meta.get("population", 1))
    if out.shape[-1] != len(art.classes) * population:
        raise ArtefactError(
            f"the output layer has {out.shape[-1]} neurons, not {len(art.classes)} classes x {population}"
        )
    counts = class_counts(out, population)
    return counts.argmax(axis=1), counts


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: python -m nwtrain.deploy.chipsim <artefact folder> <features.npy [B, T, C]>",
            file=sys.stderr,
        )
        return 2
    try:
        art = load_artefact(args[0])
        labels, counts = predict(art, np.load(args[1], allow_pickle=False))
    except (NwtrainError, ValueError, OSError) as e:
        print(f"chipsim: {e}", file=sys.stderr)
        return 1
    print("\t".join(["clip", "class", *(f"count_{c}" for c in art.classes)]))
    for i, (k, c) in enumerate(zip(labels, counts)):
        print("\t".join([str(i), art.classes[k], *(str(int(n)) for n in c)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def check_recorded(record: dict, core_sizes: list[int], where: str) -> None:
    """A placement record (``Placement.to_json``) against a chip's ``core_sizes``: every neuron on a core,
    no core over its size. ValueError naming ``where`` otherwise (the simulator's own check, so it runs
    without torch)."""
    load = [0] * len(core_sizes)
    for layer in record["layers"]:
        covered = 0
        for core, first, stop in layer["cores"]:
            if first != covered or not 0 <= core < len(core_sizes):
                raise ValueError(
                    f"{where}: layer {layer['name']} has neurons {first}..{stop - 1} on no core of the "
                    f"chip's {len(core_sizes)} ({layer['cores']})"
                )
            load[core] += stop - first
            covered = stop
        if covered != layer["neurons"]:
            raise ValueError(
                f"{where}: layer {layer['name']} places {covered} of its {layer['neurons']} neurons"
            )
    over = [f"core {i}: {n} > {size}" for i, (n, size) in enumerate(zip(load, core_sizes)) if n > size]
    if over:
        raise ValueError(f"{where}: the cores hold more neurons than they have ({', '.join(over)})")
