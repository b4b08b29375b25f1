"""embed-engine: sentence-transformer models on onnxruntime, with Numba search kernels.

    >>> from engine import Embedder
    >>> emb = Embedder("all-MiniLM-L6-v2")
    >>> emb.encode(["a sentence", "another"]).shape
    (2, 384)

``import engine`` is light: onnxruntime loads when an Embedder is built; torch and optimum only
when a model must be exported.
"""

from __future__ import annotations

import logging

from .errors import (
    EngineError,
    IndexFormatError,
    InputError,
    ModelMismatchError,
    ModelNotFoundError,
    OutputError,
    ProviderError,
    UnsupportedModelError,
    WeightsVerificationError,
)

__all__ = [
    "CorpusSummary",
    "Embedder",
    "EmbeddingCache",
    "EngineError",
    "Index",
    "IndexFormatError",
    "InputError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "OutputError",
    "ProviderError",
    "UnsupportedModelError",
    "WeightsVerificationError",
    "embed_corpus",
    "load_embeddings",
    "quantize_embeddings",
]
__version__ = "0.1.0"

# The library logs through "engine.*" loggers and never configures logging itself (the CLI does).
logging.getLogger(__name__).addHandler(logging.NullHandler())


_LAZY = {
    "Embedder": "embedder",
    "Index": "index",
    "embed_corpus": "corpus",
    "load_embeddings": "corpus",
    "CorpusSummary": "corpus",
    "EmbeddingCache": "corpus.cache",
    "quantize_embeddings": "quantization",
}


def __getattr__(name: str):
    """The public names of ``_LAZY``, imported from their modules on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
