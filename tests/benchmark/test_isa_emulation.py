"""The AVX2 code paths, run for real on a bigger CPU: bench/isa_emulation/run.py hides AVX-512,
VNNI and AMX from CPUID, so onnxruntime's MLAS takes its AVX2 ``vpmaddubsw`` u8 x s8 kernel
(int16 pair sums that saturate) and Numba compiles for AVX2. The int8 index tests then run in
that process: the GEMM search's 7-bit queries must give the integer oracle's candidates on the
saturating kernel too. Skipped where CPUID cannot be masked (not x86-64 Linux, no ``cpuid_fault``
flag, no C compiler)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "isa_emulation" / "run.py"


def _can_mask() -> bool:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return False
    if not (shutil.which("gcc") or shutil.which("cc")):
        return False
    try:
        return "cpuid_fault" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _can_mask(), reason="CPUID masking needs x86-64 Linux, cpuid_fault and gcc")


def _run(*args, timeout=600):
    r = subprocess.run([sys.executable, str(RUN), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if "building the shim failed" in r.stderr:  # a compiler without the C library's headers
        pytest.skip(r.stderr.strip().splitlines()[0])
    if "no CPUID faulting" in r.stderr:  # the flag is there but the kernel (or a seccomp filter) refuses
        pytest.skip(r.stderr.strip().splitlines()[-1])
    return r


@pytest.mark.parametrize("isa, saturates", [("avx2", True), ("avx_vnni", False), ("avx512", True)])
def test_the_emulated_process_sees_the_class(isa, saturates):
    from engine.models.quantize import ISA_CLASSES, cpu_flags

    if not set(dict(ISA_CLASSES)[isa]) <= cpu_flags():
        pytest.skip(f"this CPU has no {isa} features to keep")
    r = _run(isa, "--check")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"cpu_isa={isa} u8s8_saturates={saturates}" in r.stderr


def test_int8_index_on_the_avx2_kernels():
    r = _run(
        "avx2",
        "--",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-disable",
        "-x",
        "tests/index/test_qgemm.py",
        "tests/index/test_codecs.py",
        "-k",
        "int8",
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


def test_bf16_is_refused_where_bf16_units_are_hidden():
    """On an AVX2 CPU (a bf16 CPU with AVX-512 and AMX hidden), the engine and OpenVINO both see no
    bf16 units, and Embedder(model_precision='bf16') is refused by name before any export."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    code = (
        "import openvino, sys\n"
        "from engine import Embedder\n"
        "from engine.runtime import cpu_class\n"
        "caps = openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')\n"
        "print('class', cpu_class(), 'BF16' in caps, file=sys.stderr)\n"
        "try:\n"
        "    Embedder('all-MiniLM-L6-v2', model_precision='bf16', cache_dir=sys.argv[1])\n"
        "except Exception as e:\n"
        "    print('refused', type(e).__name__, e, file=sys.stderr)\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        r = _run("avx2", "--", sys.executable, "-c", code, cache)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "class avx2 False" in r.stderr
        assert "refused InputError model_precision='bf16' needs a CPU with bf16 units" in r.stderr
        assert not list(Path(cache).glob("onnx/*"))
