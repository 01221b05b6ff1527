"""What a network is trained to do with its output spikes ``[B, T, K]``: classify the clip (tutorial 4) or
produce a target spike-rate pattern over time (tutorial 7). The runner asks the objective for the task
loss, the running sums of an epoch and the score those sums give; the loss stack around it (topology,
weight magnitude, firing rate) is the same for both.

A score is higher-is-better, so the best epoch is picked the same way for both: accuracy for a
classifier, the coefficient of determination R^2 for a rate regression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nwtrain.training.metrics import spike_counts


class Classification:
    """Cross entropy on each class's output spike count over the clip; the score is accuracy.

    ``label_smoothing`` in [0, 1) trains towards 1 - s on the label and s / K spread over all K classes
    (torch's ``cross_entropy``): spike counts are logits of tens of spikes, and without it the loss keeps
    pulling the winning count away from the others on clips the network already classifies.
    """

    metric = "acc"  # the key of the score in evaluations and summaries (best_val_acc, test_acc)
    tag = "accuracy"  # its TensorBoard tag prefix (accuracy/train, accuracy/val)
    loss_name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def loss(self, spikes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(spike_counts(spikes), labels, label_smoothing=self.label_smoothing)

    def add_sums(self, sums: dict, spikes: torch.Tensor, labels: torch.Tensor) -> None:
        counts = spike_counts(spikes).detach()
        k = counts.shape[-1]
        _add(sums, "correct", (counts.argmax(dim=1) == labels).sum().item())
        _add(sums, "silent", int((counts.sum(dim=1) == 0).sum()))
        pairs = (labels * k + counts.argmax(dim=1)).cpu()
        _add(sums, "confusion", torch.bincount(pairs, minlength=k * k).view(k, k))

    def score(self, sums: dict) -> float:
        return sums["correct"] / sums["samples"]

    def report(self, sums: dict) -> dict:
        """The confusion matrix (rows: label) and the clips with no output spike (a tie-break, not a
        decision)."""
        return {"confusion": sums["confusion"].tolist(), "silent": sums["silent"]}

    @staticmethod
    def format(score: float) -> str:
        return f"{score:.1%}"


class RateRegression:
    """Tutorial 7's task: the output spikes, as rates, follow a target rate pattern ``[B, T, K]`` (spikes
    per step, one channel per output class).

    The produced rate is the causal moving average of the output spikes over the last ``window_steps``
    steps (fewer at the clip's start), r[t] = (1 / w_t) sum_{s = t - w_t + 1}^{t} spk[s] with w_t =
    min(window_steps, t + 1): a rate needs a window, and a causal one is what a chip's host can compute
    as the spikes arrive. The loss is the mean squared error of r against the target over every step and
    channel; the score is R^2 = 1 - SSE / SST, SST about each channel's mean target over the split, so
    1 is a perfect pattern and 0 is no better than each channel's constant mean rate.
    """

    metric = "r2"
    tag = "r2"
    loss_name = "rate_mse"

    def __init__(self, window_steps: int = 5):
        if window_steps < 1:
            raise ValueError(f"window_steps must be >= 1, got {window_steps}")
        self.window_steps = int(window_steps)

    def rates(self, spikes: torch.Tensor) -> torch.Tensor:
        """The causal moving-average rate of ``spikes [B, T, K]``, in spikes per step."""
        csum = F.pad(spikes.cumsum(dim=1), (0, 0, 1, 0))
        t = torch.arange(1, spikes.shape[1] + 1, device=spikes.device)
        start = (t - self.window_steps).clamp(min=0)
        width = (t - start).to(spikes.dtype)[None, :, None]
        return (csum[:, t] - csum[:, start]) / width

    def loss(self, spikes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.rates(spikes), targets)

    def add_sums(self, sums: dict, spikes: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.no_grad():
            error = self.rates(spikes) - targets
            _add(sums, "sse", error.pow(2).sum().item())
            flat = targets.reshape(-1, targets.shape[-1]).double()
            _add(sums, "target_n", flat.shape[0])
            _add(sums, "target_sum", flat.sum(0).cpu())
            _add(sums, "target_sq", flat.pow(2).sum(0).cpu())

    def score(self, sums: dict) -> float:
        sst = (sums["target_sq"] - sums["target_sum"].pow(2) / sums["target_n"]).sum().item()
        return 1.0 - sums["sse"] / sst if sst > 0 else float("nan")

    def report(self, sums: dict) -> dict:
        return {}

    @staticmethod
    def format(score: float) -> str:
        return f"R2 {score:.3f}"


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums[key] + value if key in sums else value
