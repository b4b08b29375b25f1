"""Numba kernels: the hot loops of the engine.

Installed as ``engine.kernels`` (the folder sits at the repository root). Every kernel is a
small ``@njit`` function whose docstring states the formula it computes; dispatch and input
validation live in the callers (``engine/``), never inside a kernel. This package imports
neither onnxruntime nor torch.
"""

from .binary import pack_signs, topk_hamming
from .normalize import l2_normalize, mean_pool, truncate_normalize

# ``quantize`` (the function) is not re-exported: it would shadow the submodule of that name.
from .quantize import calibrate_scales, dequantize, fold_queries, topk_int8
from .topk import rescore, topk_dot

__all__ = [
    "calibrate_scales",
    "dequantize",
    "fold_queries",
    "l2_normalize",
    "mean_pool",
    "pack_signs",
    "rescore",
    "topk_dot",
    "topk_hamming",
    "topk_int8",
    "truncate_normalize",
]
