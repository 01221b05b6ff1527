# Vendor tutorial 1 (shared/seeds/002_*), its code cells verbatim but for the nwavesdk -> nwtrain imports.
import torch
import torch.nn as nn
import numpy as np
import matplotlib.pyplot as plt
from nwtrain.layers import H1v1Synapse, H1v1Layer, LIFSynapse, LIFLayer, prepare_net
torch.manual_seed(42)
np.random.seed(42)
DT = 1e-3 # 1 ms timestep
T = 50 # 50 ms simulation

torch.manual_seed(0)
input_spikes = (torch.rand(1, T, 1) < 0.30).float() # [batch=1, T, features=1]
print(
    f"Spike train: {int(input_spikes.sum())} spikes over {T} ms "
    f"(rate = {input_spikes.mean():.0%})"
)
t_ms = np.arange(T) * DT * 1000
fig, ax = plt.subplots(figsize=(12, 1.8))
ax.eventplot(
    np.where(input_spikes[0, :, 0].numpy())[0],
    lineoffsets=0,
    linelengths=0.8,
    color="black",
    linewidths=1.5,
)
ax.set_xlim(0, T)
ax.set_xlabel("Time (ms)", fontsize=11)
ax.set_title("Input spike train (30% Poisson rate)", fontsize=12)
ax.set_yticks([])
ax.grid(axis="x", alpha=0.3)
plt.tight_layout()
plt.show()


# Helper: membrane traces + spike raster
def plot_traces(mems_dict, spks_dict, title, threshold_line=None):
    n = len(mems_dict)
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, n))
    t = np.arange(len(next(iter(mems_dict.values())))) * DT * 1000
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for i, (lbl, mem) in enumerate(mems_dict.items()):
        ax1.plot(t, mem, label=lbl, color=colors[i], linewidth=1.8)
    if threshold_line is not None:
        ax1.axhline(
            threshold_line,
            color="crimson",
            linestyle="--",
            linewidth=1.2,
            alpha=0.7,
            label=f"threshold = {threshold_line}",
        )
    ax1.set_ylabel("Membrane potential")
    ax1.legend(loc="upper right", fontsize=9)
    ax1.grid(True, alpha=0.2)
    ax1.set_title(title)
    for i, (lbl, spks) in enumerate(spks_dict.items()):
        st = np.where(spks)[0]
        if len(st):
            ax2.eventplot(
                st, lineoffsets=i, linelengths=0.8, color=colors[i], linewidths=1.5
            )
    ax2.set_yticks(range(n))
    ax2.set_yticklabels(list(spks_dict.keys()), fontsize=8)
    ax2.set_xlabel("Time (ms)")
    ax2.set_ylabel("Spikes")
    ax2.grid(axis="x", alpha=0.2)
    plt.tight_layout()
    plt.show()


class LIFNet(nn.Module):
    def __init__(self, weight, tau, threshold=1, dt=DT, reset="subtraction"):
        super().__init__()
        _w = weight
        self.syn = LIFSynapse(1, 1, init=lambda w: nn.init.constant_(w, _w))
        self.lif = LIFLayer(
            1, taus=tau, thresholds=threshold, dt=dt, reset_mechanism=reset
        )

    def forward(self, x):
        self.eval()
        prepare_net(self)
        mems, spks = [], []
        for t in range(x.shape[1]):
            cur = self.syn(x[:, t, :])
            spk, mem = self.lif(cur)
            mems.append(mem[0, 0].item())
            spks.append(spk[0, 0].item())
        return np.array(mems), np.array(spks)


taus_to_test = {
    "tau=5ms": 5e-3,
    "tau=10ms": 10e-3,
    "tau=20ms": 20e-3,
    "tau=50ms": 50e-3,
}
W, THRESH = 0.5, 1.0
mems, spks = {}, {}
for lbl, tau in taus_to_test.items():
    lif = LIFNet(weight=W, tau=tau, dt=DT)
    mems[lbl], spks[lbl] = lif(input_spikes)
plot_traces(
    mems,
    spks,
    title="LIF: Effect of tau (weight=0.5, threshold=1.0, reset=subtraction)",
    threshold_line=THRESH,
)
for lbl, s in spks.items():
    print(f" {lbl}: spike rate = {s.mean():.1%}")

thresholds_to_test = {"th=0.3": 0.3, "th=0.6": 0.6, "th=1.0": 1.0, "th=2.0": 2.0}
W, TAU = 0.5, 20e-3
mems, spks = {}, {}
for lbl, thresh in thresholds_to_test.items():
    lif = LIFNet(weight=W, tau=TAU, threshold=thresh, dt=DT)
    mems[lbl], spks[lbl] = lif(input_spikes)
plot_traces(
    mems,
    spks,
    title="LIF: Effect of threshold (weight=0.5, tau=20ms, reset=subtraction)",
)
for lbl, s in spks.items():
    print(f" {lbl}: spike rate = {s.mean():.1%}")

W, TAU, THRESH = 0.5, 20e-3, 1.0
mems, spks = {}, {}
for reset in ["subtraction", "zero", "none"]:
    lif = LIFNet(weight=W, tau=TAU, dt=DT, reset=reset)
    mems[reset], spks[reset] = lif(input_spikes)
plot_traces(
    mems,
    spks,
    title="LIF: Effect of reset mechanism (weight=0.5, tau=20ms, threshold=1.0)",
    threshold_line=THRESH,
)
for lbl, s in spks.items():
    print(f" reset={lbl}: spike rate = {s.mean():.1%}")

lif_learn = LIFLayer(
    5,
    taus=20e-3,
    thresholds=1.0,
    reset_mechanism="subtraction",
    dt=DT,
    learn_taus=True,
    learn_thresholds=True,
)
print("LIFLayer (learn_taus=True, learn_thresholds=True) - registered parameters:")
for name, p in lif_learn.named_parameters():
    print(f" {name:<30} shape={tuple(p.shape)} requires_grad={p.requires_grad}")

# LIFLayer: per-layer, freely configurable
lif_a = LIFLayer(3, taus=20e-3, thresholds=0.5, reset_mechanism="subtraction", dt=DT)
lif_b = LIFLayer(3, taus=20e-3, thresholds=2.0, reset_mechanism="subtraction", dt=DT)
print("LIFLayer: per-layer configurable threshold:")
print(f" Layer A threshold: {lif_a.thresholds[0].item():.2f}")
print(f" Layer B threshold: {lif_b.thresholds[0].item():.2f}")
print()
# H1v1Layer: single chip-level threshold. Identical regardless of which layer you inspect
h1_a = H1v1Layer(3, taus=20e-3, dt=DT)
h1_b = H1v1Layer(3, taus=50e-3, dt=DT) # different tau, but threshold is the same
print("H1v1Layer: chip-wide fixed threshold (same regardless of tau or layer):")
print(f" Layer A (tau=20ms) _vt: {h1_a._vt:.4f}")
print(f" Layer B (tau=50ms) _vt: {h1_b._vt:.4f} <- same chip-level value")
print()
print("Note: there is no per-neuron or per-layer threshold override in H1v1Layer.")
print(" The threshold is a hardware property of the Neuronova H1v1 chip.")

INH_W = -0.8


class LIFInhib(nn.Module):
    def __init__(self):
        super().__init__()
        self.syn = LIFSynapse(1, 1, use_bias=False)
        self.lif = LIFLayer(
            1, taus=20e-3, thresholds=1.0, reset_mechanism="subtraction", dt=DT
        )
        with torch.no_grad():
            self.syn.weight.fill_(INH_W)

    def forward(self, x):
        prepare_net(self)
        mems = []
        for t in range(x.shape[1]):
            _, mem = self.lif(self.syn(x[:, t, :]))
            mems.append(mem[0, 0].item())
        return np.array(mems)


class H1Inhib(nn.Module):
    def __init__(self):
        super().__init__()
        _w = INH_W
        self.syn = H1v1Synapse(1, 1, init=lambda w: nn.init.constant_(w, _w))
        self.h1 = H1v1Layer(1, taus=20e-3, dt=DT)

    def forward(self, x):
        prepare_net(self)
        mems = []
        for t in range(x.shape[1]):
            _, mem = self.h1(self.syn(x[:, t, :]))
            mems.append(mem[0, 0].item())
        return np.array(mems)


with torch.no_grad():
    lif_mem = LIFInhib()(input_spikes)
    h1_mem = H1Inhib()(input_spikes)
fig, ax = plt.subplots(figsize=(12, 4))
ax.plot(
    t_ms, lif_mem, label="LIFLayer (can go below 0)", color="tab:blue", linewidth=1.8
)
ax.plot(
    t_ms,
    h1_mem,
    label="H1v1Layer (clipped at 0)",
    color="tab:orange",
    linewidth=1.8,
    linestyle="--",
)
ax.axhline(0, color="black", linewidth=0.8, linestyle=":", alpha=0.6)
ax.fill_between(
    t_ms,
    np.minimum(lif_mem, 0),
    0,
    alpha=0.15,
    color="tab:blue",
    label="Negative region (LIF only)",
)
ax.set_xlabel("Time (ms)", fontsize=11)
ax.set_ylabel("Membrane potential", fontsize=11)
ax.set_title(
    "Non-negative membrane: inhibitory input (weight=-0.8), tau=20ms", fontsize=12
)
ax.legend(fontsize=10)
ax.grid(True, alpha=0.2)
plt.tight_layout()
plt.show()
print(f"LIF mem range: [{lif_mem.min():.4f}, {lif_mem.max():.4f}]")
print(f"H1v1 mem range: [{h1_mem.min():.4f}, {h1_mem.max():.4f}] <- always >= 0")

N, TAU_NOM, W = 5, 20e-3, 0.5


class H1Neurons(nn.Module):
    def __init__(self, mismatch):
        super().__init__()
        _w = W
        self.syn = H1v1Synapse(1, N, init=lambda w: nn.init.constant_(w, _w))
        self.h1 = H1v1Layer(N, taus=TAU_NOM, dt=DT, ileak_mismatch=mismatch)

    def forward(self, x):
        prepare_net(self)
        mems = []
        for t in range(x.shape[1]):
            _, mem = self.h1(self.syn(x[:, t, :]))
            mems.append(mem[0].detach().numpy().copy())
        return np.stack(mems) # [T, N]


torch.manual_seed(7)
with torch.no_grad():
    mems_nom = H1Neurons(mismatch=False)(input_spikes)
    mems_mm = H1Neurons(mismatch=True)(input_spikes)
colors = plt.cm.tab10(np.linspace(0, 0.5, N))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4))
for n in range(N):
    ax1.plot(t_ms, mems_nom[:, n], alpha=0.85, color=colors[n], label=f"Neuron {n}")
ax1.set_title("H1v1Layer: No mismatch (all 5 neurons identical)", fontsize=11)
ax1.set_xlabel("Time (ms)")
ax1.set_ylabel("Membrane potential")
ax1.legend(fontsize=9)
ax1.grid(True, alpha=0.2)
for n in range(N):
    ax2.plot(t_ms, mems_mm[:, n], alpha=0.85, color=colors[n], label=f"Neuron {n}")
ax2.set_title("H1v1Layer: ileak_mismatch=True (fabrication variability)", fontsize=11)
ax2.set_xlabel("Time (ms)")
ax2.legend(fontsize=9)
ax2.grid(True, alpha=0.2)
plt.suptitle(
    f"{N} neurons: same weight ({W}), same tau ({int(TAU_NOM*1000)} ms), same input",
    fontsize=12,
    y=1.02,
)
plt.tight_layout()
plt.show()

tau_req = 10e-3
lif_snap = LIFLayer(
    n_neurons=1, taus=tau_req, thresholds=1.0, reset_mechanism="subtraction", dt=DT
)
h1_snap = H1v1Layer(n_neurons=1, taus=tau_req, dt=DT)
vleak = float(h1_snap.Vleak.mean().item()) # membrane potential drained per step
vt = float(h1_snap._vt.item())
print(f"Requested tau: {tau_req * 1e3:.1f} ms")
print(f"LIF stored tau: {float(lif_snap.taus.item()) * 1e3:.3f} ms (exact)")
print(f"H1v1 Vleak/step: {vleak:.6f} (membrane drained per step)")
print(f"H1v1 drain time: {vt / vleak * DT * 1e3:.1f} ms (= _vt / Vleak × dt)")

from nwtrain.optim import SignAnnealing


class ToyH1Net(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.syn = H1v1Synapse(n_in, n_out)

    def forward(self, x):
        prepare_net(self)
        return torch.stack([self.syn(x[:, t, :]) for t in range(x.shape[1])], dim=1)


n_in, n_out = 12, 25
x_data = torch.randn(1, 128, n_in)
y_data = torch.randn(1, 128, n_out)
net = ToyH1Net(n_in, n_out)
W_initial = net.syn.weight.detach().clone()
epochs = 10
sign_annealer = SignAnnealing(net, total_epochs=epochs, alpha_start=0.5, alpha_end=12.0)
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
for epoch in range(epochs):
    optimizer.zero_grad()
    nn.functional.mse_loss(net(x_data), y_data).backward()
    optimizer.step()
    sign_annealer.step(net, epoch)
W_final = net.syn.weight.detach().cpu()
fig, axes = plt.subplots(1, 2, figsize=(16, 4))
axes[0].imshow((W_initial.numpy() > 0), aspect="auto", cmap="gray_r")
axes[0].set_title("Before SignAnnealing")
axes[0].set_xlabel("Output neuron")
axes[0].set_ylabel("Input")
axes[1].imshow((W_final.numpy() > 0), aspect="auto", cmap="gray_r")
axes[1].set_title("After SignAnnealing (white = positive)")
axes[1].set_xlabel("Output neuron")
for c in range(0, 25, 5):
    axes[1].axvline(c - 0.5, color="red", linewidth=0.8)
plt.tight_layout()
plt.show()
print(
    f"Weight range after training: [{W_final.min():.3f}, {W_final.max():.3f}] (limit: [-0.9, 0.9])"
)


class H1Net(nn.Module):
    def __init__(self, weight, tau, dt=DT):
        super().__init__()
        _w = weight
        self.syn = H1v1Synapse(1, 1, init=lambda w: nn.init.constant_(w, _w))
        self.h1 = H1v1Layer(1, taus=tau, dt=dt)

    def forward(self, x):
        self.eval()
        prepare_net(self)
        mems, spks = [], []
        for t in range(x.shape[1]):
            cur = self.syn(x[:, t, :])
            spk, mem = self.h1(cur)
            mems.append(mem[0, 0].item())
            spks.append(spk[0, 0].item())
        return np.array(mems), np.array(spks)


TAU, W = 20e-3, 0.5
h1 = H1Net(weight=W, tau=TAU, dt=DT)
lif = LIFNet(weight=W, tau=TAU, dt=DT)
lif_mem, lif_spks = lif(input_spikes)
h1_mem, h1_spks = h1(input_spikes)
h1_thresh = H1v1Layer(1, taus=TAU, dt=DT)._vt
fig, axes = plt.subplots(2, 2, figsize=(14, 7))
axes[0, 0].plot(t_ms, lif_mem, color="tab:blue", linewidth=1.8)
axes[0, 0].axhline(
    1.0,
    color="crimson",
    linestyle="--",
    linewidth=1.2,
    alpha=0.7,
    label="threshold = 1.0",
)
axes[0, 0].set_title("LIF: Membrane potential", fontsize=12)
axes[0, 0].set_ylabel("Membrane potential")
axes[0, 0].legend(fontsize=10)
axes[0, 0].grid(True, alpha=0.2)
axes[0, 1].plot(t_ms, h1_mem, color="tab:orange", linewidth=1.8)
axes[0, 1].axhline(
    h1_thresh,
    color="crimson",
    linestyle="--",
    linewidth=1.2,
    alpha=0.7,
    label=f"threshold ~{h1_thresh:.3f} (fixed, chip-level)",
)
axes[0, 1].set_title("H1v1: Membrane potential", fontsize=12)
axes[0, 1].legend(fontsize=10)
axes[0, 1].grid(True, alpha=0.2)
st_lif = np.where(lif_spks)[0]
axes[1, 0].eventplot(
    st_lif if len(st_lif) else [[-1]],
    lineoffsets=0,
    linelengths=0.8,
    color="tab:blue",
    linewidths=1.5,
)
axes[1, 0].set_title(f"LIF: Spikes (rate = {lif_spks.mean():.1%})", fontsize=12)
axes[1, 0].set_xlabel("Time (ms)")
axes[1, 0].set_yticks([])
axes[1, 0].set_xlim(0, T)
axes[1, 0].grid(axis="x", alpha=0.3)
st_h1 = np.where(h1_spks)[0]
axes[1, 1].eventplot(
    st_h1 if len(st_h1) else [[-1]],
    lineoffsets=0,
    linelengths=0.8,
    color="tab:orange",
    linewidths=1.5,
)
axes[1, 1].set_title(f"H1v1: Spikes (rate = {h1_spks.mean():.1%})", fontsize=12)
axes[1, 1].set_xlabel("Time (ms)")
axes[1, 1].set_yticks([])
axes[1, 1].set_xlim(0, T)
axes[1, 1].grid(axis="x", alpha=0.3)
plt.suptitle(
    f"LIF vs H1v1: same input, weight={W}, tau={int(TAU*1000)} ms\n"
    f"LIF threshold=1.0 (configurable) vs H1v1 threshold~{h1_thresh:.3f} (fixed chip-level)",
    fontsize=12,
)
plt.tight_layout()
plt.show()
