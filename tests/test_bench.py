"""bench/train_speed.py times on the torch `make install` chose, and says which one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_names_version_and_kind(bench):
    kind = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    assert bench.torch_build() == f"{torch.__version__} ({kind} build)"


@pytest.fixture
def own_pin(tmp_path):
    """The pin make install writes for this torch."""
    pin = tmp_path / "torch-pin.txt"
    pin.write_text(f"torch=={torch.__version__}\n")
    return pin


def test_the_pinned_torch_passes(bench, own_pin):
    bench.check_torch_build(str(own_pin))


@pytest.fixture
def other_pin(tmp_path):
    """A pin naming another torch than this one."""
    pin = tmp_path / "torch-pin.txt"
    pin.write_text("torch==2.13.0+cpu\n" if torch.__version__ != "2.13.0+cpu" else "torch==2.14.1+cu130\n")
    return pin


def test_another_torch_is_refused_naming_both(bench, other_pin):
    with pytest.raises(SystemExit) as caught:
        bench.check_torch_build(str(other_pin))
    message = str(caught.value)
    assert torch.__version__ in message and other_pin.read_text().strip().removeprefix("torch==") in message
    assert "Run make install again" in message


def test_a_missing_pin_is_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="cannot read the torch pin .*; run make install"):
        bench.check_torch_build(str(tmp_path / "nope.txt"))


# a short run; --threads keeps this process's torch thread count as the other tests have it
def short_run(*extra):
    return [
        "--clips",
        "32",
        "--batches",
        "1",
        "--rounds",
        "1",
        "--only",
        "fused",
        "--threads",
        str(torch.get_num_threads()),
        *extra,
    ]


def test_the_bench_refuses_to_time_on_another_torch(bench, other_pin, capsys):
    with pytest.raises(SystemExit) as caught:
        bench.main(short_run("--torch-pin", str(other_pin)))
    # a message for a code: Python prints it and exits with status 1
    assert isinstance(caught.value.code, str) and "Run make install again" in caught.value.code
    assert "round 1" not in capsys.readouterr().out


def test_the_table_names_the_torch_build(bench, own_pin, capsys):
    bench.main(short_run("--torch-pin", str(own_pin)))
    out = capsys.readouterr().out
    assert f"Training speed on torch {bench.torch_build()}, cpu:" in out and "| nwtrain, fused kernels" in out
