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


def test_the_pinned_torch_passes(bench, tmp_path):
    pin = tmp_path / "torch-pin.txt"
    pin.write_text(f"torch=={torch.__version__}\n")
    bench.check_torch_build(str(pin))


def test_another_torch_is_refused_naming_both(bench, tmp_path):
    pin = tmp_path / "torch-pin.txt"
    pin.write_text("torch==2.13.0+cpu\n" if torch.__version__ != "2.13.0+cpu" else "torch==2.14.1+cu130\n")
    with pytest.raises(SystemExit) as caught:
        bench.check_torch_build(str(pin))
    message = str(caught.value)
    assert torch.__version__ in message and pin.read_text().strip().removeprefix("torch==") in message
    assert "Run make install again" in message


def test_a_missing_pin_is_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="cannot read the torch pin .*; run make install"):
        bench.check_torch_build(str(tmp_path / "nope.txt"))


def test_the_table_names_the_torch_build(bench, capsys):
    bench.main(["--clips", "32", "--batches", "1", "--rounds", "1", "--only", "fused"])
    out = capsys.readouterr().out
    assert f"Training speed on torch {bench.torch_build()}, cpu:" in out and "| nwtrain, fused kernels" in out
