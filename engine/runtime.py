"""The one place that owns an ``onnxruntime.InferenceSession``.

Providers: ``device="cpu"`` uses CPUExecutionProvider; ``device="cuda"`` uses
CUDAExecutionProvider (onnxruntime-gpu) and never falls back to the CPU silently.
Threads: intra-op threads default to the number of physical cores; inter-op is 1 and the
graph runs sequentially. The Embedder's Numba kernels are serial (no Numba thread pool). With
one session they run between its calls, never during one. With batch workers
(``Embedder.batch_workers``) each worker thread runs a single-threaded session and then pools its
own batch (``mean_pool`` releases the GIL), so one worker's Numba pooling runs while other
workers are inside session calls: still one busy thread per worker, so the cores are not
oversubscribed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, ProviderError

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
    """A loaded ONNX graph with fixed providers and threads; ``run`` maps inputs to outputs."""

    def __init__(
        self,
        onnx_path: str | Path | bytes,
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool | None = None,
    ):
        import onnxruntime as ort

        provider = provider_for(device)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads or physical_cores()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        provider_options = [{}]
        if provider == "CUDAExecutionProvider":
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            provider_options = [{"device_id": dev_id}]
        self.device = device
        if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
            # load CUDA/cuDNN from the nvidia-* wheels when the system has none on its path
            try:
                ort.preload_dlls()
            except Exception:
                pass  # the session check below reports a provider that could not start
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
