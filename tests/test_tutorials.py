"""The code cells of vendor tutorials 1 and 2 run unchanged (imports aside) and print the seeds' numbers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "tutorials"


def run_tutorial(name: str) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, str(HERE / name)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def tutorial1():
    return run_tutorial("tutorial1_h1v1.py")


@pytest.fixture(scope="module")
def tutorial2():
    return run_tutorial("tutorial2_h1v2.py")


@pytest.mark.parametrize(
    "line",
    [
        "Spike train: 19 spikes over 50 ms (rate = 38%)",
        " tau=5ms: spike rate = 10.0%",
        " tau=10ms: spike rate = 14.0%",
        " tau=20ms: spike rate = 16.0%",
        " tau=50ms: spike rate = 18.0%",
        " th=0.3: spike rate = 58.0%",
        " th=0.6: spike rate = 28.0%",
        " th=1.0: spike rate = 16.0%",
        " th=2.0: spike rate = 6.0%",
        " reset=subtraction: spike rate = 16.0%",
        " reset=zero: spike rate = 12.0%",
        " reset=none: spike rate = 76.0%",
        " Layer A (tau=20ms) _vt: 0.2040",
        " Layer B (tau=50ms) _vt: 0.2040 <- same chip-level value",
        "LIF mem range: [-7.0221, 0.0000]",
        "H1v1 mem range: [0.0000, 0.0000] <- always >= 0",
        "LIF stored tau: 10.000 ms (exact)",
        "H1v1 Vleak/step: 0.013600 (membrane drained per step)",
        "H1v1 drain time: 15.0 ms (= _vt / Vleak × dt)",
    ],
)
def test_tutorial1_prints(tutorial1, line):
    assert line in tutorial1.splitlines()


def test_tutorial1_learnable_parameters(tutorial1):
    lines = [ln.split() for ln in tutorial1.splitlines() if "requires_grad=True" in ln]
    assert [(ln[0], ln[1]) for ln in lines] == [("thresholds", "shape=(5,)"), ("_d_taus", "shape=(5,)")]


@pytest.mark.parametrize(
    "line",
    [
        "LIF threshold set to: 0.25",
        "H1v2Layer rejects custom `thresholds`:",
        "H1v2Synapse rejects `stddev` in constructor:",
        "Peak synaptic output: LIF=0.9000, H1v1=19.7304, H1v2=0.0786",
        "Total spikes: LIF=0, H1v1=0, H1v2=0",
        "Peak membrane: LIF=0.9000, H1v1=0.1973, H1v2=0.0786",
        " H1v1: 0.2040 V",
        " H1v2: 0.3226 V",
        " H1v1: 21.3811",
        " H1v2: 0.0873",
        " H1v1: 0.00954",
        " H1v2: 3.69324",
        "LIF effective tau: 17.000 ms",
        "H1v2 effective tau: 13.820 ms",
    ],
)
def test_tutorial2_prints(tutorial2, line):
    assert line in tutorial2.splitlines()
