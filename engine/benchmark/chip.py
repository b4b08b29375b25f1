"""What a benchmark result says about the machine: the environment block, and the chip's limit.

``environment()`` is the block every result carries (CPU model and the ISA flags that matter for
fp32 and int8, the int8 ISA class and recipe, memory, GPUs, onnxruntime and library versions).
``gemm_peak`` measures this chip's fp32 and int8 GEMM rates through onnxruntime in the run, and
``model_flops_per_token`` / ``limit_fields`` turn a contender's tokens/s into a share of that peak.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform

import numpy as np

from .clock import Clock, PerfClock

CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_vpopcntdq",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
)
VERSIONED = (
    "embed-engine",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "numba",
    "torch",
    "sentence-transformers",
    "transformers",
    "optimum-onnx",
    "optimum",
    "psutil",
)


# -- environment ------------------------------------------------------------------------
def _cpuinfo() -> dict:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    from ..runtime import physical_cores

    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "flags": {f: f in flags for f in CPU_FLAGS},
    }


def _gpus() -> list[dict]:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): other work on the cores
    makes timings noisy, so every timed result records it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment() -> dict:
    """CPU model and SIMD flags, the int8 ISA class and recipe (models/quantize.py), the emulated ISA
    class when CPUID is masked (bench/isa_emulation/run.py; the flags are then the emulated ones), cores, memory,
    GPUs (nvidia-smi), providers, the onnxruntime version and other library versions, and the load
    average when it was taken."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in VERSIONED:
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except ImportError:
        providers = []
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem = None
    env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "EMBED_ENGINE_CACHE", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    }
    from ..models.quantize import cpu_isa, int8_recipe

    isa = cpu_isa()
    # bench/isa_emulation/run.py: CPUID masked to a lesser class (its code paths at this core's speed)
    emulated = os.environ.get("EMBED_ISA_EMULATE") or None
    return {
        "cpu": _cpuinfo(),
        "int8_isa": isa,
        "int8_recipe": int8_recipe(isa),
        "isa_emulation": emulated,
        "onnxruntime": versions.get("onnxruntime") or versions.get("onnxruntime-gpu"),
        "memory_gb": mem,
        "gpu": _gpus(),
        "onnxruntime_providers": providers,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "env": env,
        "load_average": load_average(),
    }


def chip_line(env: dict | None = None) -> str:
    """One line naming the chip for a script's printed output: CPU model, cores, the ISA flags that
    matter (``CPU_FLAGS`` present), the int8 ISA class and recipe, onnxruntime and the load average."""
    env = env or environment()
    cpu = env["cpu"]
    flags = " ".join(f for f, on in cpu["flags"].items() if on) or "none of note"
    emulated = env.get("isa_emulation")
    where = f"EMULATED {emulated} (CPUID masked, bench/isa_emulation) on " if emulated else ""
    return (
        f"chip: {where}{cpu['model']} ({cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores); "
        f"flags {flags}; int8 ISA class {env['int8_isa']} (recipe {env['int8_recipe']}); "
        f"onnxruntime {env['onnxruntime']}; load average {env['load_average']}"
    )


# -- the chip's limit: GEMM rates and the model's FLOPs ------------------------------------
# A transformer layer's weight product as the engine runs it on CPU: (2 texts x 256 tokens) rows x
# hidden 384 @ 384 x intermediate 1536 (Embedder.max_cells = 2 x 256^2 makes 512-row batches); a
# taller product's output leaves the cache and understates the chip's limit.
# chosen by measurement: bench/experiments/int8_experiments.md ("Distance to the limit")
PEAK_SHAPE = (512, 384, 1536)


def gemm_graph(m: int, k: int, n: int, int8: bool) -> bytes:
    """A one-node ONNX model (serialized ModelProto) computing (m x k) @ (k x n), the right
    operand a constant as a model's weights are: ``MatMul`` in fp32, or ``MatMulInteger`` with a
    uint8 left operand (zero point 128, as dynamic quantization makes) and int8 weights.

    Written as protobuf bytes (:mod:`engine.onnx_bytes`), so measuring needs no ``onnx``.
    """
    from .. import onnx_bytes as pb

    rng = np.random.default_rng(0)
    if int8:
        b = rng.integers(-127, 128, size=(k, n), dtype=np.int8)
        inits = [pb.tensor("B", b, pb.INT8), pb.tensor("a_zp", np.array(128, np.uint8), pb.UINT8)]
        node = pb.node("MatMulInteger", ["A", "B", "a_zp"], ["Y"], "gemm")
        a_type, y_type = pb.UINT8, pb.INT32
    else:
        inits = [pb.tensor("B", rng.standard_normal((k, n)).astype(np.float32), pb.FLOAT)]
        node = pb.node("MatMul", ["A", "B"], ["Y"], "gemm")
        a_type = y_type = pb.FLOAT
    return pb.model(
        [node], [pb.value_info("A", a_type, (m, k))], [pb.value_info("Y", y_type, (m, n))], inits, name="gemm"
    )


def gemm_peak(
    threads: int, shape: tuple[int, int, int] = PEAK_SHAPE, min_s: float = 0.4, clock: Clock | None = None
) -> dict:
    """This machine's fp32 and int8 GEMM rates, as onnxruntime runs them, measured now.

    One ``MatMul`` (fp32) and one ``MatMulInteger`` (u8 x s8) graph of ``shape``, each in an
    engine Session; after a warm-up call the two take turns (one call each) until each has run at
    least 3 times and ``min_s`` seconds; the fastest call counts (a shared machine: the least
    disturbed one). A product is ``2 * m * k * n`` operations (one multiply, one add per term).

    Args:
        threads: intra-op threads of each session.
        shape: (m, k, n) of the product (m x k) @ (k x n).
        min_s: the least time each graph runs for.
        clock: the clock to read (default the real one).

    Returns:
        ``{"shape", "threads", "fp32_gflops", "int8_gops", "int8_over_fp32"}``.
    """
    from ..runtime import Session

    clock = clock or PerfClock()
    m, k, n = shape
    rng = np.random.default_rng(1)
    feeds: dict[str, dict[str, np.ndarray]] = {
        "fp32": {"A": rng.standard_normal((m, k)).astype(np.float32)},
        "int8": {"A": rng.integers(0, 256, size=(m, k), dtype=np.uint8)},
    }
    sessions = {kind: Session(gemm_graph(m, k, n, kind == "int8"), "cpu", threads) for kind in feeds}
    best: dict[str, list[float]] = {}
    for kind, sess in sessions.items():
        sess.run(feeds[kind])  # warm-up: weight packing, thread pool
        best[kind] = []
    start = clock.now()
    while min(len(v) for v in best.values()) < 3 or clock.now() - start < 2 * min_s:
        for kind, sess in sessions.items():
            t0 = clock.now()
            sess.run(feeds[kind])
            best[kind].append(clock.now() - t0)
    ops = 2.0 * m * k * n
    fp32 = ops / min(best["fp32"]) / 1e9
    int8 = ops / min(best["int8"]) / 1e9
    return {
        "shape": list(shape),
        "threads": threads,
        "fp32_gflops": round(fp32, 1),
        "int8_gops": round(int8, 1),
        "int8_over_fp32": round(int8 / fp32, 2),
    }


def transformer_shape(embedder) -> dict | None:
    """{"layers", "hidden", "intermediate"} of the embedder's transformer, from the model folder's
    config.json (BERT-style names, or the n_layer / n_embd / n_inner family); None when the
    folder or the numbers are not available (the fraction of peak is then not reported)."""
    from ..models.fetch import resolve

    source = str((embedder._exported.meta or {}).get("source", ""))
    where = source.split(":", 1)[1] if source.startswith(("local:", "hub:")) else embedder.spec.name
    try:
        cfg = json.loads((resolve(where).folder / "config.json").read_text())
    except Exception:  # not installed, no config: no FLOP count
        return None
    pick = lambda *names: next((cfg[x] for x in names if isinstance(cfg.get(x), int)), None)
    layers = pick("num_hidden_layers", "n_layer", "n_layers", "num_layers")
    hidden = pick("hidden_size", "n_embd", "d_model", "dim")
    inter = pick("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")
    if inter is None and hidden:
        inter = 4 * hidden
    if not (layers and hidden and inter):
        return None
    return {"layers": layers, "hidden": hidden, "intermediate": inter}


def model_flops_per_token(embedder, seq_len: float, shape: dict | None = None) -> float | None:
    """The transformer's matrix-product FLOPs per token of a ``seq_len``-token text.

    Per layer and token, with hidden size h, intermediate size i and sequence length L (2 FLOPs
    per multiply-add): Q, K, V and output projections 4 * 2h^2; the two FFN products 2 * 2hi;
    attention scores Q.K^T 2Lh and context P.V 2Lh (all heads together). So

        flops/token = layers * (8 h^2 + 4 h i + 4 L h)

    Elementwise work (softmax, layer norms, GELU, embeddings, pooling) is not counted: this is the
    GEMM work the chip's GEMM peak bounds. ``seq_len`` is the measured mean length; the attention
    term of a batch grows with its padded length, which this ignores. ``shape`` overrides
    ``transformer_shape(embedder)``; None when neither gives the numbers.
    """
    shape = shape or transformer_shape(embedder)
    if shape is None:
        return None
    h, i = shape["hidden"], shape["intermediate"]
    return float(shape["layers"] * (8 * h * h + 4 * h * i + 4 * seq_len * h))


def limit_fields(tokens_per_s: float, flops_per_token: float | None, precision: str, peak: dict | None) -> dict:
    """``{"gflops", "fraction_of_peak"}`` of a contender: achieved GFLOP/s (tokens/s x FLOPs per
    token) and its share of this chip's measured GEMM peak (int8 peak for int8, else fp32);
    None where the FLOPs or the peak are unknown."""
    if flops_per_token is None:
        return {"gflops": None, "fraction_of_peak": None}
    gflops = tokens_per_s * flops_per_token / 1e9
    ref = (peak or {}).get("int8_gops" if precision == "int8" else "fp32_gflops")
    return {"gflops": round(gflops, 2), "fraction_of_peak": round(gflops / ref, 3) if ref else None}
