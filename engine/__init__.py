"""embed-engine: sentence-transformer models on onnxruntime, with Numba search kernels.

    >>> from engine import Embedder
    >>> emb = Embedder("all-MiniLM-L6-v2")
    >>> emb.encode(["a sentence", "another"]).shape
    (2, 384)

``import engine`` is light: onnxruntime loads when an Embedder is built; torch and optimum only
when a model must be exported.
"""
from __future__ import annotations

from .errors import (
    EngineError,
    IndexFormatError,
    InputError,
    ModelMismatchError,
    ModelNotFoundError,
    ProviderError,
    WeightsVerificationError,
)

__all__ = [
    "Embedder",
    "Index",
    "EngineError",
    "IndexFormatError",
    "InputError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ProviderError",
    "WeightsVerificationError",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Embedder":
        from .embedder import Embedder

        return Embedder
    if name == "Index":
        from .index import Index

        return Index
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
