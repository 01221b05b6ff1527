"""Training speed of tutorial 4's hardware-aware H1v1 network, nwtrain against snnTorch and SpikingJelly.

Every framework trains the same network, 13 -> 13 -> 64 -> 2 spiking neurons over T=125 steps of 8 ms
(batch 16), with the same loss stack (cross-entropy on spike counts + sign topology + weight magnitude +
firing-rate target), 5-bit fake-quantised chip weights, Adam with two parameter groups and gradient
clipping at 0.5, on the same synthetic batches of tutorial 4's shapes. Frameworks alternate, one epoch each
per round, in one process, so machine load hits them alike; the table shows the median over rounds.

* nwtrain: the tutorial's model in sequence mode (fused kernels), and again with ``NWTRAIN_KERNELS=reference``
  (the pure-torch time loop); the same two with an in-core recurrent hidden layer (``layer_topology="RC"``,
  its 64 x 64 recurrent weights on the same grid). No anchor has the chips' recurrence: those lines compare
  with nwtrain's own feed-forward time (``--only fused recurrent``).
* snnTorch: the per-time-step loop of the snnTorch tutorials, ``snn.Leaky`` with reset to zero (H1v1's
  reset) and ``surrogate.fast_sigmoid(slope=25)``.
* SpikingJelly: multi-step ``neuron.LIFNode(step_mode="m")`` on ``[T, B, N]`` (its CPU path), hard reset to
  0, detached reset, ``surrogate.SoftSign(alpha=25)`` (the fast-sigmoid shape 1/(1+25|x|)^2, scaled).

Neither anchor has the H1v1 neuron, so they use their LIF with the H1v1 layers' decay; the synapses are
the same H1v1 ones (quantiser + tanh transfer) in all three, so the comparison is the time loop and the
framework around it. ``make bench`` runs it: it installs the anchors without their dependencies (the
``bench`` extra lists the few they import) so that .venv keeps the torch ``make install`` chose, and
passes ``--torch-pin`` so that the script refuses to time on any other.

``--device cuda`` runs all of it on the GPU: nwtrain's fused path is then the Triton kernels
(docs/kernels.md), SpikingJelly its torch multi-step path; the clock stops after a device synchronise.
Without a GPU it refuses. ``TRITON_INTERPRET=1 NWTRAIN_KERNELS=triton`` with ``--device cpu`` and a few
batches runs the Triton kernels in Triton's interpreter instead: a smoke check of that path, not a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nwtrain import kernels
from nwtrain.chips import h1v1
from nwtrain.core.quant import RangeQuantizer
from nwtrain.core.topology import sign_conflict
from nwtrain.layers import H1v1Frontend, H1v1Layer, H1v1Synapse, prepare_net
from nwtrain.loss import firing_rate_target_mse_loss, topology_loss, weight_magnitude_loss
from nwtrain.surrogate import fast_sigmoid

N_CHANNELS, HIDDEN, CLASSES = 13, 64, 2
STEPS, BATCH, DT = 125, 16, 8e-3
TAUS = (10e-3, 64e-3, 64e-3)  # frontend layer, hidden, output (tutorial 4)
QUANT_BITS, LIMIT = 5, 0.9
LAM_TOPOLOGY, LAM_FR, TARGET_FR = 0.05, 10.0, 0.15
LR_FRONTEND, LR_CORE, MAX_GRAD_NORM = 1e-5, 1e-3, 0.5
EPOCH_CLIPS = 6087  # tutorial 4's training split


# ---------------------------------------------------------------------------------------------------------
# nwtrain: tutorial 4's H1v1YesNoNet(quantized=True), whole sequences per call
# ---------------------------------------------------------------------------------------------------------
class NwtrainNet(nn.Module):
    def __init__(self):
        super().__init__()
        slope = fast_sigmoid(25.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # 13 of the chip's 16 filters, as in the tutorial
            self.frontend = H1v1Frontend(N_CHANNELS, quantization_bit=QUANT_BITS)
        self.frontend_layer = H1v1Layer(N_CHANNELS, taus=TAUS[0], dt=DT, spike_grad=slope)
        self.syn_hidden = H1v1Synapse(N_CHANNELS, HIDDEN, quantization_bit=QUANT_BITS)
        self.hidden = H1v1Layer(HIDDEN, taus=TAUS[1], dt=DT, spike_grad=slope)
        self.syn_out = H1v1Synapse(HIDDEN, CLASSES, quantization_bit=QUANT_BITS)
        self.out = H1v1Layer(CLASSES, taus=TAUS[2], dt=DT, spike_grad=slope)

    def forward(self, x):
        prepare_net(self)
        spk0, _ = self.frontend_layer(self.frontend(x))
        spk1, _ = self.hidden(self.syn_hidden(spk0))
        spk2, _ = self.out(self.syn_out(spk1))
        return spk2

    def regularisers(self):
        topology = topology_loss(self.syn_hidden, LAM_TOPOLOGY) + topology_loss(self.syn_out, LAM_TOPOLOGY)
        return topology + weight_magnitude_loss(self, limit=LIMIT)

    def frontend_parameters(self):
        return [*self.frontend.parameters(), *self.frontend_layer.parameters()]


class NwtrainRecurrentNet(NwtrainNet):
    """The same network, its hidden layer recurrent within one core of 64 neurons (5-bit recurrent weights
    in sign blocks, as the feed-forward ones)."""

    def __init__(self):
        super().__init__()
        self.hidden = H1v1Layer(
            HIDDEN,
            taus=TAUS[1],
            dt=DT,
            spike_grad=self.hidden.spike_grad,
            layer_topology="RC",
            quantization_bit=QUANT_BITS,
        )

    def regularisers(self):
        return super().regularisers() + topology_loss(self.hidden, LAM_TOPOLOGY)


# ---------------------------------------------------------------------------------------------------------
# The anchors: the same weights and synapse maths as plain torch, each framework's own LIF neuron
# ---------------------------------------------------------------------------------------------------------
def h1v1_transfer(w):
    """Membrane volts per unit of presynaptic activity: the H1v1 transconductor (nA) times 0.01 V/nA."""
    return H1v1Layer.VOLTS_PER_NA * H1v1Synapse.I_B_NA * torch.tanh(w / h1v1.SYN_LINEAR_RANGE_V)


class _AnchorNet(nn.Module):
    """Starts from the nwtrain model's initial weights; neurons fire at the H1v1 threshold."""

    def __init__(self):
        super().__init__()
        ref = NwtrainNet()
        self.gain = nn.Parameter(ref.frontend.weight.detach().clone())
        self.w_hidden = nn.Parameter(ref.syn_hidden.weight.detach().clone())
        self.w_out = nn.Parameter(ref.syn_out.weight.detach().clone())
        self.quantizer = RangeQuantizer(QUANT_BITS, LIMIT)
        self.betas = [math.exp(-DT / tau) for tau in TAUS]
        self.threshold = H1v1Layer.V_THRESHOLD_V

    def weights(self):
        return tuple(h1v1_transfer(self.quantizer(w)) for w in (self.gain, self.w_hidden, self.w_out))

    def regularisers(self):
        topology = sum(LAM_TOPOLOGY * sign_conflict(w).sum() for w in (self.w_hidden, self.w_out))
        magnitude = sum(
            torch.relu(w.abs() - LIMIT).pow(2).sum() for w in (self.gain, self.w_hidden, self.w_out)
        )
        return topology + magnitude

    def frontend_parameters(self):
        return [self.gain]


class SnntorchNet(_AnchorNet):
    def __init__(self):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        grad = surrogate.fast_sigmoid(slope=25)
        self.lifs = nn.ModuleList(
            [
                snn.Leaky(beta=b, threshold=self.threshold, spike_grad=grad, reset_mechanism="zero")
                for b in self.betas
            ]
        )

    def forward(self, x):
        gain, w_hidden, w_out = self.weights()
        lif0, lif1, lif2 = self.lifs
        mem0, mem1, mem2 = lif0.init_leaky(), lif1.init_leaky(), lif2.init_leaky()
        spk_rec = []
        for t in range(x.shape[1]):
            spk0, mem0 = lif0(x[:, t] * gain, mem0)
            spk1, mem1 = lif1(spk0 @ w_hidden, mem1)
            spk2, mem2 = lif2(spk1 @ w_out, mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec, dim=1)


class SpikingJellyNet(_AnchorNet):
    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.lifs = nn.ModuleList(
            [
                neuron.LIFNode(
                    tau=1.0 / (1.0 - b),  # V <- V - V/tau + X, i.e. decay b
                    decay_input=False,
                    v_threshold=self.threshold,
                    v_reset=0.0,
                    detach_reset=True,
                    surrogate_function=surrogate.SoftSign(alpha=25.0),
                    step_mode="m",
                )
                for b in self.betas
            ]
        )

    def forward(self, x):
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        gain, w_hidden, w_out = self.weights()
        lif0, lif1, lif2 = self.lifs
        x_seq = x.transpose(0, 1)  # SpikingJelly is time-major, [T, B, N]
        spk = lif2(lif1(lif0(x_seq * gain) @ w_hidden) @ w_out)
        return spk.transpose(0, 1)


# ---------------------------------------------------------------------------------------------------------
# Training loop (tutorial 4's train_model body) and timing
# ---------------------------------------------------------------------------------------------------------
def make_optimizer(model):
    frontend = model.frontend_parameters()
    ids = {id(p) for p in frontend}
    core = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adam([{"params": frontend, "lr": LR_FRONTEND}, {"params": core, "lr": LR_CORE}])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(model, optimizer, batches) -> float:
    """One pass over ``batches`` as tutorial 4's ``train_model`` runs it, per-batch ``.item()`` calls
    included; returns the training accuracy."""
    correct = total = 0
    running_loss = 0.0
    for x, y in batches:
        optimizer.zero_grad()
        spikes = model(x)
        logits = spikes.sum(dim=1)
        loss_fr = firing_rate_target_mse_loss([spikes], [TARGET_FR], [LAM_FR])
        loss = F.cross_entropy(logits, y) + model.regularisers() + loss_fr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_GRAD_NORM)
        optimizer.step()
        correct += (logits.argmax(dim=1) == y).sum().item()
        total += y.shape[0]
        running_loss += loss.item() * y.shape[0]
    return correct / max(total, 1)


def synthetic_data(clips: int, seed: int):
    """Filterbank-envelope-like inputs ``[clips, T, 13]`` in [0, 3] (smooth in time) and binary labels."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(clips, STEPS // 5 + 1, N_CHANNELS, generator=g)
    x = F.interpolate(raw.transpose(1, 2), size=STEPS, mode="linear", align_corners=True).transpose(1, 2)
    return (3.0 * x).contiguous(), torch.randint(0, CLASSES, (clips,), generator=g)


def batches_of(x, y, epoch: int):
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
    return [(x[i], y[i]) for i in order.split(BATCH)]


@contextlib.contextmanager
def kernels_env(value: str | None):
    old = os.environ.get(kernels.ENV_VAR)
    if value is not None:
        os.environ[kernels.ENV_VAR] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(kernels.ENV_VAR, None)
        else:
            os.environ[kernels.ENV_VAR] = old


# key: (table label, model class, NWTRAIN_KERNELS while it trains)
FRAMEWORKS = {
    "fused": ("nwtrain, fused kernels", NwtrainNet, None),
    "reference": ("nwtrain, reference torch loop", NwtrainNet, "reference"),
    "recurrent": ("nwtrain, fused kernels, RC hidden layer", NwtrainRecurrentNet, None),
    "recurrent_reference": ("nwtrain, reference loop, RC hidden layer", NwtrainRecurrentNet, "reference"),
    "snntorch": ("snnTorch (Leaky, per-step loop)", SnntorchNet, None),
    "spikingjelly": ("SpikingJelly (LIFNode, multi-step)", SpikingJellyNet, None),
}


def torch_build() -> str:
    """The torch this process runs, e.g. ``2.13.0+cpu (CPU build)`` or ``2.14.1+cu130 (CUDA 13.0 build)``."""
    cuda = torch.version.cuda
    return f"{torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU'} build)"


def check_torch_build(pin_file: str) -> None:
    """Refuse to time unless this torch is the one ``make install`` put in .venv (its pin file holds
    ``torch==<version>``): installing the anchors must not have replaced it, or nwtrain and the anchors
    would be timed on another torch than the project's."""
    try:
        pinned = open(pin_file).read().strip()
    except OSError as e:
        raise SystemExit(f"bench: cannot read the torch pin {pin_file} ({e}); run make install") from None
    if pinned != f"torch=={torch.__version__}":
        raise SystemExit(
            f"bench: this torch is {torch_build()}, but make install set up {pinned.removeprefix('torch==')} "
            f"({pin_file}); the anchors' install replaced it. Run make install again, then make bench."
        )


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=EPOCH_CLIPS, help="clips per epoch (default: tutorial 4's)")
    ap.add_argument("--batches", type=int, help="time this many batches per round, scaled to the epoch")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, one epoch per framework each")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads")
    ap.add_argument("--only", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where models and data live")
    ap.add_argument("--torch-pin", help="refuse to time unless torch is the one this file pins (make bench)")
    args = ap.parse_args(argv)
    if args.torch_pin:
        check_torch_build(args.torch_pin)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    device = torch.device(args.device)

    torch.set_num_threads(args.threads)
    x, y = (t.to(device) for t in synthetic_data(args.clips, seed=0))
    n_batches = math.ceil(args.clips / BATCH)
    timed = n_batches if args.batches is None else min(args.batches, n_batches)
    scope = "every batch timed" if timed == n_batches else f"{timed} batches timed, scaled to the epoch"
    print(f"torch {torch_build()}, {torch.get_num_threads()} threads, {cpu_name()}")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
        # the line naming the kernel path: a Triton build failure would time the reference loop twice
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger(kernels.__name__).setLevel(logging.INFO)
    print(
        f"epoch: {args.clips} clips = {n_batches} batches of {BATCH} x {STEPS} steps ({scope}); "
        f"{args.rounds} rounds"
    )

    runs = {}
    for key in args.only:
        _, cls, env = FRAMEWORKS[key]
        torch.manual_seed(0)
        model = cls().to(device)
        optimizer = make_optimizer(model)
        with kernels_env(env):  # untimed warm-up: kernel loading, allocator, first-call paths
            train_epoch(model, optimizer, batches_of(x, y, epoch=-1)[:3])
        runs[key] = (model, optimizer, env)

    times = {key: [] for key in runs}
    for r in range(args.rounds):
        batches = batches_of(x, y, epoch=r)[:timed]
        for key, (model, optimizer, env) in runs.items():
            with kernels_env(env):
                synchronize(device)
                start = time.perf_counter()
                train_epoch(model, optimizer, batches)
                synchronize(device)
                times[key].append((time.perf_counter() - start) * n_batches / timed)
        print(f"round {r + 1}: " + ", ".join(f"{key} {t[-1]:.2f} s" for key, t in times.items()))

    base = statistics.median(times[args.only[0]])
    print(f"\nTraining speed on torch {torch_build()}, {args.device}:\n")
    print(f"| {'s/epoch, median of ' + str(args.rounds) + ' rounds':<40} | s/epoch | vs {args.only[0]} |")
    print(f"|{'-' * 42}|--------:|-------:|")
    for key, t in times.items():
        med = statistics.median(t)
        print(f"| {FRAMEWORKS[key][0]:<40} | {med:7.2f} | {med / base:5.1f}x |")


if __name__ == "__main__":
    main()
