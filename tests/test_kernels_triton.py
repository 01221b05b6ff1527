"""The Triton backend (``nwtrain.kernels.cuda``) without a GPU, and its selection.

* ``test_kernels.py``'s equality, gradcheck and state tests (the ``triton`` cases) run where Triton can run:
  in-process on CUDA tensors when there is a GPU; on machines without one, ``test_interpreter_suite`` runs
  them, and this module, in a pytest subprocess started with ``TRITON_INTERPRET=1``, where Triton executes
  the same kernels on CPU tensors in numpy.
* ``test_kernels_compile_for_gpus`` compiles every kernel variant the launchers ask for to machine code of
  real GPUs (Triton's compiler and ptxas need no GPU) and checks the property the bit-for-bit forward rests
  on, which the interpreter cannot show: no fused multiply-add anywhere.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_kernels import HAS_TRITON, INTERPRETED, TRITON, fresh_log, needs_triton  # noqa: F401 - a fixture

from nwtrain import kernels
from nwtrain.kernels import codes
from nwtrain.layers import H1v2Layer, prepare_net

ROOT = Path(__file__).resolve().parents[1]
needs_triton_package = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (CPU-only torch)")
needs_compiler = pytest.mark.skipif(INTERPRETED, reason="needs Triton's compiler, not its interpreter")


@needs_triton_package
def test_interpreter_suite():
    """Every Triton test of the default run, under Triton's interpreter."""
    if INTERPRETED:
        pytest.skip("this process is the interpreter run")
    if torch.cuda.is_available():
        # The same cases run compiled, on the GPU, in this process (test_kernels.py's triton backend). The
        # interpreter is also the least stable part of Triton: on the H200 image (Triton 3.6, numpy 2.5) its
        # probe kernel fails with "only 0-dimensional arrays can be converted to Python scalars".
        pytest.skip("the Triton cases run compiled on this machine's GPU")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(kernels.ENV_VAR, None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton"]
    cmd += [str(ROOT / "tests" / "test_kernels.py"), str(Path(__file__))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert " passed" in proc.stdout.strip().splitlines()[-1]


# -------------------------------------------------------------------------------------------------------
# Selection and fallback
# -------------------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.usefixtures("fresh_log")
def test_triton_path_runs_and_is_logged(monkeypatch, caplog):
    monkeypatch.setenv(kernels.ENV_VAR, TRITON.path)
    x = torch.rand(2, 5, 3, device=TRITON.device, requires_grad=True)
    spk, _ = prepare_net(H1v2Layer(3).to(TRITON.device))(x)
    assert type(spk.grad_fn).__name__ == "LinearLeakSequenceBackward"
    name = "Triton interpreter" if INTERPRETED else "triton"
    assert f"fused {TRITON.device.upper()} kernel ({name})" in caplog.text


@needs_triton_package
@needs_compiler
@pytest.mark.usefixtures("fresh_log")
def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch, caplog):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    spk, _ = prepare_net(H1v2Layer(3))(torch.rand(2, 5, 3, requires_grad=True))
    assert type(spk.grad_fn).__name__ != "LinearLeakSequenceBackward"
    assert "reference torch loop: NWTRAIN_KERNELS=triton on CPU tensors needs Triton's interpreter" in (
        caplog.text
    )


@needs_triton_package
def test_falls_back_when_the_probe_fails(monkeypatch):
    """A GPU that Triton cannot compile for (or a missing toolchain) shows up in the probe."""
    from nwtrain.kernels import cuda

    def broken(device):
        raise RuntimeError("ptxas: unsupported GPU")

    monkeypatch.setattr(cuda, "probe", broken)
    backend, reason = kernels._load_triton.__wrapped__(torch.device("cuda", 0))
    assert backend is None
    assert reason == "Triton kernels unavailable on cuda:0 (RuntimeError: ptxas: unsupported GPU)"


def test_falls_back_when_triton_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what a CPU-only torch install looks like to import
    monkeypatch.delitem(sys.modules, "nwtrain.kernels.cuda", raising=False)
    monkeypatch.delattr(kernels, "cuda", raising=False)  # else ``from . import cuda`` finds it on the package
    backend, reason = kernels._load_triton.__wrapped__(torch.device("cuda", 0))
    assert backend is None and reason.startswith("Triton kernels unavailable on cuda:0 (ModuleNotFoundError")


# -------------------------------------------------------------------------------------------------------
# Compiled for real GPUs: every variant builds, and no multiply-add is fused
# -------------------------------------------------------------------------------------------------------
def _compile_instead_of_launch(kernel, arch: int, compiled: dict):
    """A stand-in for ``kernel.run`` (what ``kernel[grid](...)`` calls) that compiles the launch's
    specialisation for ``sm_<arch>`` and keeps its PTX and machine code, launching nothing."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.uint8: "*u8"}

    def run(*args, grid, warmup, **kwargs):
        bound = dict(zip(kernel.arg_names, args)) | {k: v for k, v in kwargs.items() if k in kernel.arg_names}
        options = {k: v for k, v in kwargs.items() if k not in kernel.arg_names}
        signature, constexprs = {}, {}
        for param in kernel.params:
            value = bound[param.name]
            if param.is_constexpr:
                signature[param.name], constexprs[param.name] = "constexpr", value
            else:
                signature[param.name] = pointer[value.dtype] if torch.is_tensor(value) else "i32"
        binary = triton.compile(
            ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32), options=options
        )
        key = (kernel.__name__, signature[kernel.arg_names[0]], tuple(sorted(constexprs.items())))
        compiled[key] = binary.asm

    return run


@needs_triton_package
@needs_compiler
@pytest.mark.parametrize("arch", [80, 90])  # A100, H100
def test_kernels_compile_for_gpus(arch, monkeypatch, tmp_path):
    import triton

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this Triton has no NVIDIA backend")
    from nwtrain.kernels import cuda

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile here, not from an earlier run's cache
    compiled = {}
    for name in ("lif_forward", "lif_backward", "leak_forward", "leak_backward"):
        kernel = getattr(cuda, f"_{name}_kernel")
        monkeypatch.setattr(kernel, "run", _compile_instead_of_launch(kernel, arch, compiled))
    for dtype in (torch.float32, torch.float64):
        seq, mem0, vec = (torch.zeros(shape, dtype=dtype) for shape in ((2, 3, 5), (2, 5), (5,)))
        for reset in ("subtraction", "zero", "none"):
            spikes, mems, _ = cuda.lif_forward(seq, mem0, vec, vec, reset)
            *_, flags = cuda.leak_forward(seq, mem0, vec, vec[0], 0.01, reset)
            for g_mems in (None, seq):
                for need_params in (False, True):
                    cuda.lif_backward(seq, g_mems, spikes, mems, mem0, vec, reset, need_params)
                    cuda.leak_backward(seq, g_mems, flags, 0.01, 0.0, reset, need_params)
    # dtypes x resets x (forward + 4 backward variants) x neuron families
    assert len(compiled) == 2 * 3 * (1 + 4) * 2
    for key, asm in compiled.items():
        assert not re.search(r"\bfma\.", asm["ptx"]), f"fused multiply-add in the PTX of {key}"
    # ptxas may still contract a multiply and an add: the machine code of the variants with every branch
    # (subtraction reset, both gradient inputs) must show none either (disassembly costs 0.3 s a kernel)
    from triton.tools.disasm import get_sass

    def every_branch(constexprs):
        c = dict(constexprs)
        return c["RESET"] == codes.SUBTRACTION and c.get("HAS_G_MEMS", True) and c.get("NEED_PARAMS", True)

    full = {key: asm for key, asm in compiled.items() if every_branch(key[2])}
    assert len(full) == 2 * 4  # dtypes x kernels
    for key, asm in full.items():
        sass = get_sass(asm["cubin"])
        assert not re.search(r"\b[FD]FMA\b", sass), f"fused multiply-add in the SASS of {key}"
        # the check can fail: the LIF forward's decay * v is a plain multiply
        assert key[0] != "_lif_forward_kernel" or re.search(r"\b[FD]MUL\b", sass)
