"""How much accuracy the chip front end's features allow, and how much temporal context it takes.

Trains four small non-spiking probes on the filterbank features nwtrain feeds its networks (the same
``NWaveDataGen``, splits and 8 ms bins) and prints their test accuracy, mean over seeds:

* ``cnn``: three 1-D convolutions over time and max pooling (the issue's reference kind of model);
* ``frames``: a per-frame MLP whose outputs are averaged over the clip: what a classifier that sees one
  8 ms frame at a time and adds up its votes can do (a feed-forward SNN with short memories is of this
  kind: each hidden neuron integrates a weighted sum of its inputs, one weight per input, and the output
  counts spikes over the clip);
* ``context``: the same MLP on 9 stacked frames (72 ms): per-delay weights, i.e. temporal patterns;
* ``contrast``: the per-frame MLP on the frame plus its onset and offset (the log envelope minus its
  mean over the previous 56 ms, split into positive and negative parts).

    .venv/bin/python bench/feature_ceiling.py sc        # Speech Commands excerpt, yes / no
    .venv/bin/python bench/feature_ceiling.py words     # the excerpt's ten core words
    .venv/bin/python bench/feature_ceiling.py fsdd      # FSDD digits, seeded random split
    .venv/bin/python bench/feature_ceiling.py fsdd --bands-per-octave 6   # the LIF baseline's denser bank

The data roots default to ``../shared/data`` (``NWTRAIN_REAL_DATA``), as in ``conf/paths/default.yaml``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from nwtrain.data import NWaveDataGen, NWaveDataloaderConfig

SC_WORDS = list(OmegaConf.load(Path(__file__).parents[1] / "conf/data/words/sc_core.yaml").words)
ROOT = Path(os.environ.get("NWTRAIN_REAL_DATA", "../shared/data"))
DATASETS = {
    "sc": dict(
        data_parent=ROOT / "speech_commands", sample_rate=16000, layout="speech_commands", words=["yes", "no"]
    ),
    "words": dict(
        data_parent=ROOT / "speech_commands", sample_rate=16000, layout="speech_commands", words=SC_WORDS
    ),
    "fsdd": dict(data_parent=ROOT / "fsdd", sample_rate=8000, layout="folder"),
}
SPLIT = {
    "sc": dict(random_state=123),
    "words": dict(random_state=123),
    "fsdd": dict(val_split=0.1, test_split=0.2, random_state=0),
}
PROBES = ("cnn", "frames", "context", "contrast")
CONTEXT = 9  # frames stacked by the context probe
SMOOTH = 7  # frames of the contrast probe's running mean


def log_envelope(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x / 1e-2)


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Onset and offset of every channel: the log envelope minus its causal running mean."""
    y = log_envelope(x).transpose(1, 2)
    mean = F.avg_pool1d(F.pad(y, (SMOOTH - 1, 0), mode="replicate"), SMOOTH, 1)
    d = (y - mean).transpose(1, 2)
    return torch.cat([d.clamp_min(0), (-d).clamp_min(0)], dim=2)


class Probe(nn.Module):
    def __init__(self, kind: str, n_channels: int, n_classes: int):
        super().__init__()
        self.kind = kind
        if kind == "cnn":
            self.net = nn.Sequential(
                nn.Conv1d(n_channels, 64, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Conv1d(64, 64, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Conv1d(64, 64, 5, padding=2),
                nn.ReLU(),
                nn.AdaptiveMaxPool1d(1),
                nn.Flatten(),
                nn.Linear(64, n_classes),
            )
        else:
            width = {"frames": 1, "context": CONTEXT, "contrast": 3}[kind] * n_channels
            self.net = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = 10.0 * x
        if self.kind == "cnn":
            return self.net(x.transpose(1, 2))
        if self.kind == "context":
            x = F.pad(x, (0, 0, CONTEXT // 2, CONTEXT // 2)).unfold(1, CONTEXT, 1).flatten(2)
        elif self.kind == "contrast":
            x = torch.cat([x, contrast(x / 10.0)], dim=2)
        return 5.0 * self.net(x).mean(dim=1)


def train_probe(kind, data, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    (x, y), (xt, yt) = data["train"], data["test"]
    probe = Probe(kind, x.shape[2], int(y.max()) + 1)
    opt = torch.optim.Adam(probe.parameters(), 1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(32):
            xb = x[idx]
            if kind == "cnn":  # time-shift augmentation, as the reference CNN had
                xb = torch.roll(xb, int(torch.randint(-12, 13, ())), dims=1)
            loss = F.cross_entropy(probe(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (probe(xt).argmax(1) == yt).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bands-per-octave", type=int, default=2, help="filterbank density (2: the chip's)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = NWaveDataloaderConfig(**SPLIT[args.dataset])
    datagen = NWaveDataGen(
        **DATASETS[args.dataset],
        recording_duration_s=1.0,
        sim_time_s=8e-3,
        dataloader_config=config,
        bands_per_octave=args.bands_per_octave,
    )
    data = {s: (d.features, d.labels) for s, d in datagen.datasets().items()}
    print(
        f"{args.dataset}: {len(data['train'][1])} train, {len(data['test'][1])} test clips, "
        f"{datagen.n_channels} channels"
    )
    for kind in PROBES:
        accs = [train_probe(kind, data, seed, 40 if kind == "cnn" else 60) for seed in range(args.seeds)]
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1))
        each = ", ".join(f"{100 * a:.1f}" for a in accs)
        print(f"  {kind:9s} test {100 * mean:5.1f} % +- {100 * std:.1f}  ({each})")


if __name__ == "__main__":
    main()
