"""The three meanings of "precision", one name and one constant each.

- **model precision** (``Embedder(model_precision=)``, ``embed encode --model-precision``): the
  number format the *model* runs in. ``fp32`` (exact: sentence-transformers' vectors), ``bf16``
  (CPUs with bf16 units, on OpenVINO; near-exact), ``int8`` (a dynamically quantized model, CPU),
  ``fp16`` (CUDA).
- **output precision** (``encode(precision=)``, ``quantize_embeddings``): how the *output vectors*
  are quantized, sentence-transformers' meaning: ``float32``, ``int8``, ``uint8``, ``binary``,
  ``ubinary``.
- **index precision** (``Index(precision=)``, ``--index-precision``): how an ``Index`` *stores*
  vectors: ``fp32``, ``int8`` (symmetric per-dimension codes, float rescoring), ``binary``.
"""

from __future__ import annotations

from typing import Literal, get_args

ModelPrecision = Literal["fp32", "bf16", "int8", "fp16"]
OutputPrecision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
IndexPrecision = Literal["fp32", "int8", "binary"]

MODEL_PRECISIONS: tuple[str, ...] = get_args(ModelPrecision)
OUTPUT_PRECISIONS: tuple[str, ...] = get_args(OutputPrecision)
INDEX_PRECISIONS: tuple[str, ...] = get_args(IndexPrecision)

#: Model precisions that run on a CPU (fp16 is CUDA only); bf16 needs a CPU with bf16 units.
CPU_MODEL_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: Model precisions that run on CUDA.
CUDA_MODEL_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

MODEL_PRECISIONS_HELP = (
    "'fp32', 'bf16' (CPUs with bf16 units, the openvino extra), 'int8' (a dynamically quantized model, CPU) "
    "or 'fp16' (CUDA)"
)
