"""Numba kernels: the hot loops of the engine.

Installed as ``engine.kernels`` (the folder sits at the repository root). Every kernel is a
small ``@njit`` function whose docstring states the formula it computes; dispatch and input
validation live in the callers (``engine/``), never inside a kernel. This package imports
neither onnxruntime nor torch.
"""
from .normalize import l2_normalize, mean_pool, truncate_normalize

__all__ = ["l2_normalize", "mean_pool", "truncate_normalize"]
