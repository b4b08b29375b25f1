"""Lower-precision variants of an optimized fp32 graph: int8 for CPUs, fp16 for CUDA.

int8 is onnxruntime's *dynamic* quantization: weights are stored as int8 (per output channel),
activations are quantized to uint8 per batch at run time, and onnxruntime's CPU kernels (MLAS)
run the products as u8 x s8 integer GEMMs. The default recipe was chosen by
bench/experiments/int8_explore.py (numbers in bench/experiments/int8_experiments.md): quantize the
fused graph's MatMul and Attention nodes, s8 weights per channel, GELU in its tanh form. What
depends on the CPU is chosen per ISA class (``cpu_isa``, ``ISA_RECIPES``) at export time, and the
export cache is keyed by that choice (``int8_recipe``), so a cache copied to another kind of CPU
never runs a recipe made for a different one.

Everything heavy (onnx, onnxruntime.quantization) is imported inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ExportError

# The recipe the engine ships (bench/experiments/int8_experiments.md: best speed at mean cosine >= 0.99).
DEFAULT_INT8: dict = {
    "method": "dynamic",  # the only method here; static QDQ was rejected (bench/experiments/int8_static_qdq.py)
    "op_types": ("MatMul", "Attention"),
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": None,  # None: from the CPU's ISA class (ISA_RECIPES / INT8_RECIPES)
    "exclude": (),  # regular expressions over node names kept in fp32
    "gelu": "tanh",  # FastGelu instead of the erf form: faster, same parity
    # DefaultTensorType=FLOAT (1): shape inference cannot type the outputs of fused contrib ops.
    "extra_options": {"MatMulConstBOnly": True, "DefaultTensorType": 1},
}

# -- the CPU's int8 capability ----------------------------------------------------------
# ISA classes as onnxruntime's CPU provider (MLAS, core/mlas/lib/platform.cpp) picks its u8 x s8
# GEMM kernel, best first: the first class whose flags (/proc/cpuinfo names) are all present wins.
# Order follows MLAS: AMX replaces the whole u8s8 dispatch; AVX-512 core (BW/DQ/VL) replaces the
# AVX-VNNI kernel, and AVX-512 VNNI replaces that.
ISA_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("amx_int8", ("amx_tile", "amx_int8", "avx512_vnni")),  # TDPBUSD tiles; small GEMMs fall back to AVX-512 VNNI
    ("avx512_vnni", ("avx512bw", "avx512dq", "avx512vl", "avx512_vnni")),  # vpdpbusd, 512-bit
    ("avx512", ("avx512bw", "avx512dq", "avx512vl")),  # vpmaddubsw: u8*s8 pairs summed in saturating int16
    ("avx_vnni", ("avx2", "avx_vnni")),  # vpdpbusd, 256-bit (Alder Lake and later client cores)
    ("avx2", ("avx2", "fma")),  # vpmaddubsw: saturating int16 pair sums
    ("arm_dot", ("asimddp",)),  # aarch64 udot (MlasGemmU8X8DispatchUdot): 32-bit accumulation
)
ISA_OTHER = "other"  # anything else (SSE-only x86, ARM without dot product, unknown platforms)

# The int8 recipes by id: the CPU-dependent settings over DEFAULT_INT8. The id is part of the
# export's cache folder name and of its fingerprinted settings.
INT8_RECIPES: dict[str, dict] = {
    "vnni": {"reduce_range": False},  # 8-bit weights, full range
    "rr": {"reduce_range": True},  # 7-bit weights: no int16 saturation in vpmaddubsw
}

# ISA class -> (recipe id, why); chosen by measurement: bench/experiments/models_notes.md#export.
ISA_RECIPES: dict[str, tuple[str, str]] = {
    "amx_int8": (
        "vnni",
        "as avx512_vnni: u8s8 runs on AMX tiles (int32 accumulation), nothing saturates; "
        "measured on a Xeon with AMX: rr as fast, lower parity",
    ),
    "avx512_vnni": ("vnni", "measured (Zen 4): reduce_range cost parity and no speed"),
    "avx_vnni": (
        "vnni",
        "same vpdpbusd instruction (256-bit) as AVX-512 VNNI, no saturation; measured on emulated "
        "AVX-VNNI kernels (bench/isa_emulation): rr no faster, lower parity",
    ),
    "avx512": (
        "rr",
        "vpmaddubsw sums u8*s8 pairs in saturating int16; measured on emulated AVX-512-without-VNNI "
        "kernels (bench/isa_emulation): vnni no faster, its saturation costs the worst document; "
        "onnxruntime advises reduce_range for u8s8 without VNNI",
    ),
    "avx2": (
        "rr",
        "vpmaddubsw saturates int16 pair sums of 8-bit weights, not of 7-bit ones; measured on AVX2 "
        "kernels (a Xeon with AVX-512/VNNI/AMX hidden from CPUID, bench/isa_emulation): vnni no faster, "
        "its saturation costs the worst document; onnxruntime's quantize_static docstring advises "
        "reduce_range=True on x86 without VNNI",
    ),
    "arm_dot": (
        "rr",
        "not measured: udot accumulates in int32 and onnxruntime advises reduce_range=False on "
        "ARM, so full range is the likely better choice; kept at the 7-bit weights used so far",
    ),
    ISA_OTHER: ("rr", "not measured: the safe choice (7-bit weights cannot saturate any u8s8 kernel)"),
}


def isa_class(flags) -> str:
    """The int8 ISA class of a CPU with these feature flags (/proc/cpuinfo names), per ``ISA_CLASSES``."""
    have = set(flags)
    return next((name for name, need in ISA_CLASSES if have.issuperset(need)), ISA_OTHER)


# macOS sysctl names -> /proc/cpuinfo flag names
_DARWIN_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512bw": "avx512bw",
    "avx512dq": "avx512dq",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni",
}


def cpu_flags() -> set[str]:
    """This CPU's feature flags under /proc/cpuinfo names: Linux ``flags`` / ``Features`` lines, or
    macOS ``sysctl`` (x86 machdep.cpu features, arm64 hw.optional.arm.FEAT_DotProd); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = None
    if text is not None:
        m = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.M)
        return set(m.group(2).split()) if m else set()
    import platform
    import subprocess

    if platform.system() != "Darwin":
        return set()
    keys = ["machdep.cpu.features", "machdep.cpu.leaf7_features", "hw.optional.arm.FEAT_DotProd"]
    flags: set[str] = set()
    for key in keys:
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if key.endswith("FEAT_DotProd"):
            if out.strip() == "1":
                flags.add("asimddp")
        else:
            flags.update(_DARWIN_FLAGS.get(f.lower().replace(".", "").replace("_", ""), f.lower()) for f in out.split())
    return flags


def cpu_isa() -> str:
    """This CPU's int8 ISA class: ``amx_int8`` | ``avx512_vnni`` | ``avx512`` | ``avx_vnni`` | ``avx2`` |
    ``arm_dot`` | ``other`` (``isa_class`` of ``cpu_flags``)."""
    return isa_class(cpu_flags())


def int8_recipe(isa: str | None = None) -> str:
    """The int8 recipe id for an ISA class (default: this CPU's), from ``ISA_RECIPES``."""
    return ISA_RECIPES.get(isa or cpu_isa(), ISA_RECIPES[ISA_OTHER])[0]


def _excluded_nodes(src: Path, patterns) -> list[str]:
    if not patterns:
        return []
    import onnx

    g = onnx.load(str(src), load_external_data=False).graph
    rx = [re.compile(p) for p in patterns]
    return [n.name for n in g.node if any(r.search(n.name) for r in rx)]


def quantize_int8(
    src: str | Path, dst: str | Path, spec=None, hf_folder: str | Path | None = None, config: dict | None = None
) -> dict:
    """Write an int8 version of the fp32 graph ``src`` to ``dst``; return the settings used.

    The returned dict goes into the export's fingerprint, so a different recipe gives different,
    incompatible vectors; it names the recipe id (``int8_recipe()``) but not the CPU's ISA class, so
    two CPUs of one recipe (AMX and AVX-512 VNNI) export the same fingerprint.

    Args:
        src: the fused fp32 graph.
        dst: where the int8 graph is written.
        spec, hf_folder: accepted for the export's call signature; not used.
        config: overrides of ``DEFAULT_INT8``'s keys (the exploration script uses it); ``method``
            can only be ``"dynamic"``.

    Raises:
        ExportError: a config the library does not run (static QDQ, another method, weight type or
            GELU form), or onnxruntime's quantization failed.
    """
    from onnxruntime.quantization import QuantType

    cfg = {**DEFAULT_INT8, **(config or {})}
    if cfg["method"] == "static":
        raise ExportError(
            "static (QDQ) int8 is not a library recipe: it was slower and less accurate than dynamic int8 "
            "(bench/experiments/int8_experiments.md). To build such a graph for study, run "
            "bench/experiments/int8_static_qdq.py; otherwise drop 'method' from the int8 config."
        )
    if cfg["method"] != "dynamic":
        raise ExportError(f"int8 method must be 'dynamic', got {cfg['method']!r}")
    recipe = int8_recipe()
    reduce_range = cfg["reduce_range"]
    if reduce_range is None:
        reduce_range = INT8_RECIPES[recipe]["reduce_range"]
    weight_type = getattr(QuantType, cfg["weight_type"], None)
    if weight_type is None:
        raise ExportError(f"weight_type must be QInt8 or QUInt8, got {cfg['weight_type']!r}")
    exclude = _excluded_nodes(Path(src), cfg["exclude"])
    settings = {
        "method": cfg["method"],
        "op_types": list(cfg["op_types"]),
        "weight_type": cfg["weight_type"],
        "per_channel": bool(cfg["per_channel"]),
        "reduce_range": bool(reduce_range),
        "exclude": list(cfg["exclude"]),
        "excluded_nodes": len(exclude),
        "extra_options": dict(cfg["extra_options"]),
        "recipe": recipe,  # the CPU's class is recorded in meta.json, outside the fingerprint
        "gelu": cfg["gelu"],
    }
    if cfg["gelu"] not in ("erf", "tanh"):
        raise ExportError(f"gelu must be 'erf' or 'tanh', got {cfg['gelu']!r}")
    try:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(cfg["op_types"]),
            per_channel=bool(cfg["per_channel"]),
            reduce_range=bool(reduce_range),
            weight_type=weight_type,
            nodes_to_exclude=exclude,
            extra_options=dict(cfg["extra_options"]),
        )
    except Exception as e:  # onnxruntime.quantization raises many kinds; one clear message
        raise ExportError(f"int8 quantization of {src} failed ({type(e).__name__}: {e})") from e
    if cfg["gelu"] == "tanh":
        import onnx

        from .graph import approximate_gelu

        model = onnx.load(str(dst))
        settings["gelu_nodes"] = approximate_gelu(model)
        onnx.save(model, str(dst))
    return settings


# A fixed, varied text sample for the int8 parity check below (short and long, several domains).
_CALIBRATION = (
    "A man is playing a guitar on the street.",
    "The stock market fell sharply after the announcement of new tariffs.",
    "Mitochondria are the membrane-bound organelles that generate most of the cell's chemical energy.",
    "How do I reset my password if I no longer have access to my email?",
    "In 1905 Einstein published four papers that changed physics: the photoelectric effect, Brownian "
    "motion, special relativity and the equivalence of mass and energy.",
    "Numba compiles Python loops to machine code; onnxruntime executes exported neural networks.",
    "héllo wörld café naïve 日本語 テキスト",
    "The randomized controlled trial enrolled 1,204 patients with type 2 diabetes across 42 sites; the "
    "primary endpoint was the change in HbA1c at 24 weeks, and secondary endpoints included weight, "
    "blood pressure and adverse events. Results showed a significant reduction in the treatment arm.",
)


def _calibration_feeds(hf_folder, spec, texts) -> list[dict] | None:
    """One model feed per text (batch of 1, truncated at max_seq_length), or None without tokenizer.json."""
    import numpy as np
    from tokenizers import Tokenizer

    tok_path = Path(hf_folder or "") / "tokenizer.json"
    if hf_folder is None or not tok_path.is_file():
        return None
    tok = Tokenizer.from_file(str(tok_path))
    tok.no_padding()
    tok.enable_truncation(max_length=getattr(spec, "max_seq_length", 0) or 512)
    feeds = []
    for text in texts:
        ids = np.asarray([tok.encode(text).ids], dtype=np.int64)
        feeds.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
                "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
            }
        )  # decoders' graphs take them
    return feeds


# The int8 export refuses a graph whose vectors drift further than this from fp32 (mean cosine
# over the calibration texts above); recipes the engine ships stay above 0.99.
MIN_CALIBRATION_COSINE = 0.98


def _pooling_views(hidden, pooling: str | None):
    """Unit vectors of one text's graph output as each of the stack's pooling modes (``"cls"``,
    ``"mean+max"``, ...) pools it, by the engine's own poolers (``kernels.pooling.POOLERS``; every
    pooler when a mode is not one of them): (modes, dim). ``hidden`` is (1, tokens, dim), all
    tokens attended; a graph that pools itself (``hidden`` (1, dim)) is its own view."""
    import numpy as np

    from ..kernels.pooling import POOLERS

    if hidden.ndim != 3:
        views = hidden[:1]
    else:
        modes = [m for m in (pooling or "").split("+") if m]
        if not modes or not all(m in POOLERS for m in modes):
            modes = list(POOLERS)
        mask = np.ones(hidden.shape[:2], dtype=np.int64)
        views = np.concatenate([POOLERS[m](hidden, mask) for m in modes])
    return views / np.maximum(np.linalg.norm(views, axis=1, keepdims=True), 1e-12)


def _pooled(run, feeds):
    """Unit-length mean-pooled vectors of ``run(feed) -> hidden states`` over ``feeds``: (len(feeds), dim)."""
    import numpy as np

    return np.concatenate([_pooling_views(run(feed), "mean") for feed in feeds])


def _ort_runner(path: str | Path):
    """``feed -> first output`` of a plain CPU onnxruntime session on ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return lambda feed: sess.run(None, {k: v for k, v in feed.items() if k in names})[0]


def check_int8_parity(fp32_path: str | Path, int8_path: str | Path, spec, hf_folder) -> dict | None:
    """Mean-pooled cosine of the int8 graph to the fp32 one on the calibration texts.

    This catches a model whose activations int8 cannot carry (all-mpnet-base-v2 with every MatMul
    quantized) at export time, not in a user's index.

    Args:
        fp32_path, int8_path: the two graphs.
        spec: the model's spec (its max_seq_length truncates the texts; its name is in the error).
        hf_folder: the folder holding the tokenizer.json to tokenize the texts with.

    Returns:
        ``{"mean", "min"}`` (the export records it in meta.json, outside the fingerprint: it is a
        measurement, not a setting), or None when the folder has no tokenizer.json.

    Raises:
        ExportError: the mean cosine is below ``MIN_CALIBRATION_COSINE``.
    """
    import numpy as np

    feeds = _calibration_feeds(hf_folder, spec, _CALIBRATION)
    if feeds is None:
        return None
    cos = np.sum(_pooled(_ort_runner(fp32_path), feeds) * _pooled(_ort_runner(int8_path), feeds), axis=1)
    return int8_gate(
        cos,
        f"int8 quantization of {getattr(spec, 'name', str(fp32_path))}",
        "Use precision='fp32', or keep the model's sensitive layers in fp32 (ModelSpec.int8_exclude; "
        "bench/experiments/int8_sensitivity.py finds them).",
    )


def int8_gate(cos, what: str, remedy: str) -> dict:
    """The int8 exports' one quality gate: ``{"mean", "min"}`` of the per-text cosines ``cos`` to fp32.

    Raises:
        ExportError: "<what> loses too much: mean cosine ... (floor MIN_CALIBRATION_COSINE). <remedy>".
    """
    if cos.mean() < MIN_CALIBRATION_COSINE:
        raise ExportError(
            f"{what} loses too much: mean cosine {cos.mean():.4f} to fp32 on the calibration texts "
            f"(floor {MIN_CALIBRATION_COSINE}). {remedy}"
        )
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}


# bf16 is promised near-exact: the export refuses a model whose bf16 vectors fall below this cosine
# to fp32 on any calibration text (chosen by measurement: bench/experiments/models_notes.md#export).
MIN_BF16_COSINE = 0.9999

# The bf16 gate's texts: the calibration sample plus the length extremes, where bf16 drifts most (a
# one-token text is pooled over 3 tokens, nothing averages its rounding out; a text past the
# model's max_seq_length accumulates the most rounding in attention).
_BF16_CALIBRATION = (
    *_CALIBRATION,
    "x",
    "ok?",
    " ".join(_CALIBRATION) * 8,
)


def check_bf16_parity(path: str | Path, spec, tokenizer_folder) -> dict:
    """Cosine of the graph at ``path`` run by OpenVINO in bf16 to the same graph in fp32 (onnxruntime).

    Measured on ``_BF16_CALIBRATION``, per text the worst of the stack's pooling views (``_pooling_views``).

    Args:
        path: the graph.
        spec: the model's spec (its pooling picks the views; its name is in the error).
        tokenizer_folder: holds the tokenizer.json the engine runs (the export's own).

    Returns:
        ``{"mean", "min"}``.

    Raises:
        ExportError: the folder has no tokenizer.json.
        UnsupportedModelError: the minimum is below ``MIN_BF16_COSINE`` (naming the model).
    """
    import numpy as np

    from ..errors import UnsupportedModelError
    from ..runtime import OpenVINOSession

    feeds = _calibration_feeds(tokenizer_folder, spec, _BF16_CALIBRATION)
    if feeds is None:
        raise ExportError(f"{tokenizer_folder} has no tokenizer.json to measure bf16 against fp32 with")
    bf16, fp32 = OpenVINOSession(path, precision="bf16"), _ort_runner(path)
    pooling = getattr(spec, "pooling", None)
    cos = np.array(
        [np.sum(_pooling_views(fp32(f), pooling) * _pooling_views(bf16.run(f), pooling), axis=1).min() for f in feeds]
    )
    if cos.min() < MIN_BF16_COSINE:
        name = getattr(spec, "name", str(path))
        raise UnsupportedModelError(
            f"{name} does not run near-exactly in bf16: cosine to fp32 down to {cos.min():.5f} on the calibration "
            f"texts (the engine's bf16 floor is {MIN_BF16_COSINE}). Use model_precision='fp32' (exact) or 'int8'."
        )
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}


def convert_fp16(src: str | Path, dst: str | Path) -> dict:
    """An fp16 copy of the fp32 graph for CUDA; inputs and outputs stay int64 / float32.

    keep_io_types=True keeps the graph's interface unchanged (the engine feeds int64 ids and pools a
    float32 output). LayerNormalization-family ops run in fp16 on CUDA with fp32 accumulation inside
    onnxruntime's kernels.

    Raises:
        ExportError: onnxruntime's conversion failed.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    try:
        fp16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    except Exception as e:
        raise ExportError(f"fp16 conversion of {src} failed ({type(e).__name__}: {e})") from e
    onnx.save(fp16, str(dst))
    return {"method": "onnxruntime.transformers.float16", "keep_io_types": True}
