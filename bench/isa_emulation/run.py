"""Run a command as it runs on a lesser x86 CPU: AVX-512, VNNI and AMX hidden from CPUID.

    .venv/bin/python bench/isa_emulation/run.py avx2 -- .venv/bin/python bench/isa_report.py --out DIR
    .venv/bin/python bench/isa_emulation/run.py avx2 --check      # what the emulated process sees

Classes (models/quantize.py ``ISA_CLASSES``) and what is hidden from CPUID and /proc/cpuinfo:

==========  =====================================================================================
avx2        every AVX-512 feature, AVX-VNNI (and -INT8/-INT16), AMX: a Zen 2/3 or Skylake client CPU
avx_vnni    every AVX-512 feature, AMX; AVX-VNNI kept: an Alder/Raptor Lake client CPU
avx512      VNNI (512- and 256-bit), BITALG, VPOPCNTDQ, VBMI2, BF16/FP16, AMX: a Skylake-SP server
==========  =====================================================================================

How: ``cpuid_mask.c`` (built here with the system C compiler, cached under build/) is preloaded;
it turns on Linux CPUID faulting for the process and answers every CPUID with those bits cleared,
so onnxruntime's MLAS, torch (ATen, oneDNN, MKL) and Numba's LLVM pick the kernels they pick on
such a CPU, and /proc/cpuinfo reads lack the same flags (the engine's ``cpu_isa()``). Needs x86-64
Linux with the ``cpuid_fault`` CPU flag (most KVM guests and Intel hosts) and gcc or cc.

What this measures and what it does not: the emulated class's code paths and their results
(recipes, int16 saturation, which kernels run, relative costs of ops) exactly; their speed on
*this* core, not on a real CPU of that class (another microarchitecture, clock and cache). Speed
figures from it are named "emulated <class> on <this chip>" (``environment()["isa_emulation"]``)
and stand beside, never instead of, runs on real machines.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cpuid_mask.c"
CLASSES = ("avx2", "avx_vnni", "avx512")
ENV = "EMBED_ISA_EMULATE"

# Run inside the emulated process: the engine's ISA class, onnxruntime's u8 x s8 kernel (a GEMM
# whose int16 pair sums saturate on vpmaddubsw: 2 x 255 x 127 > 32767), torch's and LLVM's view.
PROBE = r"""
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
from engine.models.quantize import cpu_isa
k = 64
g = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
    [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k]),
     helper.make_tensor_value_info("B", TensorProto.INT8, [k, None])],
    [helper.make_tensor_value_info("Y", TensorProto.INT32, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
y = int(s.run(None, {"A": np.full((4, k), 255, np.uint8), "B": np.full((k, 4), 127, np.int8)})[0][0, 0])
import llvmlite.binding as ll
f = ll.get_host_cpu_features()
line = f"cpu_isa={cpu_isa()} u8s8_saturates={y != 255 * 127 * k} llvm_avx512f={bool(f.get('avx512f'))}"
try:
    import torch
    line += f" torch={torch.backends.cpu.get_cpu_capability()}"
except ImportError:
    pass
print(line)
"""


def build() -> Path:
    """The shim, compiled once per source version."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    lib = HERE / "build" / f"cpuid_mask-{digest}.so"
    if lib.is_file():
        return lib
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("run.py: no C compiler (gcc or cc) on PATH; install one (e.g. apt install gcc)")
    lib.parent.mkdir(exist_ok=True)
    tmp = lib.with_suffix(".tmp.so")
    r = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE), "-ldl"], capture_output=True, text=True
    )
    if r.returncode != 0:
        sys.exit(f"run.py: building the shim failed ({cc}):\n{r.stderr.strip()}")
    os.replace(tmp, lib)
    return lib


def emulated_env(isa: str) -> dict:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        sys.exit("run.py: CPUID masking needs x86-64 Linux")
    from engine.models.quantize import ISA_CLASSES, cpu_flags

    need = dict(ISA_CLASSES)[isa]
    missing = sorted(set(need) - cpu_flags())
    if missing:  # the shim hides features; it cannot add any
        sys.exit(
            f"run.py: this CPU lacks {', '.join(missing)}: it cannot run as {isa} (only features it has can be hidden)"
        )
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(build()), env.get("LD_PRELOAD", "")]))
    env[ENV] = isa
    return env


def check(isa: str, env: dict) -> str:
    """The probe's line; exits when the emulated process does not see the class it should."""
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"run.py: the probe failed under {isa} emulation:\n{out.stderr.strip()}")
    line = out.stdout.strip().splitlines()[-1]
    want_saturation = isa in ("avx2", "avx512")
    if f"cpu_isa={isa} " not in line + " " or f"u8s8_saturates={want_saturation}" not in line:
        sys.exit(f"run.py: emulating {isa} did not take: {line}")
    return line


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("isa", choices=CLASSES)
    ap.add_argument("--check", action="store_true", help="only print what the emulated process sees")
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    env = emulated_env(args.isa)
    print(f"emulating {args.isa}: {check(args.isa, env)}", file=sys.stderr, flush=True)
    if args.check or not cmd:
        return 0
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
