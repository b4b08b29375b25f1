"""The one place that builds inference sessions: onnxruntime's, and OpenVINO's where it is faster.

Runtimes: ``onnxruntime`` (the default, and the only CUDA runtime) and ``openvino`` (the
``openvino`` extra; the only CPU runtime with bf16 kernels). Which one runs a model precision on
this CPU is data, ``RUNTIME_CHOICE`` (precision -> CPU class -> runtime and the evidence for it);
``choose_runtime`` resolves it and ``Embedder(runtime=...)`` overrides it. Both session classes
have one interface: ``run(feeds) -> first output``, ``input_names``, ``threads``, ``device``,
``runtime`` and ``for_workers(n)`` (a session for ``n`` threads calling ``run`` at once, each
batch on one core).

onnxruntime. Providers: ``device="cpu"`` uses CPUExecutionProvider; ``device="cuda"`` uses
CUDAExecutionProvider (onnxruntime-gpu) and never falls back to the CPU silently. Threads:
intra-op threads default to the number of physical cores; inter-op is 1 and the graph runs
sequentially. The Embedder's Numba kernels are serial (no Numba thread pool). With one session
they run between its calls, never during one. With batch workers (``Embedder.batch_workers``)
each worker thread runs a single-threaded session and then pools its own batch (``mean_pool``
releases the GIL), so one worker's Numba pooling runs while other workers are inside session
calls: still one busy thread per worker, so the cores are not oversubscribed.

OpenVINO reads the same ONNX files (its ONNX frontend also reads the fused graph's
com.microsoft ops). The inference precision is always set explicitly (``f32`` for fp32, ``bf16``
for bf16): OpenVINO's own default on a CPU with bf16 units is bf16, which would run an "fp32"
model inexactly. Worker sessions are one compiled model with ``n`` streams of one thread each.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from .arguments import positive_int
from .errors import InputError, ProviderError, missing_extra
from .precisions import CPU_MODEL_PRECISIONS

RUNTIMES = ("onnxruntime", "openvino")

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not speed up GEMMs)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:
        n = None
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = os.cpu_count() or 1
    return max(1, min(n or avail, avail))


def provider_for(device: str) -> str:
    import onnxruntime as ort

    dev = device.lower().split(":")[0]
    if dev not in _PROVIDERS:
        raise InputError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'), got {device!r}")
    wanted = _PROVIDERS[dev]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(
            f"{wanted} is not available in this onnxruntime (available: {', '.join(available)}). "
            "For CUDA install the GPU build: pip uninstall -y onnxruntime && pip install "
            "'embed-engine[gpu]' (onnxruntime-gpu, matching your CUDA/cuDNN), or use device='cpu'."
        )
    return wanted


class Session:
    """An onnxruntime session: a loaded ONNX graph with fixed providers and threads; ``run`` maps
    inputs to outputs. Thread-safe: several threads may call ``run`` at once."""

    runtime = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path | bytes,
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool | None = None,
    ):
        import onnxruntime as ort

        provider = provider_for(device)
        self.threads = positive_int(threads, "threads", allow_none=True) or physical_cores()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        provider_options: list[dict] = [{}]
        if provider == "CUDAExecutionProvider":
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            provider_options = [{"device_id": dev_id}]
        self.device = device
        if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
            # load CUDA/cuDNN from the nvidia-* wheels when the system has none on its path
            with contextlib.suppress(Exception):  # the session check below reports a provider that did not start
                ort.preload_dlls()
        model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)  # bytes: a graph built in memory
        self._sess = ort.InferenceSession(
            model, sess_options=opts, providers=[provider], provider_options=provider_options
        )
        active = self._sess.get_providers()
        if provider not in active:
            raise ProviderError(
                f"onnxruntime loaded {provider} but the session runs on {active}: the CUDA/cuDNN "
                "libraries were not found or do not match onnxruntime-gpu. Fix the CUDA install or use device='cpu'."
            )
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        # IO binding (default on CUDA): the output is allocated on the device by onnxruntime and
        # reused across runs, and only the final tensor is copied back to the host.
        self.io_binding = (provider == "CUDAExecutionProvider") if io_binding is None else bool(io_binding)
        self._binding = self._sess.io_binding() if self.io_binding else None
        on_cuda = provider == "CUDAExecutionProvider"
        self._out_device = ("cuda", provider_options[0].get("device_id", 0)) if on_cuda else ("cpu", 0)
        self._path = model

    def for_workers(self, n: int) -> Session:
        """A session for ``n`` threads running batches at once: one single-threaded CPU session
        (onnxruntime sessions are thread-safe, and each call then runs on its caller's core)."""
        return Session(self._path, device="cpu", threads=1)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on the inputs it declares (others are dropped); return the first output."""
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self._binding is None:
            return self._sess.run(self.output_names[:1], feeds)[0]
        io = self._binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        io.bind_output(self.output_names[0], *self._out_device)
        self._sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0]


# -- OpenVINO ---------------------------------------------------------------------------------
# model precision -> INFERENCE_PRECISION_HINT; int8 is a statically quantized IR (models.openvino_int8):
# its quantized ops run int8 whatever the hint, the others f32
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise missing_extra("openvino", "openvino") from e
    return openvino


def _ov_capabilities(core) -> list[str]:
    """OpenVINO's CPU capabilities ("FP32", "BF16", "INT8", ...): bf16 kernels run only where "BF16" is one."""
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVINOSession:
    """An OpenVINO compiled model on the CPU with ``Session``'s interface.

    ``precision`` is the model precision it runs at ("fp32": f32 kernels, exact; "bf16": bf16
    kernels, refused on a CPU without bf16 units; "int8": a statically quantized IR, its other ops
    f32). ``streams`` compiled streams share ``threads`` cores; ``run`` is thread-safe (each calling
    thread has its own infer request).
    """

    runtime = "openvino"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, precision: str = "fp32", streams: int = 1):
        import threading

        ov = _openvino()
        if precision not in _OV_PRECISION:
            raise InputError(f"the openvino runtime runs model_precision 'fp32', 'bf16' or 'int8', not {precision!r}")
        self.threads = positive_int(threads, "threads", allow_none=True) or physical_cores()
        self.device = "cpu"
        self.precision = precision
        self._path = str(onnx_path)
        core = ov.Core()
        if precision == "bf16" and "BF16" not in (caps := _ov_capabilities(core)):
            raise ProviderError(
                f"OpenVINO {ov.__version__} finds no bf16 units on this CPU (its capabilities: {', '.join(caps)}); "
                "use model_precision='fp32'"
            )
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": int(streams),
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        }
        try:
            self._compiled = core.compile_model(core.read_model(self._path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with its whole C++ log
            raise ProviderError(
                f"OpenVINO {ov.__version__} cannot compile {self._path} ({type(e).__name__}: {str(e)[:400]}); "
                "use runtime='onnxruntime'"
            ) from e
        self.input_names = [i.get_any_name() for i in self._compiled.inputs]
        self.output_names = [o.get_any_name() for o in self._compiled.outputs]
        self._local = threading.local()

    def for_workers(self, n: int) -> OpenVINOSession:
        """A session for ``n`` threads running batches at once: ``n`` streams of one core each."""
        return OpenVINOSession(self._path, threads=n, precision=self.precision, streams=n)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on the inputs it declares (others are dropped); return the first output (a copy)."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self._compiled.create_infer_request()
        req.infer({k: v for k, v in feeds.items() if k in self.input_names})
        return np.array(req.get_output_tensor(0).data, copy=True)


def open_session(
    onnx_path: str | Path, runtime: str, device: str = "cpu", threads: int | None = None, precision: str = "fp32"
):
    """A ``Session`` (onnxruntime) or an ``OpenVINOSession`` for ``onnx_path``, as ``runtime`` names."""
    if runtime == "onnxruntime":
        return Session(onnx_path, device=device, threads=threads)
    if runtime == "openvino":
        if str(device).lower().startswith("cuda"):
            raise InputError("runtime='openvino' runs on the CPU; on CUDA use runtime='onnxruntime' (or None)")
        return OpenVINOSession(onnx_path, threads=threads, precision=precision)
    raise InputError(f"runtime must be one of {', '.join(map(repr, RUNTIMES))} or None, got {runtime!r}")


# -- which runtime runs which precision on which CPU --------------------------------------------
#: CPU classes for the runtime choice: CPUs with bf16 units first (AMX-BF16 tiles, AVX512_BF16),
#: then the int8 ISA classes (engine.models.quantize.ISA_CLASSES) of the rest.
BF16_CLASSES = ("amx_bf16", "avx512_bf16")
CPU_CLASSES = (*BF16_CLASSES, "amx_int8", "avx512_vnni", "avx512", "avx_vnni", "avx2", "arm_dot", "other")


def cpu_class(flags: set[str] | None = None) -> str:
    """This CPU's class (``CPU_CLASSES``) from its /proc/cpuinfo flags (default: this CPU's)."""
    from .models.quantize import cpu_flags, isa_class

    flags = cpu_flags() if flags is None else set(flags)
    if {"amx_tile", "amx_bf16"} <= flags:
        return "amx_bf16"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return isa_class(flags)


_NOTES = "bench/experiments/runtime_choice.md"
_ORT_FP32 = ("onnxruntime", "not measured on this class: the default runtime")
_ORT_INT8 = (
    "onnxruntime",
    "not measured against OpenVINO static int8 on this class; onnxruntime's dynamic int8 recipes are chosen per "
    "ISA class (engine.models.quantize.ISA_RECIPES)",
)
_OV_BF16 = ("openvino", "the only runtime with x86 bf16 kernels (onnxruntime has none)")


def _measured(runtime: str, finding: str, cls: str) -> tuple[str, str]:
    return runtime, f"measured: {finding} ({_NOTES}#{cls})"


#: model precision -> CPU class -> (runtime, the evidence for it). A class missing under a precision
#: does not run it (bf16 without bf16 units). The measurements (bench/int8_speed.py, per chip) are
#: in bench/experiments/runtime_choice.md, one section per CPU class.
RUNTIME_CHOICE: dict[str, dict[str, tuple[str, str]]] = {
    "fp32": {
        **{cls: _ORT_FP32 for cls in CPU_CLASSES},
        **{
            cls: _measured("onnxruntime", "OpenVINO f32 no faster on documents and sentences", cls)
            for cls in ("avx2", "avx512", "avx512_bf16", "amx_bf16")
        },
    },
    "int8": {
        **{cls: _ORT_INT8 for cls in CPU_CLASSES},
        "avx2": _measured("onnxruntime", "OpenVINO static int8 slower than fp32 on AVX2", "avx2"),
        "avx512": _measured("onnxruntime", "OpenVINO static int8 no faster", "avx512"),
        "avx512_bf16": _measured(
            "openvino",
            "OpenVINO static int8 faster on documents in every round, equal on sentences, closer to fp32",
            "avx512_bf16",
        ),
        "amx_bf16": _measured(
            "onnxruntime", "OpenVINO static int8 equal on documents, slower on sentences; bf16 beats both", "amx_bf16"
        ),
    },
    "bf16": {cls: _OV_BF16 for cls in BF16_CLASSES},
}


def _openvino_available() -> bool:
    """Whether the openvino extra is installed (without importing it). nncf, which builds OpenVINO's int8
    export, comes with the export extra every export needs; its absence is named when an export needs it."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a finder that refuses the name, a broken install
        return False


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logging.getLogger(__name__).warning(message)


def choose_runtime(precision: str, device: str = "cpu", runtime: str | None = None, cls: str | None = None) -> str:
    """The runtime for ``precision`` on ``device``: ``runtime`` when given (checked), else
    ``RUNTIME_CHOICE`` for this CPU's class (``cls`` overrides the detection, for tests).

    Refused by name: bf16 on a CPU without bf16 units or on CUDA, a runtime that cannot run the
    precision (openvino: fp32, bf16 and int8, on the CPU). Where the table picks OpenVINO for a precision
    onnxruntime also runs (int8) and the openvino extra is missing, the choice is onnxruntime and a
    warning names the extra once: int8 keeps working on a plain install (its vectors, and so its
    fingerprint, differ by runtime; pin ``runtime`` to keep an index's vectors across installs).
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {', '.join(map(repr, RUNTIMES))} or None, got {runtime!r}")
    if str(device).lower().startswith("cuda"):
        if precision == "bf16":
            raise InputError("model_precision='bf16' runs on CPUs with bf16 units; on CUDA use 'fp16' or 'fp32'")
        if runtime not in (None, "onnxruntime"):
            raise InputError(f"runtime={runtime!r} runs on the CPU; on CUDA the runtime is onnxruntime")
        return "onnxruntime"
    if precision not in CPU_MODEL_PRECISIONS:
        raise InputError(f"model_precision={precision!r} does not run on the CPU; use 'fp32', 'bf16' or 'int8'")
    cls = cls or cpu_class()
    choice = RUNTIME_CHOICE[precision].get(cls)
    if choice is None:  # bf16 on a CPU without bf16 units
        raise InputError(
            f"model_precision='bf16' needs a CPU with bf16 units (AVX512_BF16: AMD Zen 4 and later, Intel Cooper "
            f"Lake; AMX-BF16: Intel Sapphire Rapids and later); this CPU is of class {cls!r} (no avx512_bf16 or "
            "amx_bf16 in its flags), where bf16 would only emulate fp32 slower. Use model_precision='fp32' "
            "(exact) or 'int8' (faster)"
        )
    if runtime is None:
        if choice[0] == "openvino" and precision != "bf16" and not _openvino_available():
            _warn_once(
                f"model_precision={precision!r} runs fastest on OpenVINO on this CPU (class {cls!r}); running "
                "onnxruntime instead: pip install 'embed-engine[openvino]' for it, or pass "
                "runtime='onnxruntime' to keep this choice and silence this warning"
            )
            return "onnxruntime"
        return choice[0]
    if runtime == "onnxruntime" and precision == "bf16":
        raise InputError("onnxruntime has no bf16 CPU kernels: model_precision='bf16' runs on runtime='openvino'")
    return runtime
