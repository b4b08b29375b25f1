"""The contenders of a benchmark cell: the engine, and sentence-transformers as the baselines.

A ``Contender`` is a callable that embeds one batch, with what names it in the results. The
engine runs at a model precision; the baselines (``BASELINES``) are sentence-transformers with
its torch backend (fp32, the reference the speedups and cosines are taken against, or bf16),
its onnx backend and its openvino backend, all with the thread count they are given. torch,
sentence-transformers and onnxruntime are imported when a contender is built.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BASELINES = ("st-torch", "st-onnx", "st-openvino", "st-torch-bf16")


@dataclasses.dataclass
class Contender:
    """A callable that embeds one batch, with what identifies it in the results."""

    name: str  # "engine" | BASELINES
    precision: str
    fn: Callable[[list[str]], np.ndarray]
    threads: dict
    embedder: Any = None  # the engine's Embedder (tokenizer, fingerprint), else None
    runtime: str = "onnxruntime"

    @property
    def label(self) -> str:
        """``<name>-<precision>``, e.g. "engine-fp32" (plots and tables)."""
        return f"{self.name}-{self.precision}"


def engine_contender(model: str, device: str, precision: str, threads: int, cache_dir=None) -> Contender:
    """The engine's Embedder at ``precision``; one ``encode`` call per batch, the batch's size as batch_size."""
    from ..embedder import Embedder

    emb = Embedder(model, device=device, model_precision=precision, threads=threads, cache_dir=cache_dir)
    return Contender(
        "engine",
        precision,
        lambda b: emb.encode(b, batch_size=len(b)),
        {"intra_op": emb.threads, "inter_op": 1},
        emb,
        emb.runtime,
    )


def _st_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    return device


def _st_encoder(model) -> Callable[[list[str]], np.ndarray]:
    return lambda b: model.encode(b, batch_size=len(b), show_progress_bar=False, convert_to_numpy=True)


def st_torch_contender(folder: Path, device: str, threads: int, bf16: bool = False) -> Contender:
    """sentence-transformers on torch, fp32 (the reference) or bf16 (``model_kwargs`` torch_dtype).

    Raises:
        ImportError: sentence-transformers is not installed (names the ``bench`` extra).
        RuntimeError: ``device`` is cuda and torch sees no CUDA device.
    """
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    torch.set_num_threads(threads)
    kwargs = {"model_kwargs": {"torch_dtype": torch.bfloat16}} if bf16 else {}
    model = SentenceTransformer(str(folder), device=_st_device(device), **kwargs)
    return Contender(
        "st-torch-bf16" if bf16 else "st-torch",
        "bf16" if bf16 else "fp32",
        _st_encoder(model),
        {"torch": torch.get_num_threads()},
        runtime="torch",
    )


def st_openvino_contender(folder: Path, device: str, threads: int) -> Contender:
    """sentence-transformers' own openvino backend (the ``peers`` extra) at its default precision hint:
    bf16 on a CPU with bf16 units, f32 elsewhere.

    Raises:
        RuntimeError: ``device`` is not the CPU.
        ImportError: sentence-transformers is not installed (names the ``bench`` extra).
    """
    if device.startswith("cuda"):
        raise RuntimeError("sentence-transformers' openvino backend runs on the CPU")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    from ..runtime import BF16_CLASSES, cpu_class

    model = SentenceTransformer(
        str(folder), device="cpu", backend="openvino", model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": threads}}
    )
    precision = "bf16" if cpu_class() in BF16_CLASSES else "fp32"
    return Contender("st-openvino", precision, _st_encoder(model), {"openvino": threads}, runtime="openvino")


def st_onnx_contender(folder: Path, device: str, threads: int, cache: Path) -> Contender:
    """sentence-transformers' own onnx backend; its export is saved under ``cache`` and reused.

    Raises:
        ImportError: sentence-transformers is not installed (names the ``bench`` extra).
        RuntimeError: the device's execution provider is not in this onnxruntime (names those it has).
    """
    import shutil
    import tempfile

    try:
        import onnxruntime as ort
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra("sentence-transformers", "bench") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{provider} is not in this onnxruntime (has {', '.join(ort.get_available_providers())})")
    kwargs = {"provider": provider, "session_options": so}
    if (cache / "onnx" / "model.onnx").is_file():
        model = SentenceTransformer(str(cache), device="cpu", backend="onnx", model_kwargs=kwargs)
    else:
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs=kwargs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp-", dir=cache.parent))
        try:
            model.save_pretrained(str(tmp))
            os.replace(tmp, cache)
        except OSError:
            pass  # a concurrent run saved it first; this one still runs from memory
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Contender("st-onnx", "fp32", _st_encoder(model), {"intra_op": threads, "inter_op": 1})


def device_unavailable(device: str) -> str | None:
    """Why the engine cannot run on ``device`` here (naming what to install), or None when it can."""
    import onnxruntime as ort

    if device == "cpu":
        return None
    if device.startswith("cuda"):
        have = ort.get_available_providers()
        if "CUDAExecutionProvider" not in have:
            return (
                f"CUDAExecutionProvider is not in this onnxruntime (available: {', '.join(have)}); "
                "install onnxruntime-gpu ('embed-engine[gpu]') on a machine with CUDA"
            )
        return None
    return f"unknown device {device!r}"
