"""The figures of a run folder: training curves (as tutorial 4 draws them), a spike raster of one sample,
and the sign map of the routed weights with their blocks of 5."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on headless machines and in worker processes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nwtrain.core.layers import routed_weight  # noqa: E402
from nwtrain.core.topology import (
    SIGN_BLOCK_SIZE,  # noqa: E402
    violating_blocks,  # noqa: E402
)
from nwtrain.training.metrics import spike_counts  # noqa: E402
from nwtrain.training.objectives import Classification  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(
    history: Sequence[Mapping],
    path: Path,
    title: str,
    best_epoch: int | None = None,
    tag: str = "accuracy",
    task_loss: str = "cross_entropy",
) -> Path:
    """Loss and score per epoch (tutorial 4's ``plot_histories`` plus the training score and validation
    loss), the best epoch marked. ``tag`` is the score's record prefix (``accuracy``, or ``r2`` for a rate
    regression) and ``task_loss`` the objective's loss term."""
    epochs = [r["epoch"] for r in history]
    label = task_loss.replace("_", " ")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(epochs, [r["loss/total"] for r in history], linewidth=2, label="train total")
    axes[0].plot(epochs, [r[f"loss/{task_loss}"] for r in history], linewidth=1, label=f"train {label}")
    if all(f"loss/val_{task_loss}" in r for r in history):
        val_loss = [r[f"loss/val_{task_loss}"] for r in history]
        axes[0].plot(epochs, val_loss, linewidth=1.5, linestyle="--", label=f"validation {label}")
    axes[0].set_title("Loss")
    axes[0].set_ylabel("Loss")
    score = "Accuracy" if tag == "accuracy" else tag.upper()
    axes[1].plot(epochs, [r[f"{tag}/train"] for r in history], linewidth=2, label="train")
    axes[1].plot(epochs, [r[f"{tag}/val"] for r in history], linewidth=2, label="validation")
    axes[1].set_title(score)
    axes[1].set_ylabel(score)
    axes[1].set_ylim(0.0 if tag == "accuracy" else None, 1.05)
    for ax in axes:
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_spike_raster(
    spikes: Mapping[str, np.ndarray],
    dt: float,
    path: Path,
    title: str,
    classes: Sequence[str] = (),
    population: int = 1,
) -> Path:
    """One panel per layer, ``spikes[name]`` of shape ``[T, N]`` (one sample). With ``classes``, the last
    panel (the output layer, ``population`` neurons per class in class order) is labelled by class."""
    fig, axes = plt.subplots(len(spikes), 1, figsize=(10, 2.2 * len(spikes)), sharex=True, squeeze=False)
    for ax, (name, spk) in zip(axes[:, 0], spikes.items()):
        t, n = np.nonzero(np.asarray(spk))
        ax.scatter(t * dt * 1e3, n, s=4, marker="|", color="black")
        ax.set_ylabel(f"{name}\nneuron")
        ax.set_ylim(-0.5, spk.shape[1] - 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name}: {spk.mean():.3f} spikes / neuron / step", fontsize=9, loc="right")
    if classes:
        ax = axes[-1, 0]
        ax.set_yticks([(k + 0.5) * population - 0.5 for k in range(len(classes))], list(classes))
        for k in range(1, len(classes)):
            ax.axhline(k * population - 0.5, color="grey", linewidth=0.6)
        ax.set_ylabel(f"{next(reversed(spikes))}\nclass")
    axes[-1, 0].set_xlabel("time (ms)")
    axes[-1, 0].set_xlim(0, spikes[next(iter(spikes))].shape[0] * dt * 1e3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_weight_signs(
    weights: Mapping[str, np.ndarray], path: Path, title: str, block: int | None = SIGN_BLOCK_SIZE
) -> Path:
    """Sign of each weight ``[inputs, outputs]`` (blue -, white 0, red +). With ``block`` (a chip's routed
    synapses), dashed lines mark the blocks of ``block`` outputs that must share a sign per input row, and a
    black frame marks each block that mixes signs (what ``nwtrain.core.topology.violating_blocks`` reports);
    ``None`` (the LIF baseline, which has no such rule) draws the signs alone."""
    fig, axes = plt.subplots(1, len(weights), figsize=(5 * len(weights), 5), squeeze=False)
    colours = ["#3b6fb6", "white", "#c8423b"]
    cmap = ListedColormap(colours)
    for ax, (name, w) in zip(axes[0], weights.items()):
        w = np.asarray(w)
        n_in, n_out = w.shape
        ax.imshow(np.sign(w), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        if block is None:
            ax.set_title(f"{name}: {(w > 0).mean():.0%} positive, {(w < 0).mean():.0%} negative")
        else:
            for x in range(block, n_out, block):
                ax.axvline(x - 0.5, color="grey", linestyle="--", linewidth=0.8)
            bad = violating_blocks(torch.as_tensor(w), block)
            for row, b in bad:
                width = min(block, n_out - b * block)
                ax.add_patch(Rectangle((b * block - 0.5, row - 0.5), width, 1, fill=False, linewidth=1.2))
            n_blocks = n_in * -(-n_out // block)
            ax.set_title(f"{name}: {len(bad)}/{n_blocks} blocks mix signs")
        ax.set_xlabel("output neuron")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("input")
    legend = [Patch(facecolor=c, edgecolor="grey", label=f"weight {lbl}") for c, lbl in zip(colours, "-0+")]
    if block is not None:
        legend.append(Patch(fill=False, edgecolor="black", label=f"block of {block} mixing signs"))
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_histogram(
    accs: Sequence[float], ideal: float, target: float, path: Path, title: str
) -> Path:
    """Accuracy of each simulated chip instance, with the ideal (mismatch-free) chip's accuracy, the 5th
    percentile and the yield target marked."""
    a = np.asarray(accs, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    # Accuracies over one split are multiples of 1 / clips: one bar per value, no binning artefacts.
    values, counts = np.unique(a, return_counts=True)
    width = 0.8 * (np.diff(values).min() if len(values) > 1 else 0.01) * 100
    ax.bar(values * 100, counts, width=width, color="#8aa9d6", edgecolor="black")
    p5 = np.percentile(a, 5)
    for value, style, label in (
        (ideal, "-", f"ideal chip {ideal:.1%}"),
        (p5, ":", f"5th percentile {p5:.1%}"),
        (target, "--", f"target {target:.1%}: yield {(a >= target - 1e-9).mean():.0%}"),
    ):
        ax.axvline(value * 100, color="black", linestyle=style, label=label)
    ax.set_xlabel("accuracy (%)")
    ax.set_ylabel("chip instances")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title}\nmean {a.mean():.1%}, std {a.std(ddof=1) if len(a) > 1 else 0.0:.1%}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_rates(
    produced: np.ndarray, target: np.ndarray, dt: float, path: Path, title: str, names: Sequence[str] = ()
) -> Path:
    """A rate regression's target (dashed) against the rate the network produced (solid), ``[T, K]`` each in
    spikes per step, one panel per output channel."""
    k = target.shape[1]
    fig, axes = plt.subplots(k, 1, figsize=(10, 1.6 * k + 0.6), sharex=True, squeeze=False)
    t_ms = np.arange(target.shape[0]) * dt * 1e3
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(t_ms, target[:, c], color="black", linestyle="--", linewidth=1.5, label="target")
        ax.plot(t_ms, produced[:, c], color="tab:blue", linewidth=1.5, label="produced")
        ax.set_ylabel(names[c] if names else f"channel {c}")
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time (ms); rate in spikes per step")
    fig.tight_layout()
    return _save(fig, path)


def write_run_plots(
    folder: Path,
    history: list[dict],
    best_epoch: int,
    model,
    val_loader,
    classes: list[str],
    device,
    seed: int,
    title: str,
    objective,
) -> None:
    """Training curves, the spike raster of the first validation sample (its chip instance drawn from
    ``seed``), the programmed weight signs and, for a rate regression, that sample's target and produced
    rates."""
    folder.mkdir(exist_ok=True)
    plot_training_curves(
        history,
        folder / "training_curves.png",
        title,
        best_epoch,
        objective.tag,
        objective.loss_name,
    )
    x, y = next(iter(val_loader))[:2]
    model.eval()  # the raster shows the network as evaluated: no training-time dropout
    with torch.no_grad():
        out = model(x[:1].to(device), torch.Generator().manual_seed(seed))
        spikes = {name: spk[0].cpu().numpy() for name, spk in model.traces.items()}
        programmed = {
            name: routed_weight(m, programmed=True).cpu().numpy()
            for name, m in model.routed_modules().items()
        }
    if isinstance(objective, Classification):
        pred = spike_counts(out).argmax(dim=1).item()
        what = f"{classes[y[0].item()]}, predicted {classes[pred]}"
    else:
        what = "rate regression"
        plot_rates(
            objective.rates(out)[0].cpu().numpy(),
            y[0].cpu().numpy(),
            model.dt,
            folder / "rates.png",
            f"{title}: target against produced rate, one validation sample",
            classes,
        )
    plot_spike_raster(
        spikes,
        model.dt,
        folder / "spike_raster.png",
        f"{title}: one validation sample ({what})",
        classes=classes,
        population=model.out_population,
    )
    block = SIGN_BLOCK_SIZE if all(s.SIGN_BLOCKS for s in model.dense_synapses()) else None
    plot_weight_signs(
        programmed, folder / "weight_signs.png", f"{title}: programmed weight signs", block=block
    )
